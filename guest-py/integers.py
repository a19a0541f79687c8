"""Functions over integers, as guest/src/lib.rs has them for Rust: the
request is the decimal text of a 64-bit integer, the reply the decimal
text of the result.

The replies are the Rust guests' replies, errors included, so a caller
cannot tell which language answered but by the reply's digest.
"""

from typing import Callable

from componentize_py_types import Err
from wit_world import Failure_BadRequest, Failure_ComputeFailed

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def apply_integer_function(request: bytes, function: Callable[[int], int]) -> bytes:
    """Runs `function` over the integer in `request`; the reply is its result."""
    n = function(parse_integer(request))
    if not I64_MIN <= n <= I64_MAX:
        raise Err(Failure_ComputeFailed("the result does not fit in a 64-bit integer"))
    return str(n).encode()


def overflow(function: str, n: int) -> Err:
    """The failure of `function(n)` whose result does not fit in 64 bits."""
    return Err(Failure_ComputeFailed(f"{function}({n}) overflows a 64-bit integer"))


def parse_integer(request: bytes) -> int:
    """The request as a 64-bit integer, or a bad-request saying what was expected."""
    try:
        text = request.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Err(Failure_BadRequest("the request body is not UTF-8 text"))
    if not text:
        raise Err(Failure_BadRequest("the request body is empty; expected a decimal integer"))
    digits = text[1:] if text[0] in "+-" else text
    # int() alone would also take "1_000" and digits of other scripts.
    if digits and all("0" <= c <= "9" for c in digits):
        n = int(text)
        if I64_MIN <= n <= I64_MAX:
            return n
    raise Err(
        Failure_BadRequest(
            f"expected a decimal integer between {I64_MIN} and {I64_MAX}, got {quoted(text)}"
        )
    )


def quoted(text: str, limit: int = 40) -> str:
    """`text` in double quotes, escaped, and cut short when long."""
    shown = "".join(
        "\\" + c if c in '"\\' else "\N{REPLACEMENT CHARACTER}" if is_control(c) else c
        for c in text[:limit]
    )
    return f'"{shown}{"…" if len(text) > limit else ""}"'


def is_control(c: str) -> bool:
    """Unicode's control characters (category Cc), as Rust's `char::is_control`."""
    return ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0
