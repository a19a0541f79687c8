//! `increase(n) = n + 1`, the default compute module.

guest::integer_function!(Increase, guest::functions::increase);
