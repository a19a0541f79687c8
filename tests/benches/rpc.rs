//! Our node and center against the bare broker round trip.
//!
//! In one run, on the local broker: a bare lapin echo server and client
//! (`bare_echo_server.rs`, and `BareClient` below: no WebAssembly, no
//! confirms) against our `compute` node with `modules/increase.wasm` and
//! our `Center`: with the default modes (the node acks on publish, the
//! center publishes without confirms), with confirms on both sides (the
//! node `--ack-mode on-confirm`, the center `confirms`), and with direct
//! reply-to; and the bare pair again, its requests and replies carrying
//! what ours carry (`Wire::OURS`), so that what those properties cost the
//! broker and the client shows apart from our code. The servers run as
//! processes of their own, so each one's CPU time is its own. For K = 1,
//! 16 and 128 calls in flight, the variants alternate (A B C … A B C …)
//! for several rounds, and the table gives the median round of each:
//! calls/s, p50 and p99 latency, CPU seconds of the server, the client
//! and the broker, and ours/bare; then, per call,
//! each server's CPU time, wakeups (voluntary context switches), times
//! preempted and moves to another CPU, which `perf stat -e
//! context-switches,cpu-migrations -p PID` counts the same way.
//!
//! Then batches: `Center::call_batch` of 100 inputs, 16 batches in flight,
//! alternating with the bare echo's single calls at K = 128, every result
//! checked by value; and the `center` program as a user runs it,
//! `seq 1 1000000 | center --batch 100 --concurrency 16`, every line of
//! its output checked by value, with its peak RSS beside that of a run a
//! tenth the size. Last, the guest call alone, through a fresh instance as
//! the node runs it, and the node's peak RSS.
//!
//! Run with `cargo bench -p integration --bench rpc` (needs the broker);
//! `cargo bench -p integration --bench rpc -- guest` runs only the guest
//! call. `RPC_ROUNDS` sets the rounds (3 by default); `RPC_WIRE_PARTS=1`
//! adds a bare pair for each part of our wire alone (`Wire::PARTS`). Over
//! TLS, give an `amqps://` `AMQP_URL` whose query names the CA
//! (`cacertfile=`): every server and client here connects through it.

