//! Live swaps, measured: how long from the rename of a new module version
//! to the first reply that carries its digest, and what swapping costs a
//! node under load.
//!
//! Run with `cargo bench -p integration --bench swap` (needs the broker,
//! like the tests). Prints figures; asserts only that nothing failed.

use compute_host::{Center, shared::sandbox::digest};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use testkit::{ModuleDir, RunningNode, built_module, center, unique_queue};

const SWAPS: usize = 20;
const IN_FLIGHT: usize = 64;
const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;
const SWAP_EVERY: Duration = Duration::from_millis(250);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The node's own log (`RUST_LOG=info` shows each swap's compile time).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .init();
    }
    let dir = ModuleDir::with_working_copy(&built_module("increase"));
    let node = RunningNode::start_module(&unique_queue("bench-swap"), &dir.working_copy()).await;
    let center = center(&node.queue, Duration::from_secs(30)).await;
    let mut versions = Versions::default();

    println!("swap latency, rename to first reply with the new digest, {SWAPS} swaps each:");
    let fresh = swap_latencies(&center, &dir, || versions.fresh()).await;
    print_latencies("  new versions (compiled on arrival)", fresh);
    let mut flip = false;
    let known = [
        std::fs::read(built_module("increase")).unwrap(),
        std::fs::read(built_module("double")).unwrap(),
    ];
    let kept = swap_latencies(&center, &dir, || {
        flip = !flip;
        known[usize::from(flip)].clone()
    })
    .await;
    print_latencies("  versions served before (kept compiled)", kept);

    println!(
        "throughput with {IN_FLIGHT} calls in flight, {ROUNDS} rounds of {ROUND:?} each, a swap every {SWAP_EVERY:?}:"
    );
    let mut alternate = || {
        flip = !flip;
        known[usize::from(flip)].clone()
    };
    let (mut steady, mut swapping, mut compiling) =
        (Load::default(), Load::default(), Load::default());
    for round in 1..=ROUNDS {
        let a = run_load(&center, &dir, None).await;
        let b = run_load(&center, &dir, Some(&mut alternate)).await;
        let c = run_load(&center, &dir, Some(&mut || versions.fresh())).await;
        println!(
            "  round {round}: no swaps {:>6.0} calls/s | increase<->double {:>6.0} calls/s ({} swaps) | a new version each time {:>6.0} calls/s ({} swaps)",
            a.rate(),
            b.rate(),
            b.swaps,
            c.rate(),
            c.swaps
        );
        steady.add(&a);
        swapping.add(&b);
        compiling.add(&c);
    }
    println!(
        "  total: no swaps {:.0} calls/s; increase<->double {:.0} calls/s, ratio {:.3}; a new version each time {:.0} calls/s, ratio {:.3}",
        steady.rate(),
        swapping.rate(),
        swapping.rate() / steady.rate(),
        compiling.rate(),
        compiling.rate() / steady.rate(),
    );
    println!(
        "  failed calls: {} without swaps, {} and {} with",
        steady.failed, swapping.failed, compiling.failed
    );
    assert_eq!(
        steady.failed + swapping.failed + compiling.failed,
        0,
        "calls failed"
    );

    center.close().await;
    node.stop().await;
}

/// Distinct versions of the two functions: the same code with a custom
/// section that makes each digest new, so each must be compiled.
#[derive(Default)]
struct Versions {
    made: u32,
}

impl Versions {
    fn fresh(&mut self) -> Vec<u8> {
        self.made += 1;
        let base = if self.made % 2 == 1 {
            "double"
        } else {
            "increase"
        };
        let mut bytes = std::fs::read(built_module(base)).unwrap();
        let name = b"bench-version";
        let payload = self.made.to_le_bytes();
        // A custom section: id 0, size, name length, name, payload. Sizes
        // stay under 128, so each LEB128 is one byte.
        bytes.extend([0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
        bytes.extend(name);
        bytes.extend(payload);
        bytes
    }
}

async fn swap_latencies(
    center: &Center,
    dir: &ModuleDir,
    mut next: impl FnMut() -> Vec<u8>,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(SWAPS);
    for _ in 0..SWAPS {
        let bytes = next();
        let expected = digest(&bytes);
        let renamed = Instant::now();
        dir.publish(&bytes);
        loop {
            let reply = center.call("1").await.expect("calls succeed during swaps");
            if reply.origin.module.as_deref() == Some(expected.as_str()) {
                break;
            }
            assert!(
                renamed.elapsed() < Duration::from_secs(10),
                "version not served"
            );
        }
        latencies.push(renamed.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies
}

fn print_latencies(label: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: median {:.1} ms, max {:.1} ms, min {:.1} ms",
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1]),
        ms(latencies[0])
    );
}

#[derive(Default)]
struct Load {
    calls: u64,
    failed: u64,
    swaps: u64,
    elapsed: Duration,
}

impl Load {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn add(&mut self, other: &Load) {
        self.calls += other.calls;
        self.failed += other.failed;
        self.swaps += other.swaps;
        self.elapsed += other.elapsed;
    }
}

/// `IN_FLIGHT` calls for `ROUND`, publishing the next version every
/// `SWAP_EVERY` when given one. A reply counts as good when it is n+1 or
/// 2n.
async fn run_load(
    center: &Center,
    dir: &ModuleDir,
    mut next_version: Option<&mut dyn FnMut() -> Vec<u8>>,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let next = Arc::new(AtomicU64::new(2));
    let started = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (center, stop, calls, failed, next) = (
                center.clone(),
                stop.clone(),
                calls.clone(),
                failed.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed) as i64;
                    let good = match center.call(n.to_string()).await {
                        Ok(reply) => {
                            reply.body == (n + 1).to_string().as_bytes()
                                || reply.body == (2 * n).to_string().as_bytes()
                        }
                        Err(_) => false,
                    };
                    calls.fetch_add(1, Ordering::Relaxed);
                    if !good {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut swaps = 0;
    while started.elapsed() < ROUND {
        match next_version.as_mut() {
            Some(next) => {
                tokio::time::sleep(SWAP_EVERY).await;
                dir.publish(&next());
                swaps += 1;
            }
            None => tokio::time::sleep(ROUND - started.elapsed()).await,
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    Load {
        calls: calls.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        swaps,
        elapsed: started.elapsed(),
    }
}
