//! The library as a program uses it: the example in `compute_host::center`'s
//! documentation, step by step (the doctest itself is `no_run`, so that
//! `cargo test -p compute-host` needs no broker).

use compute_host::{CallError, Center, CenterOptions, ComputeNode, NodeConfig};
use futures_util::future::join_all;
use testkit::{amqp_url, delete_queue, increase_module, unique_queue};

/// A node and a center in one program: ten calls from ten tasks through
/// clones of one center, each answered n+1, and a typed error reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_program() {
    let url = amqp_url();
    let queue = unique_queue("library");
    let node = ComputeNode::start(&NodeConfig {
        amqp_url: url.clone(),
        ..NodeConfig::module(increase_module(), &queue)
    })
    .await
    .expect("the node starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(node.run(stopped));

    let options = CenterOptions {
        queue: queue.clone(),
        ..CenterOptions::default()
    };
    let center = Center::connect_with(&url, options)
        .await
        .expect("the center connects");
    let calls = (0..10).map(|n| {
        let center = center.clone();
        tokio::spawn(async move { center.call(n.to_string()).await })
    });
    for (n, reply) in join_all(calls).await.into_iter().enumerate() {
        assert_eq!(reply.unwrap().unwrap().body, (n + 1).to_string().as_bytes());
    }

    match center.call("forty-one").await {
        Err(CallError::Remote { kind, .. }) => assert_eq!(kind, "bad-request"),
        other => panic!("expected a bad-request reply, got {other:?}"),
    }

    center.close().await;
    let _ = stop.send(());
    serving.await.expect("the node stops cleanly");
    delete_queue(&queue).await;
}
