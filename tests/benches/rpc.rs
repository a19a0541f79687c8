//! Our node and center against the bare broker round trip.
//!
//! In one run, on the local broker: a bare lapin echo server and client
//! (`bare_echo_server.rs`, and `BareClient` below: no WebAssembly, no
//! confirms) against our `compute` node with `modules/increase.wasm` and
//! our `Center`, with its default reply queue and with direct reply-to.
//! Both servers run as processes of their own, so each one's CPU time is
//! its own. For K = 1, 16 and 128 calls in flight, the variants alternate
//! (A B C A B C ...) for several rounds, and the table gives the median
//! round of each: calls/s, p50 and p99 latency, CPU seconds of the server
//! and of the client, and ours/bare. Then the guest call alone, through a
//! fresh instance as the node runs it, and the node's peak RSS.
//!
//! Run with `cargo bench -p integration --bench rpc` (needs the broker);
//! `cargo bench -p integration --bench rpc -- guest` runs only the guest
//! call.

use compute_host::{Center, CenterOptions, Limits, ReplyMode, Sandbox};
use futures_util::{StreamExt as _, stream};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use testkit::{ServerProcess, amqp_url, increase_module, unique_queue};
use tokio::{process::Command, sync::oneshot};

const ROUNDS: usize = 3;
/// (calls in flight, calls per round)
const LOADS: [(usize, usize); 3] = [(1, 2000), (16, 20_000), (128, 20_000)];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|arg| arg == "guest") {
        guest_call_micros().await;
        return;
    }
    let url = amqp_url();
    let bare_queue = unique_queue("bench-bare");
    let our_queue = unique_queue("bench-ours");
    let mut bare_server = ServerProcess::start(
        Command::new(env!("CARGO_BIN_EXE_bare-echo-server")).args([&bare_queue, &url]),
        "ready",
    )
    .await;
    let mut our_server = ServerProcess::node(&our_queue, &increase_module(), &[]).await;

    let bare = BareClient::connect(&url, &bare_queue).await;
    let center = |reply_mode| {
        let options = CenterOptions {
            queue: our_queue.clone(),
            reply_mode,
            ..CenterOptions::default()
        };
        Center::connect_with(&url, options)
    };
    let ours = center(ReplyMode::Queue).await.unwrap();
    let direct = center(ReplyMode::Direct).await.unwrap();

    let variants: [(&str, &ServerProcess, Client); 3] = [
        ("bare lapin echo", &bare_server, Client::Bare(&bare)),
        ("ours (reply queue)", &our_server, Client::Ours(&ours)),
        ("ours (direct reply-to)", &our_server, Client::Ours(&direct)),
    ];
    // Warm up: connections, the node's code paths, the broker's queues.
    for (_, _, client) in &variants {
        client.run(16, 2000).await;
    }

    let broker = broker_pid();
    println!(
        "{ROUNDS} rounds, the variants alternating within each; each figure is the median round"
    );
    let mut ratios_summary = Vec::new();
    for (in_flight, calls) in LOADS {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); variants.len()];
        for _ in 0..ROUNDS {
            for (index, (_, server, client)) in variants.iter().enumerate() {
                let server_cpu = server.cpu_seconds();
                let client_cpu = cpu_seconds("self");
                let broker_cpu = broker.as_deref().map_or(0.0, cpu_seconds);
                let started = Instant::now();
                let mut latencies = client.run(in_flight, calls).await;
                let elapsed = started.elapsed();
                latencies.sort();
                runs[index].push(Run {
                    rate: calls as f64 / elapsed.as_secs_f64(),
                    p50: latencies[latencies.len() / 2],
                    p99: latencies[latencies.len() * 99 / 100],
                    server_cpu: server.cpu_seconds() - server_cpu,
                    client_cpu: cpu_seconds("self") - client_cpu,
                    broker_cpu: broker.as_deref().map_or(0.0, cpu_seconds) - broker_cpu,
                });
            }
        }
        println!();
        println!("K = {in_flight}, {calls} calls a round:");
        println!(
            "  {:<24} {:>9} {:>9} {:>9} {:>11} {:>11} {:>11} {:>10}",
            "variant",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "server CPU",
            "client CPU",
            "broker CPU",
            "ours/bare"
        );
        let baseline = median_run(&runs[0]);
        for ((name, _, _), runs) in variants.iter().zip(&runs) {
            let run = median_run(runs);
            println!(
                "  {:<24} {:>9.0} {:>9.3} {:>9.3} {:>10.2}s {:>10.2}s {:>10.2}s {:>10.2}",
                name,
                run.rate,
                run.p50.as_secs_f64() * 1e3,
                run.p99.as_secs_f64() * 1e3,
                run.server_cpu,
                run.client_cpu,
                run.broker_cpu,
                run.rate / baseline.rate
            );
        }
        let ours = median_run(&runs[1]);
        ratios_summary.push((
            in_flight,
            ours.rate / baseline.rate,
            ours.p50.as_secs_f64() / baseline.p50.as_secs_f64(),
        ));
    }

    println!();
    let per_call = guest_call_micros().await;
    let rss = our_server.peak_rss_mib();
    println!("goals:");
    for (in_flight, throughput, latency) in ratios_summary {
        match in_flight {
            128 => goal("K=128 throughput, ours/bare", throughput, ">=", 1.0),
            16 => goal("K=16 throughput, ours/bare", throughput, ">=", 0.95),
            _ => goal("K=1 p50 latency, ours/bare", latency, "<=", 1.1),
        }
    }
    goal(
        "guest call through a fresh instance, us",
        per_call,
        "<=",
        10.0,
    );
    goal("node peak RSS, MiB", rss, "<=", 64.0);

    ours.close().await;
    direct.close().await;
    bare_server.kill().await;
    our_server.kill().await;
    testkit::delete_queue(&bare_queue).await;
    testkit::delete_queue(&our_queue).await;
}

fn goal(what: &str, value: f64, relation: &str, target: f64) {
    let met = match relation {
        ">=" => value >= target,
        _ => value <= target,
    };
    println!(
        "  {what:<42} {value:>8.2}  (goal {relation} {target}) {}",
        if met { "met" } else { "NOT MET" }
    );
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
    client_cpu: f64,
    /// 0 when the broker is not a process on this machine.
    broker_cpu: f64,
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
        cpu_seconds(&self.pid().to_string())
    }

    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib / 1024.0
    }
}

/// The local RabbitMQ's process (the Erlang VM, `beam.smp`), if any.
fn broker_pid() -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == "beam.smp").then(|| entry.file_name().to_string_lossy().into_owned())
        })
}

/// User + system CPU seconds of process `pid` (`self` for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th of them.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf runs");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(100.0)
    })
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
}

impl BareClient {
    async fn connect(url: &str, queue: &str) -> Self {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap();
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
        self.channel
            .basic_publish(
                "".into(),
                self.queue.clone(),
                BasicPublishOptions::default(),
                input.as_bytes(),
                properties,
            )
            .await
            .unwrap();
        receiver.await.unwrap()
    }
}
