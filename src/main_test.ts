import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { main } from "./main.ts";

describe("main()", () => {
  it("main() uses the injected dependencies and resolves to the exit code", async () => {
    let out = "";
    const code = await main(["--verbose", "mount", "v1"], {
      io: { stdout: (t) => void (out += t), stderr: () => {} },
      connect: () => () => Promise.resolve('{\n\t"Name": "v1"\n}'),
    });
    assert.equal(code, 0);
    assert.equal(out, '{\n\t"Name": "v1"\n}\n');
  });
});
