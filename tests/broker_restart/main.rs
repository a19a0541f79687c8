//! Faults of the broker itself, which would break any other test running
//! at the time: the broker restarts (`rabbitmqctl stop_app`, then
//! `start_app`) while a node and a center run calls, and a memory alarm
//! blocks every publisher. These tests are `#[ignore]`d and
//! `scripts/test.sh` runs them on their own, one at a time:
//! `cargo test -p integration --test broker_restart -- --ignored --test-threads 1`.

use compute_host::{Center, CenterOptions};
use std::{
    process::Command,
    time::{Duration, Instant},
};
use testkit::{
    Load, RawClient, ServerProcess, Tally, amqp_url, eventually, increase_module, scrape,
    unique_queue, wait_for_metric,
};

/// Calls that end before the broker stops, and again after it is back
/// (`Load::steady_across`).
const CALLS_EACH_SIDE: usize = 1000;
const IN_FLIGHT: usize = 128;

/// In either ack mode, the node reconnects, declares its queue again and
/// resumes; the center sends the requests that were pending again
/// (`--retries`), so every request is answered and none is lost. With no
/// retries, each pending request fails with a clear error instead, and
/// still none hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the broker; scripts/test.sh runs it alone"]
async fn a_broker_restart_under_load_loses_nothing() {
    for ack_mode in ["on-publish", "on-confirm"] {
        let queue = unique_queue("broker-restart");
        let mut node =
            ServerProcess::node(&queue, &increase_module(), &["--ack-mode", ack_mode]).await;

        let (retried, lived_through) = calls_across_a_restart(&queue, 3, &node).await;
        println!(
            "broker restart, --ack-mode {ack_mode}, --retries 3: {retried:?}, lost {}; {lived_through} answered after living through the restart",
            retried.lost()
        );
        assert!(
            lived_through > 0,
            "no call was in flight across the restart"
        );
        assert_eq!(
            (
                retried.replies,
                retried.wrong,
                retried.errors.len(),
                retried.lost()
            ),
            (retried.sent, 0, 0, 0),
            "{:?}",
            retried.errors.first()
        );

        let (unretried, _) = calls_across_a_restart(&queue, 0, &node).await;
        println!(
            "broker restart, --ack-mode {ack_mode}, --retries 0: {} sent, {} replies, {} wrong, {} errors, lost {}",
            unretried.sent,
            unretried.replies,
            unretried.wrong,
            unretried.errors.len(),
            unretried.lost()
        );
        assert_eq!((unretried.wrong, unretried.lost()), (0, 0));
        assert!(
            !unretried.errors.is_empty(),
            "the restart failed no request"
        );
        let unclear: Vec<_> = unretried
            .errors
            .iter()
            .filter(|error| {
                !error.starts_with("connection-lost") && !error.starts_with("publish-failed")
            })
            .collect();
        assert!(unclear.is_empty(), "{unclear:?}");

        let log = node.log();
        // Once per restart, and only once the queue is consumed again.
        assert!(log.matches("serving again").count() >= 2, "{log}");
        node.terminate();
        assert!(node.wait().await.success(), "{}", node.log());
        testkit::delete_queue(&queue).await;
    }
}

/// Runs calls through a new center with `retries` across a broker
/// restart: how they went, and how many were answered after being in
/// flight from before the broker was down until it was back.
async fn calls_across_a_restart(queue: &str, retries: u32, node: &ServerProcess) -> (Tally, usize) {
    let options = CenterOptions {
        queue: queue.to_owned(),
        timeout: Duration::from_secs(60),
        retries,
        ..CenterOptions::default()
    };
    let center = Center::connect_with(&amqp_url(), options)
        .await
        .expect("center connects");
    let restart = async {
        let stopped = BrokerRestart::stop();
        // Tokio's clock, as the calls' times are.
        let down = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(stopped);
        (down, tokio::time::Instant::now())
    };
    let limit = Duration::from_secs(90);
    let ((down, back), calls) =
        Load::steady_across(&center, IN_FLIGHT, CALLS_EACH_SIDE, restart, limit).await;
    let Some(calls) = calls else {
        panic!(
            "the calls stall after the restart; the node's log:\n{}",
            node.log()
        );
    };
    println!(
        "{CALLS_EACH_SIDE} more calls ended {:?} after the broker was back",
        back.elapsed()
    );
    center.close().await;
    (calls.increase_tally(), calls.answered_across(down, back))
}

/// The broker's application stopped; started again on drop, even when the
/// test fails, so no later test finds the broker down.
struct BrokerRestart;

impl BrokerRestart {
    fn stop() -> Self {
        rabbitmqctl(&["stop_app"]);
        BrokerRestart
    }
}

impl Drop for BrokerRestart {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
    }
}

/// A node whose reply the broker blocks (a memory alarm) says so in its
/// log and its metrics, and a SIGTERM still stops it within its documented
/// bound: the consumer's cancel (10 s) beside the drain
/// (`--guest-wall-timeout` + 30 s), then the close (10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "raises a memory alarm on the broker; scripts/test.sh runs it alone"]
async fn a_node_under_a_broker_alarm_says_so_and_still_stops() {
    let queue = unique_queue("alarm");
    let nosy = testkit::nosy_module();
    let wall = 2;
    let wall_arg = wall.to_string();
    let args = ["--guest-wall-timeout", &wall_arg];
    let mut node = ServerProcess::node(&queue, &nosy, &args).await;
    let metrics = node.metrics_addr();
    let client = RawClient::connect().await;
    let asleep = lapin::BasicProperties::default()
        .with_reply_to(client.reply_queue.as_str().into())
        .with_correlation_id("asleep".into());
    client.publish(&queue, b"sleep", asleep).await;
    wait_for_metric(metrics, "compute_in_flight_requests 1").await;

    {
        let _alarm = MemoryAlarm::raise();
        // The guest's timeout reply is the first thing the node publishes
        // under the alarm.
        eventually(
            "the node says it is blocked",
            Duration::from_secs(30),
            || async {
                let metrics = scrape(metrics).await;
                metrics
                    .lines()
                    .any(|line| line == "compute_broker_blocked 1")
                    .then_some(())
            },
        )
        .await;
        assert!(
            node.log().contains("RabbitMQ blocked publishing"),
            "{}",
            node.log()
        );

        let stopping = Instant::now();
        node.terminate();
        let status = node.wait_up_to(Duration::from_secs(wall + 50)).await;
        let took = stopping.elapsed();
        println!("under a memory alarm, SIGTERM to exit: {took:?} (bound: {wall} s + 40 s)");
        assert!(status.success(), "{status}; log:\n{}", node.log());
        assert!(took < Duration::from_secs(wall + 42), "{took:?}");
        // The blocked broker reads nothing more, its close included.
        assert_eq!(
            node.connection_closed_when_stopped().as_deref(),
            Some("uncleanly"),
            "{}",
            node.log()
        );
    }
    testkit::delete_queue(&queue).await;
}

/// A memory alarm on the broker (its high watermark set to a few bytes),
/// lifted on drop, even when the test fails.
struct MemoryAlarm;

impl MemoryAlarm {
    fn raise() -> Self {
        rabbitmqctl(&["set_vm_memory_high_watermark", "absolute", "1"]);
        MemoryAlarm
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        // The broker's default, as its config file here leaves it.
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]);
    }
}

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .status()
        .expect("rabbitmqctl runs (it comes with RabbitMQ)");
    assert!(status.success(), "rabbitmqctl {args:?}: {status}");
}
