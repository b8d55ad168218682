import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { optionSchemas } from "./option_schemas.ts";

describe("option schemas", () => {
  it("the request schemas parse Convoy's option strings and keep keys they do not name", () => {
    const { createVolume, deleteVolume, backup } = optionSchemas;
    assert.deepEqual(createVolume.parse({ Size: "10M", BackupURL: "vfs:///b", Other: "x" }), {
      Size: 10 * 1024 * 1024,
      BackupURL: "vfs:///b",
      Other: "x",
    });
    assert.equal(createVolume.safeParse({ Size: "ten" }).success, false);
    assert.deepEqual(deleteVolume.parse({ ReferenceOnly: "" }), { ReferenceOnly: false });
    assert.deepEqual(deleteVolume.parse({ ReferenceOnly: "true" }), { ReferenceOnly: true });
    assert.equal(deleteVolume.safeParse({ ReferenceOnly: "maybe" }).success, false);
    assert.deepEqual(backup.parse({ EndpointURL: "http://s3", Compression: "gzip" }), {
      EndpointURL: "http://s3",
      Compression: "gzip",
    });
  });
});
