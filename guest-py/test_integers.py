"""The Python guests' functions, run by CPython, without building them.

`scripts/test.sh` runs these with the bindings componentize-py generates
for wit/compute.wit on the path: `python -m unittest discover guest-py`.
"""

import unittest

from componentize_py_types import Err
from wit_world import Failure_BadRequest, Failure_ComputeFailed

import divide
import increase
import reverse


def compute(module, request: bytes):
    """What the function answers: ("ok", body) or (failure case, message)."""
    try:
        return ("ok", module.WitWorld().compute(request))
    except Err as err:
        return (type(err.value).__name__, err.value.value)


class IncreaseTest(unittest.TestCase):
    def test_answers_like_the_rust_guest(self):
        self.assertEqual(compute(increase, b"41"), ("ok", b"42"))
        self.assertEqual(compute(increase, b" -7\n"), ("ok", b"-6"))
        self.assertEqual(
            compute(increase, b"9223372036854775807"),
            (Failure_ComputeFailed.__name__, "increase(9223372036854775807) overflows a 64-bit integer"),
        )

    def test_bad_input_is_a_bad_request_saying_what_was_expected(self):
        self.assertEqual(
            compute(increase, b""),
            (Failure_BadRequest.__name__, "the request body is empty; expected a decimal integer"),
        )
        self.assertEqual(
            compute(increase, b"\xff"),
            (Failure_BadRequest.__name__, "the request body is not UTF-8 text"),
        )
        kind, message = compute(increase, b"1_000")
        self.assertEqual(kind, Failure_BadRequest.__name__)
        self.assertTrue(message.endswith('got "1_000"'), message)
        kind, message = compute(increase, b'"\x01' + b"x" * 50)
        self.assertTrue(message.endswith('got "\\"\ufffd' + "x" * 38 + '…"'), message)


class ReverseTest(unittest.TestCase):
    def test_any_bytes_come_back_last_first(self):
        self.assertEqual(compute(reverse, b"\x00\x01ab\xff"), ("ok", b"\xffba\x01\x00"))


class DivideTest(unittest.TestCase):
    def test_an_unexpected_exception_escapes(self):
        self.assertEqual(compute(divide, b"8"), ("ok", b"125000"))
        with self.assertRaises(ZeroDivisionError):
            divide.WitWorld().compute(b"0")


if __name__ == "__main__":
    unittest.main()
