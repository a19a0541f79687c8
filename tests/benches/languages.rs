//! `increase` in Rust, Python and JavaScript, measured side by side: the
//! module's size, its compile time cold and from the compile cache, one
//! call through a fresh instance (median, p99, and the page faults it
//! took), calls/s at K=128 through the broker, and the node's peak RSS
//! under that load. The Python and JavaScript nodes run under the limits
//! files beside their modules; the same modules without them, in the same
//! run, are the baseline those limits are compared with.
//!
//! Run with `cargo bench -p integration --bench languages` (needs the
//! broker, like the tests, and the modules `scripts/build-modules.sh`
//! builds). Prints figures and the goals; asserts only that every
//! call was answered right. `-- in-process` skips the broker part.

use compute_host::shared::sandbox::{CacheSettings, CompileCache, Limits, Sandbox};
use std::time::{Duration, Instant};
use testkit::{
    ModuleDir, ServerProcess, built_module, center, minor_faults, peak_rss_mib, print_goal,
    unique_queue,
};

const LANGUAGES: [(&str, &str); 3] = [
    ("Rust", "increase"),
    ("Python", "increase-py"),
    ("JavaScript", "increase-js"),
];
/// Calls through a fresh instance, one at a time, for median and p99.
const GUEST_CALLS: usize = 2000;
const IN_FLIGHT: usize = 128;
const BROKER_ROUND: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let in_process_only = std::env::args().any(|arg| arg == "in-process");
    let cache = ModuleDir::empty();
    let mut rows = Vec::new();
    for (language, name) in LANGUAGES {
        let module = built_module(name);
        let size = std::fs::metadata(&module)
            .unwrap_or_else(|_| {
                panic!(
                    "{} is missing: run scripts/build-modules.sh --all",
                    module.display()
                )
            })
            .len();
        let compiled = load_time(&module, &cache, true);
        let cached = load_time(&module, &cache, false);
        let (median, p99, faults) = guest_call(&module, &cache).await;
        let (rate, rss) = if in_process_only {
            (f64::NAN, f64::NAN)
        } else {
            through_the_broker(&module, &cache).await
        };
        let limits_file = module.with_extension("toml");
        if !in_process_only && limits_file.exists() {
            // The same bytes in a directory of their own, with no limits
            // file beside them: what the limits change.
            let bare = ModuleDir::empty();
            let copy = bare.join(module.file_name().unwrap());
            std::fs::copy(&module, &copy).unwrap();
            let (bare_rate, bare_rss) = through_the_broker(&copy, &cache).await;
            println!(
                "{language:<10} {name:<12} under {}: {rate:.0} calls/s and {rss:.0} MiB; without it: {bare_rate:.0} calls/s and {bare_rss:.0} MiB (calls/s x{:.2}, RSS x{:.2})",
                limits_file.display(),
                rate / bare_rate,
                rss / bare_rss,
            );
        }
        println!(
            "{language:<10} {name:<12} {:>6.1} MB | compile {:>7.0} ms | from the cache {:>5.0} ms | call median {:>7.1} us, p99 {:>7.1} us, {faults:>5.1} page faults | K={IN_FLIGHT} {rate:>7.0} calls/s | node peak RSS {rss:>5.0} MiB",
            size as f64 / 1e6,
            compiled.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            median,
            p99,
        );
        rows.push((language, cached, median, rate, rss));
    }
    println!("goals:");
    let rust_call = rows[0].2;
    for (language, cached, median, rate, rss) in &rows[1..] {
        print_goal(
            &format!("{language}: start from the cache, ms"),
            cached.as_secs_f64() * 1e3,
            "<=",
            200.0,
        );
        print_goal(
            &format!("{language}: call through a fresh instance, us"),
            *median,
            "<=",
            300.0,
        );
        print_goal(
            &format!("{language}: calls/s at K=128 through the broker"),
            *rate,
            ">=",
            2500.0,
        );
        print_goal(
            &format!("{language}: node peak RSS under that load, MiB"),
            *rss,
            "<=",
            256.0,
        );
    }
    println!(
        "  Rust call through a fresh instance: {rust_call:.2} us (compare with the rpc bench's guest line)"
    );
}

/// How long loading `module` into a new sandbox takes: compiling it
/// (into an empty cache) when `cold`, else from the cache warmed before.
fn load_time(module: &std::path::Path, cache: &ModuleDir, cold: bool) -> Duration {
    if cold {
        // Every entry goes, so this compiles.
        for entry in std::fs::read_dir(&cache.path).unwrap().flatten() {
            if entry
                .path()
                .extension()
                .is_some_and(|ext| ext == "compiled")
            {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
    let sandbox = sandbox(cache);
    let started = Instant::now();
    let loaded = sandbox.load(module).unwrap();
    assert_eq!(loaded.loaded().from_cache, !cold);
    started.elapsed()
}

fn sandbox(cache: &ModuleDir) -> Sandbox {
    let cache = CompileCache::open(&cache.path, CacheSettings::DEFAULT_MAX_BYTES).unwrap();
    Sandbox::new(Limits::default())
        .unwrap()
        .with_compile_cache(cache)
}

/// One call at a time through a fresh instance, as the node runs each
/// request: median and p99 in µs, and the page faults of this process per
/// call.
async fn guest_call(module: &std::path::Path, cache: &ModuleDir) -> (f64, f64, f64) {
    let module = sandbox(cache).load(module).unwrap();
    let mut micros = Vec::with_capacity(GUEST_CALLS);
    let mut faults_before = 0;
    for n in 0..GUEST_CALLS as i64 + 100 {
        if n == 100 {
            faults_before = minor_faults();
        }
        let started = Instant::now();
        let reply = module.compute(n.to_string().as_bytes()).await.unwrap();
        let took = started.elapsed();
        assert_eq!(reply, (n + 1).to_string().as_bytes());
        // The first 100 warm up the pool's slots.
        if n >= 100 {
            micros.push(took.as_secs_f64() * 1e6);
        }
    }
    let faults = (minor_faults() - faults_before) as f64 / GUEST_CALLS as f64;
    micros.sort_by(f64::total_cmp);
    (
        micros[micros.len() / 2],
        micros[micros.len() * 99 / 100],
        faults,
    )
}

/// A node serving `module` (loaded from the warm cache), under
/// [`IN_FLIGHT`] calls at a time for [`BROKER_ROUND`]: calls/s, and the
/// node's peak RSS.
async fn through_the_broker(module: &std::path::Path, cache: &ModuleDir) -> (f64, f64) {
    let queue = unique_queue("bench-languages");
    let cache_dir = cache.path.to_string_lossy().into_owned();
    let node = ServerProcess::node(&queue, module, &["--compile-cache", &cache_dir]).await;
    let center = center(&queue, Duration::from_secs(30)).await;
    let load = testkit::Load::steady(&center, IN_FLIGHT);
    tokio::time::sleep(BROKER_ROUND).await;
    let calls = load
        .finish(Duration::from_secs(60))
        .await
        .expect("the calls end");
    let tally = calls.increase_tally();
    tally.assert_all_answered();
    let rate = tally.replies as f64 / BROKER_ROUND.as_secs_f64();
    let rss = peak_rss_mib(node.pid()).expect("the node runs");
    (rate, rss)
}
