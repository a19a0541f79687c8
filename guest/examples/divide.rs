//! `divide(n) = 1000000 / n`: integer division, which panics for n = 0.
//! The panic's message reaches the caller in a `compute-failed` reply.

#![cfg_attr(target_arch = "wasm32", no_std)]

guest::integer_function!(Divide, |n: i64| 1_000_000 / n);
