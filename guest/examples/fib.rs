//! `fib(n)`, the RabbitMQ tutorial's Fibonacci.

#![cfg_attr(target_arch = "wasm32", no_std)]

guest::integer_function!(Fib, guest::functions::fib);
