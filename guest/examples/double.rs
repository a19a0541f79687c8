//! `double(n) = 2n`.

#![cfg_attr(target_arch = "wasm32", no_std)]

guest::integer_function!(Double, guest::functions::double);
