//! Quorum queues (`--queue-type quorum`): durable, replicated, with a
//! delivery limit past which a request is dead-lettered.

use compute_host::shared::amqp;
use lapin::{BasicProperties, options::QueueDeclareOptions, types::FieldTable};
use std::time::Duration;
use testkit::{
    QueueGuard, RawClient, ServerProcess, amqp_url, compute_command, eventually, nosy_module,
    requests_settled, scrape, unique_queue,
};

/// A request that takes down every node that computes it (here each is
/// killed while computing it) is delivered once, again once (the limit of
/// 1), then dead-lettered: it waits in `<queue>.dead`, and the next node
/// serves the other requests instead of dying on it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_kills_its_nodes_is_dead_lettered_after_the_limit() {
    let queue = unique_queue("quorum-poison");
    let dead = format!("{queue}.dead");
    let _queues = QueueGuard::new([queue.clone(), dead.clone()]);
    let module = nosy_module();
    let args = [
        "--queue-type",
        "quorum",
        "--delivery-limit",
        "1",
        "--guest-wall-timeout",
        "60",
    ];
    let mut client = RawClient::connect().await;
    // Each node takes the request and is killed computing it, until the
    // broker stops delivering it.
    let mut deliveries = 0;
    let mut node = loop {
        // Not `ServerProcess::node`, which deletes the queue when the
        // killed node is dropped.
        let mut command = compute_command();
        command
            .args(["--queue", &queue, "--amqp-url", &amqp_url()])
            .arg("--module")
            .arg(&module)
            .args(args);
        let mut node = ServerProcess::compute(&mut command).await;
        if deliveries == 0 {
            let poison = BasicProperties::default()
                .with_reply_to(client.reply_queue.as_str().into())
                .with_correlation_id("poison".into());
            client.publish(&queue, b"sleep", poison).await;
        }
        let metrics = node.metrics_addr();
        let limit = Duration::from_secs(30);
        let delivered = eventually(
            "the request is delivered or dead-lettered",
            limit,
            || async {
                if scrape(metrics)
                    .await
                    .contains("compute_in_flight_requests 1")
                {
                    Some(true)
                } else {
                    (waiting(&dead).await == 1).then_some(false)
                }
            },
        )
        .await;
        if !delivered {
            break node;
        }
        deliveries += 1;
        node.kill().await;
    };
    assert_eq!(deliveries, 2, "delivered once, then once more (the limit)");
    let reply = client.request(&queue, b"look", Some("normal")).await;
    assert!(
        String::from_utf8_lossy(&reply.data).contains("denied"),
        "the node serves the next request: {:?}",
        reply.data
    );
    assert_eq!(waiting(&queue).await, 0);
    assert_eq!(waiting(&dead).await, 1, "the request waits in {dead}");
    // The node that lived computed the one normal request: the broker
    // never gave it the dead-lettered one.
    let settled = eventually(
        "the node counts the request it answered",
        Duration::from_secs(10),
        || async {
            let settled = requests_settled(node.metrics_addr()).await;
            (settled > 0).then_some(settled)
        },
    )
    .await;
    assert_eq!(settled, 1);
    assert!(node.is_running());
}

/// How many messages wait in `queue`.
async fn waiting(queue: &str) -> u32 {
    let connection = amqp::connect(&amqp_url()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .unwrap();
    let _ = connection.close(200, "OK".into()).await;
    declared.message_count()
}
