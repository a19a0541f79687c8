//! A function's own limits, from `NAME.toml` beside its module, within the
//! node's.

use compute_host::{CallError, Center, node::live::Rejected, shared::sandbox::FunctionLimits};
use std::time::{Duration, Instant};
use testkit::{DirNode, ModuleDir, RunningNode, center, eventually, nosy_module, unique_queue};

/// How long a limits file takes to be noticed, at most.
const NOTICED: Duration = Duration::from_secs(10);

/// The `timeout` reply of a guest that sleeps in a host call (`sleep` to
/// the nosy guest), stopped by its wall-clock limit.
pub(crate) async fn stopped_sleeper(center: &Center) -> String {
    match center.call("sleep").await {
        Err(CallError::Remote { kind, message, .. }) => {
            assert_eq!(kind, "timeout", "{message}");
            message
        }
        other => panic!("a sleeper got {other:?}"),
    }
}

/// `nosy.toml` beside `nosy.wasm` says `wall-timeout = 0.5` and
/// `instances = 1`: its sleepers are stopped after half a second, not the
/// node's ten, and run one at a time, while `increase` beside it, with no
/// limits file, answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limits_file_applies_to_its_function_only() {
    let dir = ModuleDir::empty();
    std::fs::copy(nosy_module(), dir.join("nosy.wasm")).unwrap();
    std::fs::copy(testkit::increase_module(), dir.join("increase.wasm")).unwrap();
    dir.limit("nosy", "wall-timeout = 0.5\ninstances = 1\n");
    let node = DirNode::start(&dir.path, ["nosy", "increase"]).await;
    let nosy = center(&node.queue("nosy"), Duration::from_secs(30)).await;
    let increase = center(&node.queue("increase"), Duration::from_secs(30)).await;

    let started = Instant::now();
    let sleepers = futures_util::future::join_all((0..4).map(|_| stopped_sleeper(&nosy)));
    let mut sleepers = std::pin::pin!(sleepers);
    // `increase` is answered while the sleepers still wait their turn.
    tokio::select! {
        reply = increase.call("41") => assert_eq!(reply.unwrap().body, b"42"),
        _ = &mut sleepers => panic!("increase waited for nosy's sleepers"),
    }
    for message in sleepers.await {
        assert!(message.contains("within 500ms"), "{message}");
    }
    let took = started.elapsed();
    println!("4 sleepers, one at a time, 0.5 s each: {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "4 sleepers of 0.5 s took {took:?}: they did not run one at a time"
    );
    nosy.close().await;
    increase.close().await;
    node.stop().await;
}

/// A limits file edited while the node runs applies at once to the same
/// module; one that asks for more than the node allows is turned down and
/// the limits before it stay; removing it brings back the node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limits_file_is_applied_live_and_a_bad_one_changes_nothing() {
    let dir = ModuleDir::with_working_copy(&nosy_module());
    dir.limit("work", "wall-timeout = 0.5");
    let queue = unique_queue("limits_live");
    let node = RunningNode::start_module(&queue, &dir.working_copy()).await;
    let digest = node.live.current().digest().to_owned();
    let center = center(&queue, Duration::from_secs(30)).await;
    assert!(stopped_sleeper(&center).await.contains("within 500ms"));

    // The node's --guest-wall-timeout is 10 s.
    dir.limit("work", "wall-timeout = 60");
    eventually("the greedy limits turned down", NOTICED, || async {
        (node.live.last_rejected() == Some(Rejected::Unusable(digest.clone()))).then_some(())
    })
    .await;
    assert!(stopped_sleeper(&center).await.contains("within 500ms"));

    dir.limit("work", "wall-timeout = 0.25");
    eventually("the new limits applied", NOTICED, || async {
        (node.live.current().own_limits().wall_timeout == Some(0.25)).then_some(())
    })
    .await;
    assert_eq!(node.live.current().digest(), digest, "the same module");
    assert!(stopped_sleeper(&center).await.contains("within 250ms"));

    std::fs::remove_file(dir.join("work.toml")).unwrap();
    eventually("the node's limits back", NOTICED, || async {
        (node.live.current().own_limits() == FunctionLimits::default()).then_some(())
    })
    .await;
    assert_eq!(
        node.live.current().limits().wall_timeout,
        Duration::from_secs(10)
    );
    center.close().await;
    node.stop().await;
}
