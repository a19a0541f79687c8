//! `increase(n) = n + 1`, the default compute module.

#![cfg_attr(target_arch = "wasm32", no_std)]

guest::integer_function!(Increase, guest::functions::increase);
