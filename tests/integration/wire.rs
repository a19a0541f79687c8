//! The wire format as a peer in another language sees it.

use compute_host::{
    Limits, NodeConfig,
    shared::wire::{ERROR_HEADER, FUNCTION_HEADER, header_text},
};
use lapin::{BasicProperties, options::QueueDeclareOptions, types::FieldTable};
use std::time::Duration;
use testkit::{RawClient, RunningNode, eventually, increase_module, unique_queue};

/// Decimal text in, decimal text out, with the request's correlation id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_is_the_decimal_result_with_the_same_correlation_id() {
    let node = RunningNode::start(&unique_queue("wire-ok")).await;
    let mut client = RawClient::connect().await;

    let reply = client.request(&node.queue, b"41", Some("corr-41")).await;
    assert_eq!(reply.data, b"42");
    assert_eq!(
        reply.properties.correlation_id().as_ref().unwrap().as_str(),
        "corr-41"
    );
    assert_eq!(header_text(&reply.properties, ERROR_HEADER), None);
    assert_eq!(
        header_text(&reply.properties, FUNCTION_HEADER).as_deref(),
        Some("increase")
    );

    node.stop().await;
}

/// A request without a correlation id, as in the seed's first example,
/// gets a reply without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_correlation_id_gets_a_reply_without_one() {
    let node = RunningNode::start(&unique_queue("wire-no-corr")).await;
    let mut client = RawClient::connect().await;

    let reply = client.request(&node.queue, b"9", None).await;
    assert_eq!(reply.data, b"10");
    assert_eq!(reply.properties.correlation_id(), &None);

    node.stop().await;
}

/// A non-number, an empty body and an overflow each get an error reply
/// with the documented `x-error` header and a message, and the node keeps
/// serving afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_error_replies_and_the_node_keeps_serving() {
    let node = RunningNode::start(&unique_queue("wire-errors")).await;
    let mut client = RawClient::connect().await;

    let overflow = i64::MAX.to_string();
    let cases: [(&[u8], &str, &str); 3] = [
        (b"ten", "bad-request", "expected a decimal integer"),
        (b"", "bad-request", "empty"),
        (overflow.as_bytes(), "compute-failed", "overflows"),
    ];
    for (body, kind, phrase) in cases {
        let reply = client.request(&node.queue, body, Some("bad")).await;
        let message = String::from_utf8(reply.data).unwrap();
        assert_eq!(
            header_text(&reply.properties, ERROR_HEADER).as_deref(),
            Some(kind),
            "{message}"
        );
        assert!(
            message.contains(phrase),
            "{message:?} should mention {phrase:?}"
        );
        assert_eq!(
            reply.properties.correlation_id().as_ref().unwrap().as_str(),
            "bad"
        );
    }
    let reply = client.request(&node.queue, b"1", Some("after")).await;
    assert_eq!(reply.data, b"2");

    node.stop().await;
}

/// A request without `reply_to` (the failure in the seed article) is
/// rejected once: it does not crash the node, is not redelivered, and
/// does not stay in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_reply_to_is_dropped_not_redelivered() {
    let node = RunningNode::start(&unique_queue("wire-no-reply-to")).await;
    let mut client = RawClient::connect().await;

    client
        .publish(
            &node.queue,
            b"5",
            BasicProperties::default().with_correlation_id("lost".into()),
        )
        .await;
    let reply = client.request(&node.queue, b"6", Some("fine")).await;
    assert_eq!(reply.data, b"7");

    // Rejected, not requeued: nothing waits for redelivery.
    settled(&client, &node).await;

    node.stop().await;
}

/// A body larger than `--max-body` gets a `too-large` error reply without
/// reaching the guest, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_body_gets_a_too_large_reply() {
    let node = RunningNode::start_with(NodeConfig {
        limits: Limits {
            max_body: 100,
            ..Limits::default()
        },
        ..NodeConfig::module(increase_module(), unique_queue("wire-too-large"))
    })
    .await;
    let mut client = RawClient::connect().await;

    let reply = client.request(&node.queue, &[b'7'; 101], Some("big")).await;
    assert_eq!(
        header_text(&reply.properties, ERROR_HEADER).as_deref(),
        Some("too-large")
    );
    assert_eq!(
        String::from_utf8(reply.data).unwrap(),
        "the request body is 101 bytes, more than the node's limit of 100 bytes (--max-body)"
    );
    assert_eq!(
        client.request(&node.queue, b"64", Some("small")).await.data,
        b"65"
    );

    node.stop().await;
}

/// A request whose `reply_to` names no queue (its caller is gone) is
/// computed, its reply comes back unroutable, and the request is acked
/// rather than redelivered; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_missing_queue_is_dropped_and_the_request_acked() {
    let node = RunningNode::start(&unique_queue("wire-gone-caller")).await;
    let mut client = RawClient::connect().await;

    let gone = BasicProperties::default()
        .with_reply_to(unique_queue("gone").as_str().into())
        .with_correlation_id("gone".into());
    client.publish(&node.queue, b"5", gone).await;
    assert_eq!(
        client.request(&node.queue, b"6", Some("here")).await.data,
        b"7"
    );
    // Both computed once, acked, and nothing left: a request sent back to
    // the queue would be computed again and again.
    settled(&client, &node).await;
    assert_eq!(node.live.served(), 2);

    node.stop().await;
}

/// Waits until the node has nothing in flight and nothing waits in its
/// queue (for at most 10 s).
async fn settled(client: &RawClient, node: &RunningNode) {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    eventually(
        "the node settles every request",
        Duration::from_secs(10),
        || async {
            let queued = client
                .channel
                .queue_declare(node.queue.as_str().into(), passive, FieldTable::default())
                .await
                .unwrap()
                .message_count();
            (queued == 0 && node.live.in_flight() == 0).then_some(())
        },
    )
    .await;
}
