// The JavaScript guests' functions, run by Node.js, without building
// them: `node --test guest-js/` (scripts/test.sh runs it).

import { test } from "node:test";
import assert from "node:assert/strict";
import * as divide from "./divide.js";
import * as increase from "./increase.js";
import * as reverse from "./reverse.js";

const bytes = (text) => new TextEncoder().encode(text);
const text = (body) => new TextDecoder().decode(body);

/** What the function answers: ["ok", text] or [failure case, message]. */
function compute(module, request) {
  try {
    return ["ok", text(module.compute(request))];
  } catch (failure) {
    if (typeof failure?.tag !== "string") throw failure;
    return [failure.tag, failure.val];
  }
}

test("increase answers like the Rust guest", () => {
  assert.deepEqual(compute(increase, bytes("41")), ["ok", "42"]);
  assert.deepEqual(compute(increase, bytes(" -7\n")), ["ok", "-6"]);
  assert.deepEqual(compute(increase, bytes("9223372036854775807")), [
    "compute-failed",
    "increase(9223372036854775807) overflows a 64-bit integer",
  ]);
});

test("bad input is a bad request saying what was expected", () => {
  assert.deepEqual(compute(increase, bytes("")), [
    "bad-request",
    "the request body is empty; expected a decimal integer",
  ]);
  assert.deepEqual(compute(increase, new Uint8Array([0xff])), [
    "bad-request",
    "the request body is not UTF-8 text",
  ]);
  const [kind, message] = compute(increase, bytes('"\x01' + "x".repeat(50)));
  assert.equal(kind, "bad-request");
  assert.ok(message.endsWith('got "\\"\uFFFD' + "x".repeat(38) + '…"'), message);
});

test("reverse gives any bytes back last first", () => {
  const reply = reverse.compute(new Uint8Array([0, 1, 97, 98, 0xff]));
  assert.deepEqual([...reply], [0xff, 98, 97, 1, 0]);
});

test("divide lets an unexpected error escape", () => {
  assert.deepEqual(compute(divide, bytes("8")), ["ok", "125000"]);
  assert.throws(() => divide.compute(bytes("0")), RangeError);
});
