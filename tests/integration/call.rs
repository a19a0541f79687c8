//! `compute call`: trying a module with no broker, in the node's sandbox.

use std::time::Duration;
use testkit::{built_module, compute_command, run_to_end};

/// Runs `compute call ARGS...`; its exit code and stdout.
async fn call(args: &[&str]) -> (Option<i32>, String) {
    let output = run_to_end(
        compute_command().arg("call").args(args),
        Duration::from_secs(30),
    )
    .await;
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// A Rust guest that panics (`divide` by zero) fails its own input with
/// `compute-failed` and the panic's message and place, not a bare trap;
/// the next input is answered.
#[tokio::test]
async fn a_panic_reaches_the_caller_with_its_message() {
    let divide = built_module("divide");
    let (code, output) = call(&["--module", divide.to_str().unwrap(), "0", "4"]).await;
    assert_eq!(code, Some(1), "{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert!(
        lines[0].starts_with("divide(0) failed: compute-failed: the compute function crashed: panicked at guest/examples/divide.rs:"),
        "{output}"
    );
    assert!(
        lines[0].contains(": attempt to divide by zero (wasm trap:"),
        "{output}"
    );
    assert_eq!(lines[1], "divide(4) = 250000", "{output}");
}

/// Each input gets the line a center would print, in order, an error
/// reply's kind and message included; any failure makes the exit status 1.
#[tokio::test]
async fn a_module_is_tried_without_a_broker() {
    let square = built_module("square");
    let square = square.to_str().unwrap();
    let (code, output) = call(&["--module", square, "7", "-3", "x"]).await;
    assert_eq!(code, Some(1), "{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[..2], ["square(7) = 49", "square(-3) = 9"], "{output}");
    assert!(
        lines[2].starts_with("square(x) failed: bad-request: expected a decimal integer"),
        "{output}"
    );

    let (code, output) = call(&["--module", square, "--json", "4"]).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.starts_with(r#"{"input":"4","output":"16","module":"sha256:"#),
        "{output}"
    );
}

/// A file that is not a usable module is one line and exit status 2.
#[tokio::test]
async fn an_unusable_module_is_refused() {
    let (code, output) = call(&["--module", "/dev/null", "1"]).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(output.is_empty(), "{output}");
}
