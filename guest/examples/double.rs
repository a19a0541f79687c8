//! `double(n) = 2n`.

guest::integer_function!(Double, guest::functions::double);
