// `increase(n) = n + 1`, the node's default function, in JavaScript.

import { I64_MAX, applyIntegerFunction, overflow } from "./integers.js";

/** Computes the reply body (a Uint8Array) for one request body. */
export function compute(request) {
  return applyIntegerFunction(request, increase);
}

function increase(n) {
  if (n === I64_MAX) {
    throw overflow("increase", n);
  }
  return n + 1n;
}
