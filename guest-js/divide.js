// `divide(n) = 1000000 / n`, which throws a RangeError for n = 0.
//
// An error the function lets escape stops the call: the caller gets a
// `compute-failed` reply with the error's message, as a Rust guest's
// panic does.

import { applyIntegerFunction } from "./integers.js";

/** Computes the reply body (a Uint8Array) for one request body. */
export function compute(request) {
  return applyIntegerFunction(request, (n) => 1000000n / n);
}
