//! Version pinning: a request that names a module digest in
//! `x-module-digest` runs exactly that version, or gets `unknown-version`.

use compute_host::{
    CallError, Center, CenterOptions,
    shared::{sandbox::digest, wire::ErrorKind},
};
use std::time::Duration;
use testkit::{ModuleDir, RunningNode, amqp_url, built_module, center, eventually, unique_queue};

/// A caller that pins the version it tested keeps getting it after a swap
/// (the node keeps recent versions compiled), a caller that pins the new
/// one gets the new one, an unpinned caller gets the current one, and a
/// version the node does not hold is answered `unknown-version`, with the
/// version it serves in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_call_runs_exactly_its_version() {
    let increase = std::fs::read(built_module("increase")).unwrap();
    let double = std::fs::read(built_module("double")).unwrap();
    let (increase_digest, double_digest) = (digest(&increase), digest(&double));
    let dir = ModuleDir::with_working_copy(&built_module("increase"));
    let node = RunningNode::start_module(&unique_queue("pinning"), &dir.working_copy()).await;

    dir.publish(&double);
    let unpinned = center(&node.queue, Duration::from_secs(10)).await;
    eventually(
        "the swapped-in version answers",
        Duration::from_secs(20),
        || async {
            let reply = unpinned.call("5").await.ok()?;
            (reply.body == b"10").then_some(())
        },
    )
    .await;

    let pinned_to = |version: &str| {
        let options = CenterOptions {
            queue: node.queue.clone(),
            timeout: Duration::from_secs(10),
            version: Some(version.to_owned()),
            ..CenterOptions::default()
        };
        async move { Center::connect_with(&amqp_url(), options).await.unwrap() }
    };
    let old = pinned_to(&increase_digest).await;
    let new = pinned_to(&double_digest).await;
    for _ in 0..5 {
        let reply = old.call("5").await.expect("the old version answers");
        assert_eq!(reply.body, b"6");
        assert_eq!(
            reply.origin.module.as_deref(),
            Some(increase_digest.as_str())
        );
        let reply = new.call("5").await.expect("the new version answers");
        assert_eq!(reply.body, b"10");
        assert_eq!(reply.origin.module.as_deref(), Some(double_digest.as_str()));
        assert_eq!(unpinned.call("5").await.unwrap().body, b"10");
    }

    let unknown = format!("sha256:{}", "0".repeat(64));
    let stranger = pinned_to(&unknown).await;
    match stranger.call("5").await {
        Err(CallError::Remote { kind, message, .. }) => {
            assert_eq!(kind, ErrorKind::UnknownVersion.as_str());
            assert!(message.contains(&unknown), "{message}");
            assert!(message.contains(&double_digest), "{message}");
        }
        other => panic!("expected unknown-version, got {other:?}"),
    }

    for center in [unpinned, old, new, stranger] {
        center.close().await;
    }
    node.stop().await;
}
