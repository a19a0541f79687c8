//! The classic Python `pika` examples from the seed article talk to our
//! node and our center unchanged.

use clap::Parser as _;
use compute_host::cli::center::{self, CenterArgs};
use std::{process::Stdio, time::Duration};
use testkit::{
    QueueGuard, RunningNode, ServerProcess, amqp_url, delete_queue, increase_module, python,
    python_command, python_output, refuses_transient_queues, unique_queue,
};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::Child,
};

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
    let mut node = python_node(&queue).await;

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

/// A Python node and ours serve one queue side by side, whichever of the
/// two declares it first. Ours takes the queue the Python node declared
/// as it is. When ours comes first, the Python node's declaration must
/// match it: where the broker permits the Python examples' transient
/// queue (RabbitMQ 3.x), ours declares that with `--queue-type
/// transient`; where it does not (4.3 and later), the Python line says
/// `durable=True`, as our default does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_node_and_ours_share_a_queue_whichever_declares_it_first() {
    let refuses_transient = refuses_transient_queues().await;
    let ours_args: &[&str] = if refuses_transient {
        &[]
    } else {
        &["--queue-type", "transient"]
    };
    for python_first in [true, false] {
        let queue = unique_queue("py-share");
        let _deleted_however_this_ends = QueueGuard::new([queue.clone()]);
        let (mut python, ours) = if python_first {
            let python = python_node(&queue).await;
            let ours = ServerProcess::node(&queue, &increase_module(), &[]).await;
            (python, ours)
        } else {
            let ours = ServerProcess::node(&queue, &increase_module(), ours_args).await;
            (python_node(&queue).await, ours)
        };

        // Calls in flight at once, so that both nodes take some: the
        // Python one computes one at a time, and RabbitMQ hands the
        // requests to its consumers in turn.
        let center = testkit::center(&queue, Duration::from_secs(30)).await;
        let calls = (0..40).map(|n| {
            let center = &center;
            async move { (n, center.call(n.to_string()).await) }
        });
        let mut by_python = 0;
        let mut by_ours = 0;
        for (n, reply) in futures_util::future::join_all(calls).await {
            let reply = reply.unwrap_or_else(|err| panic!("call {n}: {err}"));
            assert_eq!(reply.body, (n + 1).to_string().into_bytes());
            // Our node names its function; the Python one names nothing.
            match reply.origin.function {
                Some(_) => by_ours += 1,
                None => by_python += 1,
            }
        }
        assert!(
            by_python > 0 && by_ours > 0,
            "python first: {python_first}; answered by Python {by_python}, by ours {by_ours}"
        );
        center.close().await;
        python.kill().await.unwrap();
        drop(ours);
    }
}

/// Starts the seed's Python compute node on `queue` and waits until it
/// consumes. Its queue is declared as the seed declares it, or, where the
/// broker refuses that (RabbitMQ 4.3 and later), with the one change the
/// book gives (its chapter "Clusters, queues and broker versions"): `durable=True`.
async fn python_node(queue: &str) -> Child {
    let mut command = python("seed_compute.py");
    command.args([queue, &amqp_url()]);
    if refuses_transient_queues().await {
        command.arg("--durable");
    }
    let mut node = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with pika runs (see scripts/ensure-pika.sh)");
    let mut ready = BufReader::new(node.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), ready.next_line()).await;
    assert!(
        matches!(first, Ok(Ok(Some(ref line))) if line == "ready"),
        "{first:?}"
    );
    node
}

/// The Python client of the book's wire format chapter, run as it is
/// printed there (with the test's queue and broker), gets its answer from
/// our node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_book_s_python_client_calls_our_node() {
    let node = RunningNode::start(&unique_queue("py-book")).await;
    let chapter = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/src/wire-format.md"
    ))
    .unwrap();
    let block = chapter
        .split("<!-- python-client")
        .nth(1)
        .and_then(|rest| rest.split("```python\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the wire format chapter has the Python client block");
    let script = block
        .replace("\"compute_queue\"", &format!("{:?}", node.queue))
        .replace(
            "pika.ConnectionParameters(\"127.0.0.1\")",
            &format!("pika.URLParameters({:?})", amqp_url()),
        );
    assert!(script.contains("URLParameters"), "{script}");

    let output = python_output(
        python_command().args(["-c", &script]),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(output, "42\n");
    node.stop().await;
}
