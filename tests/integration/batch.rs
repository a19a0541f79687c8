//! Batches: many inputs in one message, each computed on its own.

use compute_host::{
    CallError, Limits, NodeConfig,
    shared::wire::{ERROR_HEADER, batch},
};
use lapin::BasicProperties;
use std::time::Duration;
use testkit::{RawClient, RunningNode, center, increase_module, unique_queue};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A batch of inputs comes back as one result per input, in order, each
/// with its own success or error, and names what computed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_input_of_a_batch_gets_its_own_result_in_order() {
    let node = RunningNode::start(&unique_queue("batch")).await;
    let center = center(&node.queue, TIMEOUT).await;

    let inputs = ["1", "forty-one", "41", "", "9223372036854775807"];
    let results = center.call_batch(&inputs).await.expect("the batch call");
    assert_eq!(results.len(), inputs.len());
    let kinds: Vec<&str> = results
        .iter()
        .map(|result| match result {
            Ok(_) => "ok",
            Err(err) => err.kind(),
        })
        .collect();
    assert_eq!(
        kinds,
        ["ok", "bad-request", "ok", "bad-request", "compute-failed"]
    );
    assert_eq!(results[0].as_ref().unwrap().body, b"2");
    assert_eq!(results[2].as_ref().unwrap().body, b"42");
    let origin = &results[0].as_ref().unwrap().origin;
    assert_eq!(origin.function.as_deref(), Some("increase"));
    match &results[1] {
        Err(CallError::Remote {
            message, origin, ..
        }) => {
            assert!(message.contains("forty-one"), "{message}");
            assert_eq!(origin.function.as_deref(), Some("increase"));
        }
        other => panic!("expected a bad-request result, got {other:?}"),
    }

    // A thousand at once, checked by value; and an empty batch.
    let many: Vec<String> = (0..1000).map(|n| n.to_string()).collect();
    let results = center.call_batch(&many).await.unwrap();
    for (n, result) in results.iter().enumerate() {
        assert_eq!(
            result.as_ref().unwrap().body,
            (n + 1).to_string().as_bytes()
        );
    }
    assert!(center.call_batch::<&str>(&[]).await.unwrap().is_empty());

    center.close().await;
    node.stop().await;
}

/// A batch the node cannot read is answered, as one call, with
/// `bad-request`; a single call next to it is answered byte for byte as
/// the Python examples expect, with no content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_batch_is_a_bad_request_and_single_calls_are_unchanged() {
    let node = RunningNode::start(&unique_queue("bad-batch")).await;
    let mut client = RawClient::connect().await;

    // Says 16 bytes follow; 2 do.
    let cut = [0, 0, 0, 16, b'4', b'1'];
    let properties = BasicProperties::default()
        .with_reply_to(client.reply_queue.as_str().into())
        .with_content_type(batch::CONTENT_TYPE.into());
    client.publish(&node.queue, &cut, properties).await;
    let reply = client.next_reply().await;
    let error = compute_host::shared::wire::header_text(&reply.properties, ERROR_HEADER);
    assert_eq!(error.as_deref(), Some("bad-request"));
    let message = String::from_utf8_lossy(&reply.data);
    assert!(message.contains("cannot read the batch"), "{message}");
    assert_eq!(reply.properties.content_type(), &None);

    let single = client.request(&node.queue, b"41", Some("one")).await;
    assert_eq!(single.data, b"42");
    assert_eq!(single.properties.content_type(), &None);
    node.stop().await;
}

/// Results that add up to more than the node's `--max-body` fail the batch
/// with `too-large`, saying to send smaller batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_results_do_not_fit_is_too_large() {
    let queue = unique_queue("batch-max-body");
    let node = RunningNode::start_with(NodeConfig {
        limits: Limits {
            max_body: 256,
            ..Limits::default()
        },
        ..NodeConfig::module(increase_module(), &queue)
    })
    .await;
    let center = center(&queue, TIMEOUT).await;

    let fits: Vec<String> = (0..5).map(|n| n.to_string()).collect();
    assert_eq!(center.call_batch(&fits).await.unwrap().len(), 5);
    let too_many: Vec<String> = (0..100).map(|n| n.to_string()).collect();
    match center.call_batch(&too_many).await {
        Err(CallError::Remote { kind, message, .. }) => {
            assert_eq!(kind, "too-large");
            assert!(message.contains("fewer inputs"), "{message}");
        }
        other => panic!("expected too-large, got {other:?}"),
    }
    center.close().await;
    node.stop().await;
}
