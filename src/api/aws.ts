/**
 * The AWS SDK as plugins reach it: the host imports the SDK's modules on first use and hands them
 * over, so a plugin that only imports types (mod.ts) still makes fully typed SDK calls, and the
 * SDK is loaded only by daemons that use it.
 * @module
 */

/** The `@aws-sdk/client-ec2` module. */
export type Ec2Sdk = typeof import("@aws-sdk/client-ec2");
/** The `@aws-sdk/client-ebs` module (EBS direct APIs). */
export type EbsSdk = typeof import("@aws-sdk/client-ebs");

/** `api.deps.aws`: SDK modules, imported by the host on the first call, then cached. */
export interface AwsSdkDeps {
  ec2(): Promise<Ec2Sdk>;
  ebs(): Promise<EbsSdk>;
}
