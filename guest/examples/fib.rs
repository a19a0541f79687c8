//! `fib(n)`, the RabbitMQ tutorial's Fibonacci.

guest::integer_function!(Fib, guest::functions::fib);
