//! The broker restarts (`rabbitmqctl stop_app`, then `start_app`) while a
//! node and a center run a batch. Restarting the broker would break any
//! other test running at the time, so this test is `#[ignore]`d and
//! `scripts/test.sh` runs it on its own:
//! `cargo test -p integration --test broker_restart -- --ignored`.

#[path = "../integration/support.rs"]
#[allow(dead_code)]
mod support;

use compute_host::{Center, CenterOptions};
use std::{
    process::Command,
    time::{Duration, Instant},
};
use support::{Batch, ServerProcess, Tally, amqp_url, increase_module, unique_queue};

const BATCH: usize = 5000;
const IN_FLIGHT: usize = 128;

/// The node reconnects, declares its queue again and resumes; the center
/// sends the requests that were pending again (`--retries`), so every
/// request is answered and none is lost. With no retries, each pending
/// request fails with a clear error instead, and still none hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the broker; scripts/test.sh runs it alone"]
async fn a_broker_restart_mid_batch_loses_nothing() {
    let queue = unique_queue("broker-restart");
    let mut node = ServerProcess::node(&queue, &increase_module(), &[]).await;

    let retried = batch_across_a_restart(&queue, 3, &node).await;
    println!(
        "broker restart, --retries 3: {retried:?}, lost {}",
        retried.lost()
    );
    assert_eq!(
        (
            retried.replies,
            retried.wrong,
            retried.errors.len(),
            retried.lost()
        ),
        (BATCH, 0, 0, 0),
        "{:?}",
        retried.errors.first()
    );

    let unretried = batch_across_a_restart(&queue, 0, &node).await;
    println!(
        "broker restart, --retries 0: {} sent, {} replies, {} wrong, {} errors, lost {}",
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
    assert!(
        log.matches("reconnected; serving again").count() >= 2,
        "{log}"
    );
    node.terminate();
    assert!(node.wait().await.success(), "{}", node.log());
    support::delete_queue(&queue).await;
}

/// Runs a batch through a new center with `retries`, restarting the broker
/// once a fifth of it is done.
async fn batch_across_a_restart(queue: &str, retries: u32, node: &ServerProcess) -> Tally {
    let options = CenterOptions {
        queue: queue.to_owned(),
        timeout: Duration::from_secs(60),
        retries,
        ..CenterOptions::default()
    };
    let center = Center::connect_with(&amqp_url(), options)
        .await
        .expect("center connects");
    let batch = Batch::start(&center, BATCH, IN_FLIGHT);
    batch.until_done(BATCH / 5).await;
    {
        let _restart = BrokerRestart::stop();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let started = Instant::now();
    let Some(tally) = batch.finish(Duration::from_secs(90)).await else {
        panic!("the batch hangs; the node's log:\n{}", node.log());
    };
    println!(
        "the batch ended {:?} after the broker was back",
        started.elapsed()
    );
    center.close().await;
    tally
}

/// The broker's application stopped; started again on drop, even when the
/// test fails, so no later test finds the broker down.
struct BrokerRestart;

impl BrokerRestart {
    fn stop() -> Self {
        rabbitmqctl("stop_app");
        BrokerRestart
    }
}

impl Drop for BrokerRestart {
    fn drop(&mut self) {
        rabbitmqctl("start_app");
    }
}

fn rabbitmqctl(command: &str) {
    let status = Command::new("rabbitmqctl")
        .args(["-q", command])
        .status()
        .expect("rabbitmqctl runs (it comes with RabbitMQ)");
    assert!(status.success(), "rabbitmqctl {command}: {status}");
}
