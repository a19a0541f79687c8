//! `triple(n) = 3n`: the README's "write your own compute function".

#![cfg_attr(target_arch = "wasm32", no_std)]

fn triple(n: i64) -> Option<i64> {
    n.checked_mul(3)
}

guest::integer_function!(Triple, triple);
