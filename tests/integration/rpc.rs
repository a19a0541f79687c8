//! Calls through the `Center` library: matching replies to requests.

use compute_host::{
    CallError, Center, CenterOptions, ReplyMode,
    shared::wire::{ErrorKind, PeerErrorKind},
};
use futures_util::{StreamExt as _, stream};
use lapin::BasicProperties;
use std::time::Duration;
use testkit::{RawClient, RunningNode, amqp_url, center, unique_queue};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Every one of 2000 requests sent with 256 in flight gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_flight_each_get_their_own_reply() {
    let node = RunningNode::start(&unique_queue("in-flight")).await;
    let center = center(&node.queue, TIMEOUT).await;

    // Unordered, so replies arrive in any order and only the correlation
    // id can put each one with its request.
    let mismatches: Vec<(i64, String)> = stream::iter(0..2000_i64)
        .map(|n| {
            let center = center.clone();
            async move {
                let reply = center.call(n.to_string()).await.expect("call succeeds");
                (n, String::from_utf8(reply.body).unwrap())
            }
        })
        .buffer_unordered(256)
        .filter(|(n, reply)| std::future::ready(*reply != (n + 1).to_string()))
        .collect()
        .await;
    assert_eq!(
        mismatches,
        [],
        "replies that do not belong to their request"
    );

    center.close().await;
    node.stop().await;
}

/// Two centers calling one node at the same time each get only their own
/// replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_centers_never_see_each_others_replies() {
    let node = RunningNode::start(&unique_queue("two-centers")).await;
    let first = center(&node.queue, TIMEOUT).await;
    let second = center(&node.queue, TIMEOUT).await;

    let run = |center: compute_host::Center, inputs: std::ops::Range<i64>| async move {
        stream::iter(inputs)
            .map(|n| {
                let center = center.clone();
                async move { (n, center.call(n.to_string()).await.unwrap().body) }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
    };
    let (a, b) = tokio::join!(
        run(first.clone(), 0..500),
        run(second.clone(), 1_000_000..1_000_500)
    );
    for (n, body) in a.into_iter().chain(b) {
        assert_eq!(String::from_utf8(body).unwrap(), (n + 1).to_string());
    }

    first.close().await;
    second.close().await;
    node.stop().await;
}

/// With direct reply-to (`--reply-mode direct`) there is no reply queue,
/// and 1000 calls with 128 in flight still each get their own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_matches_every_reply() {
    let node = RunningNode::start(&unique_queue("direct")).await;
    let options = CenterOptions {
        queue: node.queue.clone(),
        timeout: TIMEOUT,
        reply_mode: ReplyMode::Direct,
        ..CenterOptions::default()
    };
    let center = Center::connect_with(&amqp_url(), options).await.unwrap();
    assert_eq!(center.reply_queue(), "amq.rabbitmq.reply-to");

    let replies: Vec<(i64, Vec<u8>)> = stream::iter(0..1000_i64)
        .map(|n| {
            let center = center.clone();
            async move { (n, center.call(n.to_string()).await.unwrap().body) }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    for (n, body) in replies {
        assert_eq!(body, (n + 1).to_string().into_bytes());
    }

    center.close().await;
    node.stop().await;
}

/// A reply nobody asked for (unknown or missing correlation id) in the
/// center's reply queue is ignored, and real calls still get their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_replies_are_ignored() {
    let node = RunningNode::start(&unique_queue("stray")).await;
    let center = center(&node.queue, TIMEOUT).await;
    let intruder = RawClient::connect().await;

    for (body, properties) in [
        (
            &b"666"[..],
            BasicProperties::default().with_correlation_id("not-a-real-call".into()),
        ),
        (&b"777"[..], BasicProperties::default()),
    ] {
        intruder
            .publish(&center.reply_queue(), body, properties)
            .await;
    }
    for n in [1, 2, 3] {
        let reply = center.call(n.to_string()).await.unwrap();
        assert_eq!(reply.body, (n + 1).to_string().into_bytes());
    }

    center.close().await;
    node.stop().await;
}

/// Calls that the function rejects come back as typed remote errors with
/// the function's message, and calls after them succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_errors_carry_their_kind_and_message() {
    let node = RunningNode::start(&unique_queue("remote-errors")).await;
    let center = center(&node.queue, TIMEOUT).await;

    match center.call("seven").await {
        Err(CallError::Remote {
            kind,
            message,
            origin,
        }) => {
            assert_eq!(kind, PeerErrorKind::Known(ErrorKind::BadRequest));
            assert!(message.contains("\"seven\""), "{message}");
            assert_eq!(origin.function.as_deref(), Some("increase"));
        }
        other => panic!("expected a bad-request reply, got {other:?}"),
    }
    assert_eq!(center.call("7").await.unwrap().body, b"8");

    center.close().await;
    node.stop().await;
}
