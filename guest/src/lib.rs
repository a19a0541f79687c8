//! The compute functions that run in the node's sandbox, and the glue that
//! makes a compute module out of one of them.
//!
//! A module is a few lines in `examples/`: a function over integers is
//! exported with [`integer_function!`]; a function over raw bytes
//! implements [`Guest`] and calls `guest::bindings::export!` itself. Build them all with
//! `scripts/build-modules.sh`, which copies `NAME.wasm` into `modules/`.

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

/// Exports `$function: fn(i64) -> Result<i64, Failure>` as this module's
/// compute function, over the wire format: the decimal text of n in, the
/// decimal text of the result out.
///
/// ```ignore
/// guest::integer_function!(Double, guest::functions::double);
/// ```
#[macro_export]
macro_rules! integer_function {
    ($module:ident, $function:expr) => {
        struct $module;

        impl $crate::Guest for $module {
            fn compute(request: Vec<u8>) -> Result<Vec<u8>, $crate::Failure> {
                $crate::apply_integer_function(&request, $function)
            }
        }

        $crate::bindings::export!($module);
    };
}

/// Runs `function` over a request body holding the decimal text of an
/// integer and returns the decimal text of its result.
pub fn apply_integer_function(
    request: &[u8],
    function: impl FnOnce(i64) -> Result<i64, Failure>,
) -> Result<Vec<u8>, Failure> {
    let n = parse_integer(request)?;
    Ok(function(n)?.to_string().into_bytes())
}

/// The request body as the decimal text of a 64-bit signed integer, with
/// surrounding whitespace allowed, as the Python examples send it.
fn parse_integer(request: &[u8]) -> Result<i64, Failure> {
    let text = std::str::from_utf8(request)
        .map_err(|_| Failure::BadRequest("the request body is not UTF-8 text".into()))?
        .trim();
    if text.is_empty() {
        return Err(Failure::BadRequest(
            "the request body is empty; expected a decimal integer".into(),
        ));
    }
    text.parse().map_err(|_| {
        Failure::BadRequest(format!(
            "expected a decimal integer between {} and {}, got {:?}",
            i64::MIN,
            i64::MAX,
            shorten(text)
        ))
    })
}

/// Keeps an error message readable when the body is large.
fn shorten(text: &str) -> String {
    const LIMIT: usize = 40;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
