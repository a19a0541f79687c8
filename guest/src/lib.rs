//! The compute functions that run in the node's sandbox, and the glue that
//! makes a compute module out of one of them.
//!
//! A module is a few lines in `examples/`: a function over integers is
//! exported with [`integer_function!`]; a function over raw bytes
//! implements [`Guest`] and calls `guest::bindings::export!` itself. Build them all with
//! `scripts/build-modules.sh`, which copies `NAME.wasm` into `modules/`.
//!
//! The library is `no_std` (with `alloc`), and so is each module when built
//! for WebAssembly (`#![cfg_attr(target_arch = "wasm32", no_std)]`): a
//! module then carries no standard library panic and I/O machinery, is
//! about a quarter of the size, compiles that much faster at a live swap,
//! and imports nothing from the host but the contract's `panicked`. A
//! panic tells the host its message through it, then traps, and the node
//! answers `compute-failed` with that message.

#![no_std]

extern crate alloc;
#[doc(hidden)]
pub extern crate alloc as __alloc;
#[cfg(test)]
extern crate std;

use alloc::{string::String, vec::Vec};

#[cfg(all(target_arch = "wasm32", not(test)))]
mod bump;

#[cfg(all(target_arch = "wasm32", not(test)))]
#[global_allocator]
static ALLOCATOR: bump::BumpAllocator = bump::BumpAllocator::new();

/// Tells the host why, then traps: the caller's `compute-failed` reply
/// then says `panicked at examples/divide.rs:9:47: attempt to divide by
/// zero` rather than only that the module trapped. A panic while telling
/// (say, no memory left to format the message) just traps.
#[cfg(all(target_arch = "wasm32", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::sync::atomic::{AtomicBool, Ordering};
    static PANICKING: AtomicBool = AtomicBool::new(false);
    if !PANICKING.swap(true, Ordering::Relaxed) {
        let message = match info.location() {
            Some(at) => alloc::format!(
                "panicked at {}:{}:{}: {}",
                at.file(),
                at.line(),
                at.column(),
                info.message()
            ),
            None => alloc::format!("panicked: {}", info.message()),
        };
        bindings::panicked(&message);
    }
    core::arch::wasm32::unreachable()
}

/// The canonical ABI's allocator, through which the host passes the
/// request into the module. On `wasm32-wasip2` std would provide it;
/// without std the module must.
#[cfg(all(target_arch = "wasm32", not(test)))]
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(
    old: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI passes a power-of-two `align` and, for a
    // reallocation, the pointer, size and alignment of an earlier
    // allocation from this function.
    let pointer = unsafe {
        if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(
                old,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if pointer.is_null() {
        core::arch::wasm32::unreachable();
    }
    pointer
}

/// The bindings of `wit/compute.wit`. Their `export!` macro is public (at
/// the crate root) so each module in `examples/` can export its function.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "compute-function",
        pub_export_macro: true,
        default_bindings_module: "guest::bindings",
    });
}

pub use bindings::{Failure, Guest};

pub mod functions;

/// Exports `$function` as this module's compute function, over the wire
/// format: the decimal text of n in, the decimal text of the result out.
/// The function takes an `i64` and returns an `i64`, an `Option<i64>`
/// (`None`, an overflow, is a `compute-failed` reply) or a
/// `Result<i64, Failure>`; see [`IntegerResult`].
///
/// ```ignore
/// guest::integer_function!(Triple, |n: i64| n.checked_mul(3));
/// ```
#[macro_export]
macro_rules! integer_function {
    ($module:ident, $function:expr) => {
        struct $module;

        impl $crate::Guest for $module {
            fn compute(
                request: $crate::__alloc::vec::Vec<u8>,
            ) -> Result<$crate::__alloc::vec::Vec<u8>, $crate::Failure> {
                $crate::apply_integer_function(&request, $function)
            }
        }

        $crate::bindings::export!($module);
    };
}

/// Runs `function` over a request body holding the decimal text of an
/// integer and returns the decimal text of its result.
pub fn apply_integer_function<R: IntegerResult>(
    request: &[u8],
    function: impl FnOnce(i64) -> R,
) -> Result<Vec<u8>, Failure> {
    let n = parse_integer(request)?;
    Ok(decimal(function(n).into_result()?).into_bytes())
}

/// What a function over integers may return.
pub trait IntegerResult {
    /// The result, or the failure the caller gets.
    fn into_result(self) -> Result<i64, Failure>;
}