use compute_host::{Center, CenterOptions, Limits, ReplyMode, Sandbox, shared::wire};
use futures_util::{StreamExt as _, stream};
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
};
use std::{
    collections::HashMap,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use testkit::{
    ServerProcess, Switches, ThreadSwitches, amqp_url, center_command, cpu_seconds,
    increase_module, print_goal, unique_queue,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    process::Command,
    sync::oneshot,
};

/// The bare pair whose requests and replies carry what ours do.
const BARE_OUR_WIRE: &str = "bare, our wire's properties";
/// Rounds of each load, unless `RPC_ROUNDS` says otherwise.
const ROUNDS: usize = 3;
/// (calls in flight, calls per round)
const LOADS: [(usize, usize); 3] = [(1, 2000), (16, 20_000), (128, 20_000)];
/// Inputs per batch, batches in flight, and inputs per round.
const BATCH: (usize, usize, usize) = (100, 16, 100_000);
/// Inputs of the `center` program's big run; its small run has a tenth.
const MILLION: usize = 1_000_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|arg| arg == "guest") {
        guest_call_micros().await;
        return;
    }
    let url = amqp_url();
    let our_queue = unique_queue("bench-ours");
    let confirmed_queue = unique_queue("bench-confirmed");
    let bare = BarePair::start(&url, Wire::PLAIN).await;
    let bare_wire = BarePair::start(&url, Wire::OURS).await;
    // Each part of our wire alone, to say what each costs.
    let mut wire_parts = Vec::new();
    if std::env::var("RPC_WIRE_PARTS").is_ok_and(|parts| parts == "1") {
        for (part, wire) in Wire::PARTS {
            let name = format!("bare, {part} only");
            wire_parts.push((part, name, BarePair::start(&url, wire).await));
        }
    }
    let mut our_server = ServerProcess::node(&our_queue, &increase_module(), &[]).await;
    let mut confirmed_server = ServerProcess::node(
        &confirmed_queue,
        &increase_module(),
        &["--ack-mode", "on-confirm"],
    )
    .await;

    let center = |queue: &str, reply_mode, confirms| {
        let options = CenterOptions {
            queue: queue.to_owned(),
            reply_mode,
            confirms,
            ..CenterOptions::default()
        };
        Center::connect_with(&url, options)
    };
    let ours = center(&our_queue, ReplyMode::Queue, false).await.unwrap();
    let confirmed = center(&confirmed_queue, ReplyMode::Queue, true)
        .await
        .unwrap();
    let direct = center(&our_queue, ReplyMode::Direct, false).await.unwrap();
    // Another build of the node, to measure a change against in the same
    // run, by turns.
    let baseline_queue = unique_queue("bench-baseline");
    let mut baseline_server = match std::env::var_os("RPC_BASELINE_NODE") {
        Some(binary) => Some(
            ServerProcess::node_built_at(
                Path::new(&binary),
                &baseline_queue,
                &increase_module(),
                &[],
            )
            .await,
        ),
        None => None,
    };
    let baseline_center = match &baseline_server {
        Some(_) => Some(
            center(&baseline_queue, ReplyMode::Queue, false)
                .await
                .unwrap(),
        ),
        None => None,
    };

    let mut variants: Vec<(&str, &ServerProcess, Client)> = vec![
        ("bare lapin echo", &bare.server, Client::Bare(&bare.client)),
        (
            "ours, on-publish (default)",
            &our_server,
            Client::Ours(&ours),
        ),
        (
            "ours, on-confirm + confirms",
            &confirmed_server,
            Client::Ours(&confirmed),
        ),
        ("ours, direct reply-to", &our_server, Client::Ours(&direct)),
        (
            BARE_OUR_WIRE,
            &bare_wire.server,
            Client::Bare(&bare_wire.client),
        ),
    ];
    let wire_index = variants.len() - 1;
    let parts_from = variants.len();
    for (_, name, pair) in &wire_parts {
        variants.push((name, &pair.server, Client::Bare(&pair.client)));
    }
    if let (Some(server), Some(center)) = (&baseline_server, &baseline_center) {
        variants.push(("RPC_BASELINE_NODE", server, Client::Ours(center)));
    }
    // Warm up: connections, the node's code paths, the broker's queues.
    for (_, _, client) in &variants {
        client.run(16, 2000).await;
    }

    let broker = testkit::broker_pid(&url).map(|pid| pid.to_string());
    let rounds = std::env::var("RPC_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(ROUNDS);
    println!(
        "{rounds} rounds, the variants alternating within each; each figure is the median round"
    );
    let mut ratios_summary = Vec::new();
    let mut cpu_summary = Vec::new();
    let mut wire_summary = Vec::new();
    for (in_flight, calls) in LOADS {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); variants.len()];
        for _ in 0..rounds {
            for (index, (_, server, client)) in variants.iter().enumerate() {
                let run = Run::measure(server, broker.as_deref(), calls, || {
                    client.run(in_flight, calls)
                })
                .await;
                runs[index].push(run);
            }
        }
        println!();
        println!("K = {in_flight}, {calls} calls a round:");
        print_header();
        let baseline = median_run(&runs[0]);
        for ((name, _, _), runs) in variants.iter().zip(&runs) {
            median_run(runs).print(name, &baseline);
        }
        println!("per call, each server:");
        print_per_call_header();
        let per_call: Vec<PerCall> = runs
            .iter()
            .map(|runs| median_per_call(runs, calls))
            .collect();
        for ((name, _, _), per_call) in variants.iter().zip(&per_call) {
            per_call.print(name);
        }
        let ours = median_run(&runs[1]);
        ratios_summary.push((
            in_flight,
            ours.rate / baseline.rate,
            ours.p50.as_secs_f64() / baseline.p50.as_secs_f64(),
        ));
        cpu_summary.push((in_flight, per_call[1].cpu_micros, per_call[0].cpu_micros));
        let over_bare = |index: usize| median_run(&runs[index]).rate / baseline.rate;
        let parts: Vec<f64> = (parts_from..parts_from + wire_parts.len())
            .map(over_bare)
            .collect();
        wire_summary.push((in_flight, over_bare(wire_index), parts));
    }

    let (size, batches_in_flight, inputs) = BATCH;
    let mut bare_runs = Vec::new();
    let mut batch_runs = Vec::new();
    for _ in 0..rounds {
        let bare_client = Client::Bare(&bare.client);
        bare_runs.push(
            Run::measure(&bare.server, broker.as_deref(), 20_000, || {
                bare_client.run(128, 20_000)
            })
            .await,
        );
        batch_runs.push(
            Run::measure(&our_server, broker.as_deref(), inputs, || {
                run_batches(&ours, size, batches_in_flight, inputs)
            })
            .await,
        );
    }
    println!();
    println!(
        "batches of {size}, {batches_in_flight} in flight, {inputs} inputs a round, against single calls at K = 128 (latency: per batch):"
    );
    print_header();
    let bare_single = median_run(&bare_runs);
    bare_single.print("bare lapin echo, single", &bare_single);
    let batched = median_run(&batch_runs);
    batched.print("ours, batches", &bare_single);

    println!();
    let small = center_program(&our_queue, MILLION / 10).await;
    let big = center_program(&our_queue, MILLION).await;

    println!();
    let per_call = guest_call_micros().await;
    let rss = our_server.peak_rss_mib();
    println!("goals:");
    for (in_flight, throughput, latency) in ratios_summary {
        match in_flight {
            128 => print_goal("K=128 throughput, ours/bare", throughput, ">=", 0.9),
            16 => print_goal("K=16 throughput, ours/bare", throughput, ">=", 0.9),
            _ => print_goal("K=1 p50 latency, ours/bare", latency, "<=", 1.1),
        }
    }
    for (in_flight, ours, bare) in cpu_summary {
        if in_flight > 1 {
            print_goal(
                &format!("K={in_flight} node CPU per call - bare's - guest call, us"),
                ours - bare - per_call,
                "<=",
                5.0,
            );
        }
    }
    print_goal(
        "batches of 100: inputs/s over bare single calls/s",
        batched.rate / bare_single.rate,
        ">=",
        5.0,
    );
    print_goal("batches of 100: inputs/s", batched.rate, ">=", 150_000.0);
    print_goal(
        "seq 1 1000000 | center --batch 100: calls/s",
        big.rate,
        ">=",
        100_000.0,
    );
    print_goal(
        "center peak RSS, 1,000,000 inputs over 100,000",
        big.peak_rss_mib / small.peak_rss_mib,
        "<=",
        1.2,
    );
    print_goal(
        "guest call through a fresh instance, us",
        per_call,
        "<=",
        6.0,
    );
    print_goal("node peak RSS, MiB", rss, "<=", 32.0);
    println!(
        "what our wire's properties cost the bare pair, not a goal (throughput, bare with them / bare):"
    );
    for (in_flight, all, parts) in wire_summary {
        let each: Vec<String> = wire_parts
            .iter()
            .zip(parts)
            .map(|((part, _, _), ratio)| format!("{part} {ratio:.2}"))
            .collect();
        if each.is_empty() {
            println!("  K={in_flight:<4} {all:.2}");
        } else {
            println!(
                "  K={in_flight:<4} {all:.2}; each alone: {}",
                each.join(", ")
            );
        }
    }

    ours.close().await;
    confirmed.close().await;
    direct.close().await;
    if let Some(center) = baseline_center {
        center.close().await;
    }
    bare.stop().await;
    bare_wire.stop().await;
    for (_, _, pair) in wire_parts {
        pair.stop().await;
    }
    our_server.kill().await;
    confirmed_server.kill().await;
    if let Some(server) = &mut baseline_server {
        server.kill().await;
    }
    for queue in [&our_queue, &confirmed_queue, &baseline_queue] {
        testkit::delete_queue(queue).await;
    }
}

