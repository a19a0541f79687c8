// `reverse`: the request's bytes, last first.
//
// The bytes contract at its plainest: whatever the request holds (text or
// not), it arrives as a Uint8Array and what is returned is sent back
// unchanged.

/** Computes the reply body for one request body. */
export function compute(request) {
  return request.slice().reverse();
}
