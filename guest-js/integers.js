// Functions over integers, as guest/src/lib.rs has them for Rust: the
// request is the decimal text of a 64-bit integer, the reply the decimal
// text of the result.
//
// The replies are the Rust guests' replies, errors included, so a caller
// cannot tell which language answered but by the reply's digest.

const I64_MIN = -(2n ** 63n);
export const I64_MAX = 2n ** 63n - 1n;

/** Runs `fn` (BigInt to BigInt) over the integer in `request`; the reply is its result. */
export function applyIntegerFunction(request, fn) {
  const n = fn(parseInteger(request));
  if (n < I64_MIN || n > I64_MAX) {
    throw computeFailed("the result does not fit in a 64-bit integer");
  }
  return new TextEncoder().encode(n.toString());
}

/** The failure of `fn(n)` whose result does not fit in 64 bits. */
export function overflow(fn, n) {
  return computeFailed(`${fn}(${n}) overflows a 64-bit integer`);
}

/** The request as a 64-bit BigInt, or a bad-request saying what was expected. */
export function parseInteger(request) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(request).trim();
  } catch {
    throw badRequest("the request body is not UTF-8 text");
  }
  if (text === "") {
    throw badRequest("the request body is empty; expected a decimal integer");
  }
  if (/^[+-]?[0-9]+$/.test(text)) {
    const n = BigInt(text);
    if (I64_MIN <= n && n <= I64_MAX) {
      return n;
    }
  }
  throw badRequest(
    `expected a decimal integer between ${I64_MIN} and ${I64_MAX}, got ${quoted(text)}`,
  );
}

/** `text` in double quotes, escaped, and cut short when long. */
function quoted(text, limit = 40) {
  const chars = [...text];
  const shown = chars
    .slice(0, limit)
    .map((c) => (c === '"' || c === "\\" ? "\\" + c : isControl(c) ? "\uFFFD" : c))
    .join("");
  return `"${shown}${chars.length > limit ? "…" : ""}"`;
}

/** Unicode's control characters (category Cc), as Rust's `char::is_control`. */
function isControl(c) {
  const code = c.codePointAt(0);
  return code < 0x20 || (code >= 0x7f && code < 0xa0);
}

// The contract's `failure` cases: thrown, they become the `err` of
// `compute`'s result.
export const badRequest = (message) => ({ tag: "bad-request", val: message });
export const computeFailed = (message) => ({ tag: "compute-failed", val: message });
