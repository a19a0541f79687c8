//! Failover on a RabbitMQ cluster: the local three-node cluster of
//! `scripts/cluster.sh`, quorum queues, and broker nodes stopped while
//! calls run. `#[ignore]`d, since they need that cluster and stop its
//! nodes; `scripts/test.sh` starts the cluster and runs them on their own:
//! `cargo test -p integration --test cluster -- --ignored --test-threads 1`.

use compute_host::{Center, CenterOptions};
use std::{
    process::Command,
    time::{Duration, Instant},
};
use testkit::{Load, ServerProcess, Tally, compute_command, increase_module};

/// Calls that end before the strike, and again after it
/// (`Load::steady_across`).
const CALLS_EACH_SIDE: usize = 1000;
const IN_FLIGHT: usize = 128;

/// The cluster's nodes, as `scripts/cluster.sh status` lists them: name
/// and AMQP URL.
fn cluster() -> Vec<(String, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster.sh");
    let status = Command::new(script).arg("status").output().unwrap();
    let nodes: Vec<(String, String)> = String::from_utf8_lossy(&status.stdout)
        .lines()
        .filter_map(|line| {
            let (name, url) = line.split_once(' ')?;
            Some((name.to_owned(), url.to_owned()))
        })
        .collect();
    assert_eq!(
        nodes.len(),
        3,
        "the cluster is not running: scripts/cluster.sh start"
    );
    nodes
}

/// `rabbitmqctl -n NODE ARGS...`; its output.
fn rabbitmqctl(node: &str, args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(["-q", "-n", node])
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The broker node that leads quorum queue `queue`.
fn leader(any_node: &str, queue: &str) -> String {
    rabbitmqctl(any_node, &["list_queues", "name", "leader"])
        .lines()
        .find_map(|line| {
            let (name, leader) = line.split_once('\t')?;
            (name == queue).then(|| leader.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no queue {queue} in the cluster"))
}

/// Stops a broker node's RabbitMQ application while in scope, and starts
/// it again when dropped, also when the test fails.
struct StoppedBroker(String);

impl StoppedBroker {
    fn stop(node: &str) -> Self {
        rabbitmqctl(node, &["stop_app"]);
        StoppedBroker(node.to_owned())
    }
}

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        rabbitmqctl(&self.0, &["start_app"]);
    }
}

/// A node on `urls` serving increase on quorum queue `queue`.
async fn node(queue: &str, urls: &[&str]) -> ServerProcess {
    let mut command = compute_command();
    command.args(["--queue", queue, "--queue-type", "quorum"]);
    for url in urls {
        command.args(["--amqp-url", url]);
    }
    command.arg("--module").arg(increase_module());
    ServerProcess::compute(&mut command).await
}

/// Calls through a center on `url`, with `strike` done mid-way; how
/// every call ended.
async fn load_with(url: &str, queue: &str, strike: impl FnOnce() -> StoppedBroker) -> Tally {
    let options = CenterOptions {
        queue: queue.to_owned(),
        timeout: Duration::from_secs(60),
        persistent: true,
        ..CenterOptions::default()
    };
    let center = Center::connect_with(url, options).await.unwrap();
    let started = Instant::now();
    let strike = async { (strike(), Instant::now()) };
    let limit = Duration::from_secs(120);
    let ((stopped, struck), calls) =
        Load::steady_across(&center, IN_FLIGHT, CALLS_EACH_SIDE, strike, limit).await;
    let calls = calls.expect("the calls end");
    println!(
        "the load ran {:.1} s, {:.1} s of it after the broker node stopped",
        started.elapsed().as_secs_f64(),
        struck.elapsed().as_secs_f64()
    );
    drop(stopped);
    center.close().await;
    calls.increase_tally()
}

/// A center on broker A, nodes on brokers B and C, a quorum queue: the
/// broker node that leads the queue is stopped under load. Every call is
/// answered once with its right value; none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs scripts/cluster.sh start; scripts/test.sh runs it"]
async fn losing_the_queue_leader_loses_no_call() {
    let nodes = cluster();
    let queue = format!("test.cluster.leader.{}", uuid::Uuid::new_v4());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let _on_b = node(&queue, &[&b.1]).await;
    let _on_c = node(&queue, &[&c.1]).await;
    let tally = load_with(&a.1, &queue, || {
        let leader = leader(&a.0, &queue);
        println!("stopping the queue's leader, {leader}");
        StoppedBroker::stop(&leader)
    })
    .await;
    println!("leader stopped under load: {tally}");
    tally.assert_all_answered();
    rabbitmqctl(&a.0, &["delete_queue", &queue]);
}

/// The broker a node is connected to is stopped under load: the node
/// reconnects to another of its addresses and goes on; every call is
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs scripts/cluster.sh start; scripts/test.sh runs it"]
async fn a_node_whose_broker_stops_fails_over() {
    let nodes = cluster();
    let queue = format!("test.cluster.failover.{}", uuid::Uuid::new_v4());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let node = node(&queue, &[&b.1, &c.1]).await;
    let connected_to = |node: &ServerProcess| {
        let log = node.log();
        [b, c]
            .into_iter()
            .find(|(_, url)| {
                log.contains(&format!(
                    "connected to RabbitMQ broker={}",
                    url.replace(":guest@", ":***@")
                ))
            })
            .map(|(name, _)| name.clone())
            .expect("the node says which broker it connected to")
    };
    let first = connected_to(&node);
    let tally = load_with(&a.1, &queue, || {
        println!("stopping the node's broker, {first}");
        StoppedBroker::stop(&first)
    })
    .await;
    println!("node's broker stopped under load: {tally}");
    tally.assert_all_answered();
    let log = node.log();
    assert!(
        log.contains("lost the session") && log.contains("serving again"),
        "the node did not say it reconnected:\n{log}"
    );
    rabbitmqctl(&a.0, &["delete_queue", &queue]);
}

/// The book's "Across machines": the cluster's nodes as
/// `scripts/cluster.sh status` lists them, and a call through a node on
/// quorum queues, run as the chapter shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs scripts/cluster.sh start; scripts/test.sh runs it"]
async fn the_book_s_cluster_chapter_runs_as_written() {
    let chapter = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/src/cluster.md");
    testkit::run_chapter(std::path::Path::new(chapter)).await;
}
