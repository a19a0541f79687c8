//! `square(n) = n²`; overflow is an error.

#![cfg_attr(target_arch = "wasm32", no_std)]

guest::integer_function!(Square, guest::functions::square);
