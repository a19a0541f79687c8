//! The default compute function, `increase(n) = n + 1`, built as a
//! WebAssembly component for `wasm32-wasip2`.
//!
//! Build with `cargo build -p guest --release --target wasm32-wasip2`; the
//! component lands in `target/wasm32-wasip2/release/guest.wasm` and
//! `scripts/build-modules.sh` copies it to `modules/increase.wasm`.

// The ABI glue that `generate!` and `export!` write is the only unsafe code
// here; the function itself is safe Rust.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../wit",
    world: "compute-function",
});

/// The request body as the decimal text of a 64-bit signed integer,
/// with surrounding whitespace allowed, as the Python examples send it.
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

/// `increase(n) = n + 1` over the wire format: decimal text in, decimal
/// text out.
pub fn increase(request: &[u8]) -> Result<Vec<u8>, Failure> {
    let n = parse_integer(request)?;
    let result = n.checked_add(1).ok_or_else(|| {
        Failure::ComputeFailed(format!("increase({n}) overflows a 64-bit integer"))
    })?;
    Ok(result.to_string().into_bytes())
}

struct Increase;

impl Guest for Increase {
    fn compute(request: Vec<u8>) -> Result<Vec<u8>, Failure> {
        increase(&request)
    }
}

export!(Increase);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str) -> Result<String, Failure> {
        increase(body.as_bytes()).map(|reply| String::from_utf8(reply).unwrap())
    }

    #[test]
    fn adds_one() {
        assert_eq!(run("10").unwrap(), "11");
        assert_eq!(run("-1").unwrap(), "0");
        assert_eq!(run("0").unwrap(), "1");
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
        assert!(matches!(
            increase(&[0xff, 0xfe]),
            Err(Failure::BadRequest(_))
        ));
    }

    #[test]
    fn reports_overflow_as_a_failed_computation() {
        let max = i64::MAX.to_string();
        match run(&max) {
            Err(Failure::ComputeFailed(message)) => assert!(message.contains("overflows")),
            other => panic!("expected an overflow, got {other:?}"),
        }
    }

    #[test]
    fn shortens_long_bodies_in_messages() {
        let long = "y".repeat(1000);
        match run(&long) {
            Err(Failure::BadRequest(message)) => assert!(message.len() < 200),
            other => panic!("expected a bad request, got {other:?}"),
        }
    }
}
