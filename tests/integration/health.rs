//! A node started before its broker answers, or that loses it: it waits
//! and tries again instead of exiting, and says where it stands in its
//! metrics (`compute_broker_connected`) and at `GET /health`.

use compute_host::{Center, CenterOptions};
use std::time::Duration;
use testkit::{
    BrokerProxy, ServerProcess, center, compute_command, eventually, get, increase_module,
    run_to_end, scrape, unique_queue,
};

/// Whether the node's metrics say it is connected, and what `/health`
/// answers.
async fn standing(node: &ServerProcess) -> (bool, u16) {
    let address = node.metrics_addr();
    let connected = scrape(address)
        .await
        .lines()
        .any(|line| line == "compute_broker_connected 1");
    (connected, get(address, "/health").await.0)
}

/// Started while nothing answers at its broker's address, the node says
/// so once and keeps trying, `/health` answering 503; when the broker
/// answers it serves (200). When the broker goes away it is 503 again
/// until the node has reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waits_for_its_broker_and_says_where_it_stands() {
    let mut proxy = BrokerProxy::reserve();
    let queue = unique_queue("health");
    let mut command = compute_command();
    command
        .args(["--queue", &queue, "--amqp-url", &proxy.url()])
        .arg("--module")
        .arg(increase_module());
    let node =
        ServerProcess::compute_until_logged(&mut command, "RabbitMQ does not answer yet").await;
    assert_eq!(standing(&node).await, (false, 503));

    proxy.start().await;
    let limit = Duration::from_secs(30);
    eventually("the node serves once the broker answers", limit, || async {
        (standing(&node).await == (true, 200)).then_some(())
    })
    .await;
    let caller = center(&queue, Duration::from_secs(10)).await;
    assert_eq!(caller.call("41").await.unwrap().body, b"42");
    let log = node.log();
    assert_eq!(log.matches("does not answer yet").count(), 1, "{log}");

    proxy.stop().await;
    eventually("the node says it lost the broker", limit, || async {
        (standing(&node).await == (false, 503)).then_some(())
    })
    .await;
    proxy.start().await;
    eventually("the node serves again", limit, || async {
        (standing(&node).await == (true, 200)).then_some(())
    })
    .await;
    assert_eq!(caller.call("1").await.unwrap().body, b"2");
    caller.close().await;
    testkit::delete_queue(&queue).await;
}

/// `--connect-timeout` bounds the waiting, for scripts, and means what
/// it says: the node tries for that long, not less, then gives up with
/// the reason and exit status 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_the_wait() {
    let nobody = BrokerProxy::reserve();
    let started = std::time::Instant::now();
    let output = run_to_end(
        compute_command()
            .args(["--amqp-url", &nobody.url(), "--connect-timeout", "3"])
            .arg("--module")
            .arg(increase_module()),
        Duration::from_secs(30),
    )
    .await;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--connect-timeout 3 gave up after {took:?}");
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is the broker running?"), "{stderr}");
    assert!(
        took >= Duration::from_secs(3),
        "gave up early, after {took:?}"
    );
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");
}

/// A node still waiting for its broker stops at once when asked to
/// (SIGTERM, as Ctrl-C), and exits 0: it listens from the first moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waiting_for_its_broker_stops_when_asked() {
    let nobody = BrokerProxy::reserve();
    let mut command = compute_command();
    command
        .args(["--amqp-url", &nobody.url()])
        .arg("--module")
        .arg(increase_module());
    let mut node =
        ServerProcess::compute_until_logged(&mut command, "RabbitMQ does not answer yet").await;
    node.terminate();
    let status = node.wait_up_to(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{}", node.log());
    assert!(
        node.log().contains("stopped while starting"),
        "{}",
        node.log()
    );
}

/// A node and a center each given two broker addresses, one of them
/// down, connect through the other; when the broker the node uses goes
/// away, the node reconnects through the other address and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_given_several_brokers_fails_over_to_another() {
    let (mut first, mut second) = (BrokerProxy::reserve(), BrokerProxy::reserve());
    second.start().await;
    let queue = unique_queue("failover");
    let mut command = compute_command();
    command
        .args(["--queue", &queue])
        .args(["--amqp-url", &first.url(), "--amqp-url", &second.url()])
        .arg("--module")
        .arg(increase_module());
    let node = ServerProcess::compute(&mut command).await;
    assert_eq!(standing(&node).await, (true, 200));

    let options = CenterOptions {
        queue: queue.clone(),
        timeout: Duration::from_secs(10),
        ..CenterOptions::default()
    };
    let both = format!("{},{}", first.url(), second.url());
    let caller = Center::connect_with(&both, options).await.unwrap();
    assert_eq!(caller.call("1").await.unwrap().body, b"2");

    // The node can only be on the second address: the first was down.
    first.start().await;
    second.stop().await;
    let limit = Duration::from_secs(30);
    eventually(
        "the node reconnects through the other address",
        limit,
        || async {
            let log = node.log();
            let moved = log.contains("lost the session") && log.contains("serving again");
            (moved && standing(&node).await == (true, 200)).then_some(())
        },
    )
    .await;
    assert_eq!(caller.call("2").await.unwrap().body, b"3");
    caller.close().await;
    testkit::delete_queue(&queue).await;
}
