import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { CommanderError } from "@commander-js/extra-typings";
import { BackendError, ConvoyError, InvalidArgumentError } from "../api/errors.ts";
import { errorLine, exitCodeFor, oneLine, ReportedFailure, UsageError } from "./exit.ts";

describe("exit codes", () => {
  it("exitCodeFor() maps usage errors to 2 and failures to 1", () => {
    assert.equal(exitCodeFor(new CommanderError(1, "commander.unknownOption", "x")), 2);
    assert.equal(exitCodeFor(new CommanderError(0, "commander.helpDisplayed", "x")), 0);
    assert.equal(exitCodeFor(new CommanderError(0, "commander.version", "x")), 0);
    assert.equal(exitCodeFor(new UsageError("x")), 2);
    assert.equal(exitCodeFor(new InvalidArgumentError("Invalid volume name")), 1);
    assert.equal(exitCodeFor(new ConvoyError("Unavailable", "down")), 1);
    assert.equal(exitCodeFor(new ReportedFailure()), 1);
    assert.equal(exitCodeFor(new TypeError("bug")), 1);
    assert.equal(exitCodeFor("thrown string"), 1);
  });

  it("errorLine() prints one convoy: line, nothing for already reported errors", () => {
    assert.equal(errorLine(new BackendError("a\n  b\n")), "convoy: a b");
    assert.equal(errorLine(new UsageError("bad")), "convoy: error: bad");
    assert.equal(errorLine(new CommanderError(1, "commander.error", "x")), undefined);
    assert.equal(errorLine(new ReportedFailure()), undefined);
    assert.equal(oneLine("x\r\ny"), "x y");
  });
});