fn print_header() {
    println!(
        "  {:<28} {:>9} {:>9} {:>9} {:>11} {:>11} {:>11} {:>10}",
        "variant",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "server CPU",
        "client CPU",
        "broker CPU",
        "ours/bare"
    );
}

fn print_per_call_header() {
    println!(
        "  {:<28} {:>9} {:>9} {:>11} {:>9}",
        "variant", "CPU us", "wakeups", "preempted", "migrated"
    );
}

/// What a server spent on each call of a round.
struct PerCall {
    cpu_micros: f64,
    wakeups: f64,
    preemptions: f64,
    migrations: f64,
}

impl PerCall {
    fn print(&self, name: &str) {
        println!(
            "  {:<28} {:>9.1} {:>9.2} {:>11.2} {:>9.2}",
            name, self.cpu_micros, self.wakeups, self.preemptions, self.migrations
        );
    }
}

/// The round with the median server CPU per call, of `calls` calls each.
fn median_per_call(runs: &[Run], calls: usize) -> PerCall {
    let mut runs = runs.to_vec();
    runs.sort_by(|a, b| a.server_cpu.total_cmp(&b.server_cpu));
    let run = &runs[runs.len() / 2];
    let per_call = |count: u64| count as f64 / calls as f64;
    PerCall {
        cpu_micros: run.server_cpu * 1e6 / calls as f64,
        wakeups: per_call(run.server_switches.wakeups),
        preemptions: per_call(run.server_switches.preemptions),
        migrations: per_call(run.server_switches.migrations),
    }
}

