"""`divide(n) = 1000000 // n`, which raises ZeroDivisionError for n = 0.

An exception the function lets escape stops the call: the caller gets a
`compute-failed` reply with the exception's type and message, as a Rust
guest's panic does. (Python's `//` rounds down where Rust's `/` rounds
toward zero, so for negative n the two differ by one.)
"""

from integers import apply_integer_function
from wit_world import WitWorld


class WitWorld(WitWorld):
    def compute(self, request: bytes) -> bytes:
        return apply_integer_function(request, lambda n: 1_000_000 // n)
