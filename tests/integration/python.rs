//! The classic Python `pika` examples from the seed article talk to our
//! node and our center unchanged.

use clap::Parser as _;
use compute_host::cli::center::{self, CenterArgs};
use std::{process::Stdio, time::Duration};
use testkit::{
    RunningNode, amqp_url, delete_queue, python, python_command, python_output, unique_queue,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// The seed's Python center gets its answers from our node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_center_calls_our_node() {
    let node = RunningNode::start(&unique_queue("py-center")).await;

    let output = python_output(
        python("seed_center.py").args([&node.queue, "10", "20", "30"]),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(output, "11\n21\n31\n");

    node.stop().await;
}

/// Our center gets its answers from the seed's Python compute node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_center_calls_the_python_node() {
    let queue = unique_queue("py-node");
    let mut node = python("seed_compute.py")
        .args([&queue, &amqp_url()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with pika runs (see scripts/ensure-pika.sh)");
    let mut ready = BufReader::new(node.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), ready.next_line()).await;
    assert!(
        matches!(first, Ok(Ok(Some(ref line))) if line == "ready"),
        "{first:?}"
    );

    let url = amqp_url();
    let args = CenterArgs::try_parse_from([
        "center",
        "--amqp-url",
        &url,
        "--queue",
        &queue,
        "10",
        "20",
        "30",
    ])
    .unwrap();
    let mut output = Vec::new();
    let summary = center::run(args, tokio::io::empty(), &mut output)
        .await
        .unwrap();
    // The Python node sends no `x-function` header, so the center names
    // the function generically.
    assert_eq!(
        String::from_utf8(output).unwrap(),
        "compute(10) = 11\ncompute(20) = 21\ncompute(30) = 31\n"
    );
    assert_eq!((summary.ok(), summary.failed()), (3, 0));

    node.kill().await.unwrap();
    delete_queue(&queue).await;
}

/// The Python client in the README, run as it is printed there (with the
/// test's queue), gets its answer from our node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_client_calls_our_node() {
    let node = RunningNode::start(&unique_queue("py-readme")).await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = readme
        .split("<!-- python-client")
        .nth(1)
        .and_then(|rest| rest.split("```python\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the README has the Python client block");
    let script = block.replace("\"compute_queue\"", &format!("{:?}", node.queue));

    let output = python_output(
        python_command().args(["-c", &script]),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(output, "42\n");
    node.stop().await;
}