/// `inputs` inputs in batches of `size`, `in_flight` batches at once,
/// each result checked by value; the latency of each batch.
async fn run_batches(
    center: &Center,
    size: usize,
    in_flight: usize,
    inputs: usize,
) -> Vec<Duration> {
    stream::iter((0..inputs).step_by(size))
        .map(|first| async move {
            let batch: Vec<String> = (first..first + size).map(|n| n.to_string()).collect();
            let started = Instant::now();
            let results = center.call_batch(&batch).await.expect("the batch call");
            let latency = started.elapsed();
            for (n, result) in (first..).zip(results) {
                let reply = result.expect("each input succeeds");
                assert_eq!(reply.body, (n + 1).to_string().as_bytes());
            }
            latency
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

/// What a run of the `center` program measured.
struct ProgramRun {
    rate: f64,
    peak_rss_mib: f64,
}

/// `seq 1 N | center --batch 100 --concurrency 16` against `queue`, as a
/// user runs it, process start included; every output line checked.
async fn center_program(queue: &str, inputs: usize) -> ProgramRun {
    let (size, in_flight, _) = BATCH;
    let started = Instant::now();
    let mut child = center_command()
        .args(["--amqp-url", &amqp_url(), "--queue", queue])
        .args(["--batch", &size.to_string()])
        .args(["--concurrency", &in_flight.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("center starts");
    let pid = child.id().expect("center runs").to_string();
    let mut stdin = child.stdin.take().unwrap();
    let feed = tokio::spawn(async move {
        let mut text = String::new();
        for n in 1..=inputs {
            text.push_str(&n.to_string());
            text.push('\n');
            if text.len() > 64 << 10 {
                stdin.write_all(text.as_bytes()).await.unwrap();
                text.clear();
            }
        }
        stdin.write_all(text.as_bytes()).await.unwrap();
    });
    let peak = Arc::new(Mutex::new(0.0));
    let watch = tokio::spawn({
        let peak = peak.clone();
        async move {
            while let Some(rss) = testkit::peak_rss_mib(&pid) {
                *peak.lock().unwrap() = rss;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut n = 0;
    while let Some(line) = lines.next_line().await.unwrap() {
        n += 1;
        assert_eq!(line, format!("increase({n}) = {}", n + 1));
    }
    assert!(child.wait().await.unwrap().success());
    let took = started.elapsed();
    assert_eq!(n, inputs);
    feed.await.unwrap();
    watch.abort();
    let run = ProgramRun {
        rate: inputs as f64 / took.as_secs_f64(),
        peak_rss_mib: *peak.lock().unwrap(),
    };
    println!(
        "seq 1 {inputs} | center --batch {size} --concurrency {in_flight}: {:.1} s, {:.0} calls/s, center peak RSS {:.1} MiB, every line right",
        took.as_secs_f64(),
        run.rate,
        run.peak_rss_mib
    );
    run
}

/// The guest call alone: `increase("41")` in a fresh instance per call,
/// as the node runs each request; the median of 10 batches of 2000, in µs.
async fn guest_call_micros() -> f64 {
    let module = Sandbox::new(Limits::default())
        .unwrap()
        .load(&increase_module())
        .unwrap();
    let mut batches = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        for _ in 0..2000 {
            assert_eq!(module.compute(b"41").await.unwrap(), b"42");
        }
        batches.push(started.elapsed().as_secs_f64() * 1e6 / 2000.0);
    }
    batches.sort_by(f64::total_cmp);
    println!(
        "guest call through a fresh instance: median {:.2} us, best {:.2} us (10 batches of 2000)",
        batches[5], batches[0]
    );
    batches[5]
}

#[derive(Clone)]
struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
    server_cpu: f64,
    /// The server's context switches and migrations, all threads.
    server_switches: ThreadSwitches,
    client_cpu: f64,
    /// 0 when the broker is not a process on this machine.
    broker_cpu: f64,
}

impl Run {
    /// Runs `calls` calls through `run`, which returns their latencies,
    /// and measures it against `server` and the broker.
    async fn measure<F: Future<Output = Vec<Duration>>>(
        server: &ServerProcess,
        broker: Option<&str>,
        calls: usize,
        run: impl FnOnce() -> F,
    ) -> Run {
        let server_cpu = server.cpu_seconds();
        let server_switches = Switches::of(server.pid());
        let client_cpu = cpu_seconds("self");
        let broker_cpu = broker.map_or(0.0, cpu_seconds);
        let started = Instant::now();
        let mut latencies = run().await;
        let elapsed = started.elapsed();
        latencies.sort();
        Run {
            rate: calls as f64 / elapsed.as_secs_f64(),
            p50: latencies[latencies.len() / 2],
            p99: latencies[latencies.len() * 99 / 100],
            server_cpu: server.cpu_seconds() - server_cpu,
            server_switches: Switches::of(server.pid()).since(&server_switches),
            client_cpu: cpu_seconds("self") - client_cpu,
            broker_cpu: broker.map_or(0.0, cpu_seconds) - broker_cpu,
        }
    }

    fn print(&self, name: &str, baseline: &Run) {
        println!(
            "  {:<28} {:>9.0} {:>9.3} {:>9.3} {:>10.2}s {:>10.2}s {:>10.2}s {:>10.2}",
            name,
            self.rate,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.server_cpu,
            self.client_cpu,
            self.broker_cpu,
            self.rate / baseline.rate
        );
    }
}

/// The round with the median throughput.
fn median_run(runs: &[Run]) -> Run {
    let mut runs = runs.to_vec();
    runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    runs[runs.len() / 2].clone()
}

enum Client<'a> {
    Bare(&'a BareClient),
    Ours(&'a Center),
}

impl Client<'_> {
    /// Makes `calls` calls with `in_flight` at once; the latency of each.
    async fn run(&self, in_flight: usize, calls: usize) -> Vec<Duration> {
        stream::iter(0..calls)
            .map(|n| async move {
                let started = Instant::now();
                let input = n.to_string();
                let reply = match self {
                    Client::Bare(client) => client.call(&input).await,
                    Client::Ours(center) => center.call(&input).await.expect("call succeeds").body,
                };
                debug_assert_eq!(reply, (n + 1).to_string().as_bytes());
                started.elapsed()
            })
            .buffer_unordered(in_flight)
            .collect()
            .await
    }
}

/// A server's CPU time and memory, read from /proc.
trait Measured {
    fn cpu_seconds(&self) -> f64;
    fn peak_rss_mib(&self) -> f64;
}

impl Measured for ServerProcess {
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    fn peak_rss_mib(&self) -> f64 {
        testkit::peak_rss_mib(self.pid()).expect("VmHWM in /proc/PID/status")
    }
}

/// The plainest RPC client on lapin: one connection, one exclusive reply
/// queue consumed with no-ack, a map of waiting calls by correlation id,
/// requests published without confirms.
struct BareClient {
    _connection: Connection,
    channel: Channel,
    queue: ShortString,
    reply_queue: ShortString,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>,
    wire: Wire,
}

/// What a bare client's requests, and its server's replies, carry
/// besides `reply_to` and `correlation_id`: each part of what our center's
/// and node's carry, or none.
#[derive(Clone, Copy)]
struct Wire {
    /// A request's `expiration` and `timestamp`.
    expiry: bool,
    /// A reply's `x-function` and `x-module-digest`.
    reply_headers: bool,
    /// Requests and replies published `mandatory`.
    mandatory: bool,
}

impl Wire {
    const PLAIN: Wire = Wire {
        expiry: false,
        reply_headers: false,
        mandatory: false,
    };
    const OURS: Wire = Wire {
        expiry: true,
        reply_headers: true,
        mandatory: true,
    };
    /// Each part alone, as `RPC_WIRE_PARTS` measures them.
    const PARTS: [(&str, Wire); 3] = [
        (
            "request expiry",
            Wire {
                expiry: true,
                ..Wire::PLAIN
            },
        ),
        (
            "reply headers",
            Wire {
                reply_headers: true,
                ..Wire::PLAIN
            },
        ),
        (
            "mandatory",
            Wire {
                mandatory: true,
                ..Wire::PLAIN
            },
        ),
    ];

    /// The bare echo server's flags for its side of this wire.
    fn server_flags(self) -> impl Iterator<Item = &'static str> {
        let headers = self.reply_headers.then_some("--reply-headers");
        let mandatory = self.mandatory.then_some("--mandatory");
        headers.into_iter().chain(mandatory)
    }
}

/// A bare echo server, as a process of its own, and its client.
struct BarePair {
    server: ServerProcess,
    client: BareClient,
    queue: String,
}

impl BarePair {
    async fn start(url: &str, wire: Wire) -> Self {
        let queue = unique_queue("bench-bare");
        let server = ServerProcess::start(
            Command::new(env!("CARGO_BIN_EXE_bare-echo-server"))
                .args([&queue, url])
                .args(wire.server_flags()),
            "ready",
        )
        .await;
        let client = BareClient::connect(url, &queue, wire).await;
        BarePair {
            server,
            client,
            queue,
        }
    }

    async fn stop(mut self) {
        self.server.kill().await;
        testkit::delete_queue(&self.queue).await;
    }
}

impl BareClient {
    async fn connect(url: &str, queue: &str, wire: Wire) -> Self {
        let connection = compute_host::shared::amqp::connect(url).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        let reply_queue = channel
            .queue_declare("".into(), exclusive, FieldTable::default())
            .await
            .unwrap()
            .name()
            .clone();
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let mut replies = channel
            .basic_consume(
                reply_queue.clone(),
                "".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
            .unwrap();
        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>> = Arc::default();
        tokio::spawn({
            let pending = pending.clone();
            async move {
                while let Some(Ok(reply)) = replies.next().await {
                    let waiter = reply
                        .properties
                        .correlation_id()
                        .as_ref()
                        .and_then(|id| pending.lock().unwrap().remove(id.as_str()));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(reply.data);
                    }
                }
            }
        });
        BareClient {
            _connection: connection,
            channel,
            queue: queue.into(),
            reply_queue,
            pending,
            wire,
        }
    }

    async fn call(&self, input: &str) -> Vec<u8> {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let (sender, receiver) = oneshot::channel();
        self.pending
            .lock()
            .unwrap()
            .insert(correlation_id.clone(), sender);
        let properties = BasicProperties::default()
            .with_reply_to(self.reply_queue.clone())
            .with_correlation_id(correlation_id.into());
        let properties = if self.wire.expiry {
            wire::with_expiry(properties, CenterOptions::default().timeout)
        } else {
            properties
        };
        let options = BasicPublishOptions {
            mandatory: self.wire.mandatory,
            ..BasicPublishOptions::default()
        };
        self.channel
            .basic_publish(
                "".into(),
                self.queue.clone(),
                options,
                input.as_bytes(),
                properties,
            )
            .await
            .unwrap();
        receiver.await.unwrap()
    }
}
