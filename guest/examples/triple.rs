//! `triple(n) = 3n`: the book's "Write your own compute function" (docs/src/guests.md).

#![cfg_attr(target_arch = "wasm32", no_std)]

fn triple(n: i64) -> Option<i64> {
    n.checked_mul(3)
}

guest::integer_function!(Triple, triple);
