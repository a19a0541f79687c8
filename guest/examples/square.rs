//! `square(n) = n²`; overflow is an error.

guest::integer_function!(Square, guest::functions::square);
