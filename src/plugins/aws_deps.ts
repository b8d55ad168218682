import type { AwsSdkDeps, EbsSdk, Ec2Sdk } from "../api/aws.ts";

let ec2: Promise<Ec2Sdk> | undefined;
let ebs: Promise<EbsSdk> | undefined;

/** `api.deps.aws`: the SDK modules, imported lazily (string literals, so bundlers embed them). */
export const awsSdkDeps: AwsSdkDeps = {
  ec2: () => ec2 ??= import("@aws-sdk/client-ec2"),
  ebs: () => ebs ??= import("@aws-sdk/client-ebs"),
};
