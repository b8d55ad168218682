import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { rubyDate } from "./time.ts";

describe("time", () => {
  it("rubyDate() formats Go's RubyDate, in UTC with opts.utc and in local time without", () => {
    const at = new Date(Date.UTC(2006, 0, 2, 22, 4, 5));
    assert.equal(rubyDate(at, { utc: true }), "Mon Jan 02 22:04:05 +0000 2006");
    const local = rubyDate(at);
    assert.match(
      local,
      /^(Sun|Mon|Tue|Wed|Thu|Fri|Sat) [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d [+-]\d{4} \d{4}$/,
    );
    // The local form names its offset: parsing it back gives the same instant.
    const [, mon, day, time, off, year] = local.split(" ");
    assert.equal(Date.parse(`${day} ${mon} ${year} ${time} GMT${off}`), at.getTime());
  });
});
