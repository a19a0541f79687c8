//! The `center` command as a user runs it.

use clap::Parser as _;
use compute_host::cli::{
    center::{self, CenterArgs},
    stats::Stats,
};
use std::time::{Duration, Instant};
use testkit::{RunningNode, amqp_url, declare_queue, delete_queue, increase_module, unique_queue};

/// Runs `center` with `args` and empty stdin; returns what it printed.
async fn run_center(args: &[&str]) -> (anyhow::Result<Stats>, String) {
    run_center_reading(args, b"").await
}

/// Runs `center` with `args` and `stdin`; returns what it printed.
async fn run_center_reading(args: &[&str], stdin: &[u8]) -> (anyhow::Result<Stats>, String) {
    let url = amqp_url();
    let argv = ["center", "--amqp-url", &url]
        .into_iter()
        .chain(args.iter().copied());
    let args = CenterArgs::try_parse_from(argv).expect("valid arguments");
    let mut output = Vec::new();
    let result = center::run(args, stdin, &mut output).await;
    (result, String::from_utf8(output).unwrap())
}

/// `center 10 20 30` prints the three results, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn center_prints_each_result_in_input_order() {
    let node = RunningNode::start(&unique_queue("cli-order")).await;

    let (summary, output) = run_center(&["--queue", &node.queue, "10", "20", "30"]).await;
    assert_eq!(
        output,
        "increase(10) = 11\nincrease(20) = 21\nincrease(30) = 31\n"
    );
    let summary = summary.unwrap();
    assert_eq!((summary.ok(), summary.failed()), (3, 0));

    node.stop().await;
}

/// `center --batch 2` prints exactly what `center` prints, in input order,
/// a failed input on its own line, for a last batch that is not full too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn center_prints_the_same_with_batches() {
    let node = RunningNode::start(&unique_queue("cli-batch")).await;

    let stdin = b"10\nx\n30\n40\n50\n";
    let (single, expected) = run_center_reading(&["--queue", &node.queue], stdin).await;
    let (batched, output) =
        run_center_reading(&["--queue", &node.queue, "--batch", "2"], stdin).await;
    assert_eq!(output, expected);
    assert!(
        output.starts_with("increase(10) = 11\nincrease(x) failed: bad-request: "),
        "{output}"
    );
    assert!(output.ends_with("increase(50) = 51\n"), "{output}");
    let (single, batched) = (single.unwrap(), batched.unwrap());
    assert_eq!((batched.ok(), batched.failed()), (4, 1));
    assert_eq!((single.ok(), single.failed()), (4, 1));

    node.stop().await;
}

/// Inputs from stdin, one per line: blank lines (a trailing one, one of
/// spaces, a Windows line end) are no inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn center_skips_blank_lines_of_stdin() {
    let node = RunningNode::start(&unique_queue("cli-blank")).await;

    let stdin = b"10\n\n   \r\n20\r\n\n";
    let (summary, output) = run_center_reading(&["--queue", &node.queue], stdin).await;
    assert_eq!(output, "increase(10) = 11\nincrease(20) = 21\n");
    assert_eq!(summary.unwrap().count(), 2);

    node.stop().await;
}

/// `--json` prints one object per input, errors included; `--stats` adds
/// one summary object: counts, errors by kind, rate and latencies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn center_json_prints_one_object_per_input() {
    let node = RunningNode::start(&unique_queue("cli-json")).await;

    let (summary, output) =
        run_center(&["--queue", &node.queue, "--json", "--stats", "1", "x"]).await;
    let digest = compute_host::shared::sandbox::digest(&std::fs::read(increase_module()).unwrap());
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines[0],
        format!(r#"{{"input":"1","output":"2","module":"{digest}"}}"#)
    );
    let error = lines[1];
    assert!(
        error.starts_with(r#"{"input":"x","error":"bad-request: "#),
        "{error}"
    );
    assert!(
        error.ends_with(&format!(r#","module":"{digest}"}}"#)),
        "{error}"
    );
    let summary = summary.unwrap();
    assert_eq!((summary.ok(), summary.failed()), (1, 1));

    let stats: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    let stats = stats["stats"].as_object().unwrap();
    let keys: Vec<&str> = stats.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["count", "ok", "errors", "calls_per_s", "p50_ms", "p99_ms"]
    );
    assert_eq!(stats["count"], 2);
    assert_eq!(stats["errors"], serde_json::json!({"bad-request": 1}));
    assert!(stats["p99_ms"].as_f64().unwrap() > 0.0);

    node.stop().await;
}

/// With the queue there but no compute node consuming it, each request
/// times out after `--timeout`, in about that time (they wait in
/// parallel), and the run counts as failed (exit status 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn center_without_a_node_times_out_each_request() {
    let queue = unique_queue("cli-no-node");
    declare_queue(&queue).await;
    let started = Instant::now();
    let (summary, output) = run_center(&["--queue", &queue, "--timeout", "1", "1", "2", "3"]).await;
    let elapsed = started.elapsed();

    assert_eq!(
        output,
        "compute(1) failed: timeout: no reply within 1 s\n\
         compute(2) failed: timeout: no reply within 1 s\n\
         compute(3) failed: timeout: no reply within 1 s\n"
    );
    let summary = summary.unwrap();
    assert_eq!((summary.ok(), summary.failed()), (0, 3));
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "timeouts should run in parallel: {elapsed:?}"
    );
    delete_queue(&queue).await;
}

/// With no queue of that name, each request fails at once with a
/// `no-route` error instead of waiting for its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn center_with_no_such_queue_fails_each_request_at_once() {
    let queue = unique_queue("cli-no-queue");
    let started = Instant::now();
    let (summary, output) = run_center(&["--queue", &queue, "1", "2"]).await;

    let expected = format!(
        "compute(1) failed: no-route: no queue named {queue:?} exists; start a compute node, which declares it\n"
    );
    assert_eq!(
        output,
        expected.clone() + &expected.replace("compute(1)", "compute(2)")
    );
    let summary = summary.unwrap();
    assert_eq!((summary.ok(), summary.failed()), (0, 2));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// An unreachable broker, tried for `--connect-timeout`, is a clear,
/// one-line error, with no password in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn center_explains_an_unreachable_broker() {
    let args = CenterArgs::try_parse_from([
        "center",
        "--amqp-url",
        "amqp://user:hunter2@127.0.0.1:1/%2f",
        "--connect-timeout",
        "0.5",
        "1",
    ])
    .unwrap();
    let err = center::run(args, tokio::io::empty(), Vec::new())
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.starts_with(
            "cannot reach RabbitMQ at amqp://user:***@127.0.0.1:1/%2f: connection refused"
        ),
        "{message}"
    );
    assert!(message.contains("is the broker running?"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}