/// A result that always fits.
impl IntegerResult for i64 {
    fn into_result(self) -> Result<i64, Failure> {
        Ok(self)
    }
}

/// `None` means the result does not fit in 64 bits, as from `checked_*`.
impl IntegerResult for Option<i64> {
    fn into_result(self) -> Result<i64, Failure> {
        self.ok_or_else(|| {
            Failure::ComputeFailed("the result does not fit in a 64-bit integer".into())
        })
    }
}

/// The function says itself what went wrong.
impl IntegerResult for Result<i64, Failure> {
    fn into_result(self) -> Result<i64, Failure> {
        self
    }
}

/// The decimal text of `n`.
///
/// Written out rather than `n.to_string()`: `core::fmt` would more than
/// triple the size of a module, and the node's compile time (and so the
/// time a live swap takes) grows with the size.
pub fn decimal(n: i64) -> String {
    let mut digits = Vec::with_capacity(20);
    let mut rest = n.unsigned_abs();
    loop {
        digits.push(b'0' + (rest % 10) as u8);
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// The request body as the decimal text of a 64-bit signed integer, with
/// surrounding whitespace allowed, as the Python examples send it.
fn parse_integer(request: &[u8]) -> Result<i64, Failure> {
    let text = core::str::from_utf8(request)
        .map_err(|_| Failure::BadRequest("the request body is not UTF-8 text".into()))?
        .trim();
    if text.is_empty() {
        return Err(Failure::BadRequest(
            "the request body is empty; expected a decimal integer".into(),
        ));
    }
    text.parse().map_err(|_| {
        let expected = [
            "expected a decimal integer between ",
            &decimal(i64::MIN),
            " and ",
            &decimal(i64::MAX),
            ", got ",
            &quoted(text),
        ];
        Failure::BadRequest(expected.concat())
    })
}

/// `text` in double quotes, escaped, and cut short when long, so an error
/// message stays readable whatever the body holds.
fn quoted(text: &str) -> String {
    const LIMIT: usize = 40;
    let mut quoted = String::from('"');
    for (index, character) in text.chars().enumerate() {
        if index == LIMIT {
            quoted.push('…');
            break;
        }
        match character {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(character);
            }
            character if character.is_control() => quoted.push(char::REPLACEMENT_CHARACTER),
            character => quoted.push(character),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn run(body: &str) -> Result<String, Failure> {
        apply_integer_function(body.as_bytes(), functions::increase)
            .map(|reply| String::from_utf8(reply).unwrap())
    }

    #[test]
    fn reads_and_writes_decimal_text() {
        assert_eq!(run("10").unwrap(), "11");
        assert_eq!(run("-1").unwrap(), "0");
    }

    #[test]
    fn writes_decimals_like_to_string() {
        for n in [0, 7, -7, 10, 1_000_000, i64::MAX, i64::MIN, i64::MIN + 1] {
            assert_eq!(decimal(n), n.to_string());
        }
    }

    #[test]
    fn functions_may_return_a_plain_or_checked_integer() {
        let triple = |n: i64| n.checked_mul(3);
        assert_eq!(apply_integer_function(b"5", triple).unwrap(), b"15");
        assert!(matches!(
            apply_integer_function(b"9223372036854775807", triple),
            Err(Failure::ComputeFailed(_))
        ));
        assert_eq!(apply_integer_function(b"5", |n: i64| n - 1).unwrap(), b"4");
    }

    #[test]
    fn allows_surrounding_whitespace() {
        assert_eq!(run("  41\n").unwrap(), "42");
    }

    #[test]
    fn rejects_text_that_is_not_an_integer() {
        for body in ["x", "1.5", "1 2", "0x10", ""] {
            assert!(
                matches!(run(body), Err(Failure::BadRequest(_))),
                "{body:?} should be a bad request"
            );
        }
    }

    #[test]
    fn quotes_the_bad_input_in_the_message() {
        match run("say \"hi\"") {
            Err(Failure::BadRequest(message)) => assert_eq!(
                message,
                r#"expected a decimal integer between -9223372036854775808 and 9223372036854775807, got "say \"hi\"""#
            ),
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bodies_that_are_not_utf8() {
        let result = apply_integer_function(&[0xff, 0xfe], functions::increase);
        assert!(matches!(result, Err(Failure::BadRequest(_))));
    }

    #[test]
    fn shortens_long_bodies_in_messages() {
        match run(&"y".repeat(1000)) {
            Err(Failure::BadRequest(message)) => assert!(message.len() < 200),
            other => panic!("expected a bad request, got {other:?}"),
        }
    }
}
