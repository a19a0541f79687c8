//! Compute functions written in Python (`guest-py/`) and JavaScript
//! (`guest-js/`), built by `scripts/build-modules.sh`, served by the same
//! node as the Rust ones.

use compute_host::{CallError, Center, NodeConfig, shared::sandbox::digest};
use std::time::Duration;
use testkit::{
    DirNode, Load, ModuleDir, RunningNode, built_module, center, eventually, test_compile_cache,
    unique_queue,
};

/// Compiling a Python or JavaScript guest takes seconds (the first time
/// in a run; the tests share a compile cache after that).
const LOADED: Duration = Duration::from_secs(120);

/// What a call answered: the reply body, or the error's kind and message.
async fn answer(center: &Center, input: &[u8]) -> Result<String, (String, String)> {
    match center.call(input.to_vec()).await {
        Ok(reply) => Ok(String::from_utf8_lossy(&reply.body).into_owned()),
        Err(CallError::Remote { kind, message, .. }) => Err((kind.to_string(), message)),
        Err(err) => panic!("{err}"),
    }
}

/// `increase` and `reverse` give the same answers, errors word for word
/// included, whether written in Rust, Python or JavaScript; a Python
/// exception and a JavaScript throw reach the caller as `compute-failed`
/// with their message, and the next call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_answers_alike() {
    let functions = [
        "increase",
        "increase-py",
        "increase-js",
        "reverse",
        "reverse-py",
        "reverse-js",
        "divide-py",
        "divide-js",
    ];
    let dir = ModuleDir::empty();
    for name in functions {
        std::fs::copy(built_module(name), dir.join(format!("{name}.wasm"))).unwrap();
    }
    let node = DirNode::start(&dir.path, functions).await;
    assert_eq!(node.serving.len(), functions.len(), "{:?}", node.serving);
    let call = |name: &'static str| {
        let queue = node.queue(name);
        async move { center(&queue, Duration::from_secs(30)).await }
    };

    let increase_inputs: [&[u8]; 8] = [
        b"41",
        b" -7\n",
        b"+12",
        b"9223372036854775806",
        b"9223372036854775807",
        b"",
        b"4\xff",
        b"1_000 or \"x\" \\ and a line long enough to be cut short",
    ];
    let rust = call("increase").await;
    let expected: Vec<_> = {
        let mut answers = Vec::new();
        for input in increase_inputs {
            answers.push(answer(&rust, input).await);
        }
        answers
    };
    // The Rust answers, by value, which the others must match.
    assert_eq!(expected[0], Ok("42".to_owned()));
    assert_eq!(expected[1], Ok("-6".to_owned()));
    assert_eq!(expected[3], Ok("9223372036854775807".to_owned()));
    assert_eq!(
        expected[4],
        Err((
            "compute-failed".to_owned(),
            "increase(9223372036854775807) overflows a 64-bit integer".to_owned()
        ))
    );
    assert!(matches!(&expected[5], Err((kind, _)) if kind == "bad-request"));
    assert!(matches!(&expected[6], Err((kind, _)) if kind == "bad-request"));
    for name in ["increase-py", "increase-js"] {
        let center = call(name).await;
        for (input, expected) in increase_inputs.iter().zip(&expected) {
            assert_eq!(
                &answer(&center, input).await,
                expected,
                "{name}({})",
                String::from_utf8_lossy(input)
            );
        }
    }

    let bytes: &[u8] = b"\x00\x01 not text \xff\xfe";
    let reversed: Vec<u8> = bytes.iter().rev().copied().collect();
    for name in ["reverse", "reverse-py", "reverse-js"] {
        let reply = call(name).await.call(bytes.to_vec()).await.unwrap();
        assert_eq!(reply.body, reversed, "{name}");
        assert_eq!(reply.origin.function.as_deref(), Some(name));
    }

    for (name, exception) in [
        ("divide-py", "ZeroDivisionError: division by zero"),
        ("divide-js", "RangeError: BigInt division by zero"),
    ] {
        let center = call(name).await;
        let Err((kind, message)) = answer(&center, b"0").await else {
            panic!("{name}(0) answered");
        };
        assert_eq!(kind, "compute-failed", "{name}: {message}");
        assert!(message.contains(exception), "{name}: {message}");
        assert_eq!(answer(&center, b"8").await, Ok("125000".to_owned()));
    }
    node.stop().await;
}

fn module_bytes(name: &str) -> Vec<u8> {
    std::fs::read(built_module(name)).unwrap()
}

/// With 32 calls in flight the whole time, the running node's `increase`
/// is swapped from Rust to Python to JavaScript and back to Rust: every
/// call is answered right, by one of the three versions, each of which
/// answers some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increase_is_swapped_between_languages_under_load() {
    let versions = ["increase", "increase-py", "increase-js"].map(module_bytes);
    let digests = versions.each_ref().map(|bytes| digest(bytes));
    let dir = ModuleDir::with_working_copy(&built_module("increase"));
    let node = RunningNode::start_with(NodeConfig {
        compile_cache: Some(test_compile_cache()),
        ..NodeConfig::module(dir.working_copy(), unique_queue("languages-swap"))
    })
    .await;
    let center = center(&node.queue, Duration::from_secs(60)).await;
    let load = Load::steady(&center, 32);

    for version in [1, 2, 0] {
        dir.publish(&versions[version]);
        let what = format!("{} served", digests[version]);
        eventually(&what, LOADED, || async {
            let calls = load.so_far();
            let last = calls.calls.last()?.outcome.as_ref().ok()?;
            (last.origin.module.as_deref() == Some(digests[version].as_str())).then_some(())
        })
        .await;
    }

    let calls = load
        .finish(Duration::from_secs(60))
        .await
        .expect("the calls end");
    let failures = calls.failures(|n, reply| {
        reply.body == (n + 1).to_string().as_bytes()
            && digests
                .iter()
                .any(|digest| reply.origin.module.as_deref() == Some(digest.as_str()))
    });
    assert!(failures.is_empty(), "{failures:#?}");
    for digest in &digests {
        assert!(calls.answered_by(digest) > 0, "{digest} answered none");
    }
    println!(
        "answered: Rust {}, Python {}, JavaScript {}",
        calls.answered_by(&digests[0]),
        calls.answered_by(&digests[1]),
        calls.answered_by(&digests[2])
    );
    node.stop().await;
}
