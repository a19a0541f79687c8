"""`increase(n) = n + 1`, the node's default function, in Python."""

from integers import I64_MAX, apply_integer_function, overflow
from wit_world import WitWorld


class WitWorld(WitWorld):
    def compute(self, request: bytes) -> bytes:
        return apply_integer_function(request, increase)


def increase(n: int) -> int:
    if n == I64_MAX:
        raise overflow("increase", n)
    return n + 1
