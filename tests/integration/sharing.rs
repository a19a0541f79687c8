//! One node, several functions: none keeps another waiting, neither for
//! instances nor for its compile.

use crate::limits::stopped_sleeper;
use compute_host::{Center, NodeConfig, shared::sandbox::Limits};
use std::time::{Duration, Instant};
use testkit::{
    DirNode, ModuleDir, built_module, center, eventually, increase_module, nosy_module, print_goal,
    queue_of, ready_messages,
};

/// Requests of each function the node takes at once, and instances in
/// its pool: as in the case reported, `--prefetch 32`.
const PREFETCH: u16 = 32;
/// How long a flooding sleeper holds its instance.
const SLEEPER_WALL_TIME: Duration = Duration::from_secs(2);

/// Latencies of `count` calls of `increase`, `in_flight` at a time,
/// sorted.
async fn latencies(center: &Center, count: usize, in_flight: usize) -> Vec<Duration> {
    let workers = (0..in_flight).map(|worker| {
        let center = center.clone();
        tokio::spawn(async move {
            let mut took = Vec::new();
            for n in (worker..count).step_by(in_flight) {
                let started = Instant::now();
                let reply = center.call(n.to_string()).await.expect("increase answers");
                took.push(started.elapsed());
                assert_eq!(reply.body, (n + 1).to_string().as_bytes());
            }
            took
        })
    });
    let mut all: Vec<Duration> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flat_map(|took| took.expect("a caller"))
        .collect();
    all.sort();
    all
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

/// A node serves `nosy` and `increase` with `--prefetch 32`. `nosy` is
/// flooded with requests that sleep until the wall-clock limit stops
/// them; `increase` still finds instances free and answers as fast as it
/// did alone, instead of waiting for the sleepers (before: p99 1.95 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_function_leaves_instances_for_the_others() {
    let dir = ModuleDir::empty();
    std::fs::copy(nosy_module(), dir.join("nosy.wasm")).unwrap();
    std::fs::copy(increase_module(), dir.join("increase.wasm")).unwrap();
    let node = DirNode::start_with(
        &dir.path,
        DirNode::new_prefix(),
        ["nosy", "increase"],
        |config| NodeConfig {
            prefetch: PREFETCH,
            limits: Limits {
                wall_timeout: SLEEPER_WALL_TIME,
                ..Limits::default()
            },
            ..config
        },
    )
    .await;
    let nosy = center(&node.queue("nosy"), Duration::from_secs(60)).await;
    let increase = center(&node.queue("increase"), Duration::from_secs(30)).await;
    let alone = latencies(&increase, 400, 4).await;

    // Twice what the node takes at once: the node holds 32, 32 wait in
    // the queue until the first sleepers are stopped.
    let flood = 2 * u32::from(PREFETCH);
    let sleepers = tokio::spawn(async move {
        futures_util::future::join_all((0..flood).map(|_| stopped_sleeper(&nosy))).await;
        nosy
    });
    eventually(
        "the node holds as many sleepers as it takes at once",
        Duration::from_secs(10),
        || async {
            (ready_messages(&node.queue("nosy")).await == flood - u32::from(PREFETCH)).then_some(())
        },
    )
    .await;
    let flooded = latencies(&increase, 400, 4).await;
    let flood_lasted = !sleepers.is_finished();

    let (alone_p99, flooded_p99) = (p99(&alone), p99(&flooded));
    println!(
        "increase alone: p50 {:?}, p99 {alone_p99:?}",
        alone[alone.len() / 2]
    );
    println!(
        "increase beside {flood} sleepers of nosy: p50 {:?}, p99 {flooded_p99:?}",
        flooded[flooded.len() / 2]
    );
    let ratio = flooded_p99.as_secs_f64() / alone_p99.as_secs_f64();
    print_goal("p99 beside the flood / p99 alone", ratio, "<=", 10.0);
    print_goal(
        "p99 beside the flood, ms",
        flooded_p99.as_secs_f64() * 1e3,
        "<=",
        100.0,
    );
    assert!(
        flood_lasted,
        "the flood ended before increase was measured under it"
    );
    // A starved call waits for a sleeper to be stopped; with the tests
    // running in parallel on two cores, the figures above are the goal,
    // this is the line no fair share crosses.
    assert!(
        flooded_p99 < SLEEPER_WALL_TIME / 2,
        "increase waited for nosy's sleepers: p99 {flooded_p99:?}"
    );

    let nosy = sleepers.await.unwrap();
    nosy.close().await;
    increase.close().await;
    node.stop().await;
}

/// A directory with a Python module, seconds to compile, and a Rust one:
/// the Rust function answers while the Python one still compiles, rather
/// than once every module has (before: 13.9 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_is_served_as_soon_as_it_compiles() {
    let dir = ModuleDir::empty();
    std::fs::copy(built_module("increase-py"), dir.join("increase-py.wasm")).unwrap();
    std::fs::copy(increase_module(), dir.join("increase.wasm")).unwrap();
    let prefix = DirNode::new_prefix();
    let started = Instant::now();
    let starting = tokio::spawn({
        let (dir, prefix) = (dir.path.clone(), prefix.clone());
        async move {
            // No compile cache: the Python module compiles for seconds.
            DirNode::start_with(&dir, prefix, ["increase-py", "increase"], |config| {
                NodeConfig {
                    compile_cache: None,
                    ..config
                }
            })
            .await
        }
    });

    let increase = center(&queue_of(&prefix, "increase"), Duration::from_secs(5)).await;
    eventually("increase answers", Duration::from_secs(60), || async {
        increase.call("41").await.ok().map(|reply| {
            assert_eq!(reply.body, b"42");
        })
    })
    .await;
    let answered = started.elapsed();
    let before_python = !starting.is_finished();
    let node = starting.await.unwrap();
    let all = started.elapsed();
    println!("increase answered {answered:?} after start; every module served after {all:?}");
    print_goal(
        "increase answered after start, s",
        answered.as_secs_f64(),
        "<=",
        1.0,
    );
    assert!(
        before_python,
        "increase answered only once the Python module had compiled too"
    );
    assert_eq!(node.serving.len(), 2, "{:?}", node.serving);
    increase.close().await;
    node.stop().await;
}
