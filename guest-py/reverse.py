"""`reverse`: the request's bytes, last first.

The bytes contract at its plainest: whatever the request holds (text or
not), it arrives as `bytes` and what is returned is sent back unchanged.
"""

from wit_world import WitWorld


class WitWorld(WitWorld):
    def compute(self, request: bytes) -> bytes:
        return request[::-1]
