/** Backups to a real S3-compatible server on 127.0.0.1 (fauxqs), through the daemon and CLI. */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { convoy, ok, startDaemon, tempDir, type TestDaemon } from "./helpers.ts";
import { s3TestEndpoint, type S3TestTarget } from "./s3_helper.ts";

describe("backups to s3:// (local S3 server)", () => {
  let s3: S3TestTarget;
  let d: TestDaemon;
  let dir: string;
  let cleanup: () => Promise<void>;

  before(async () => {
    s3 = await s3TestEndpoint({ prefix: "convoy-cli" });
    ({ dir, cleanup } = await tempDir());
    d = await startDaemon({
      root: join(dir, "root"),
      env: {
        AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? "convoy",
        AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? "convoy-secret",
        AWS_EC2_METADATA_DISABLED: "true",
      },
    });
  });
  after(async () => {
    await d?.stop();
    await cleanup?.();
    await s3?.close();
  });

  it("backs a vfs volume up to s3://, lists, inspects, restores and deletes it, leaving the bucket empty", async () => {
    const socket = d.socket;
    await ok(["create", "s3vol"], { socket });
    const mp = await ok(["mount", "s3vol"], { socket });
    await writeFile(join(mp, "data.txt"), "to the cloud\n");
    await ok(["snapshot", "create", "s3vol", "--name", "s3snap"], { socket });
    const dest = `s3://${s3.bucket}@us-east-1/convoy/backups`;
    const url = await ok([
      "backup",
      "--s3-endpoint",
      s3.endpoint,
      "create",
      "s3snap",
      "--dest",
      dest,
    ], { socket });
    assert.match(
      url,
      new RegExp(
        `^s3://${s3.bucket}@us-east-1/convoy/backups\\?backup=backup-[0-9a-f]+&volume=s3vol$`,
      ),
    );

    const env = { CONVOY_S3_ENDPOINT: s3.endpoint };
    const list = JSON.parse(await ok(["backup", "list", dest], { socket, env }));
    assert.deepEqual(Object.keys(list), [url]);
    assert.equal(list[url].DriverName, "vfs");
    const info = JSON.parse(await ok(["backup", "inspect", url], { socket, env }));
    assert.equal(info.SnapshotName, "s3snap");

    await ok(["create", "s3restored", "--backup", url, "--s3-endpoint", s3.endpoint], { socket });
    assert.equal(
      await readFile(join(await ok(["mount", "s3restored"], { socket }), "data.txt"), "utf8"),
      "to the cloud\n",
    );

    const wrong = await convoy(["backup", "list", `s3://no-such-bucket-xyz@us-east-1/x`], {
      socket,
      env,
    });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /bucket "no-such-bucket-xyz" does not exist/);

    await ok(["backup", "delete", url], { socket, env });
    const left = await s3.client.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
    assert.deepEqual((left.Contents ?? []).map((o) => o.Key), []);
    await ok(["umount", "s3vol"], { socket });
    await ok(["umount", "s3restored"], { socket });
  });
});
