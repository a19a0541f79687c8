//! Which queue the node declares by default, chosen by measurement: our
//! node and `Center` on RabbitMQ 3.x's transient queue (the default
//! until RabbitMQ 4.3 refused it), against a durable classic queue and a
//! quorum queue on RabbitMQ 4.3 as upstream ships it, and the durable
//! classic queue on 3.x, in one run.
//!
//! Each variant is a node process of its own on its own broker and
//! queue, with a center as a user runs it (`--queue-type quorum` publishes
//! persistent requests and the node acks on confirm, as their defaults
//! do). For K = 1, 16 and 128 calls in flight the variants alternate for
//! several rounds; the table gives each one's median round: calls/s, p50
//! and p99 latency, and the CPU time per call of the node and of its
//! broker, and calls/s against 3.x's transient queue.
//!
//! Run with `AMQP_URL_4_3=$(scripts/rabbitmq.sh start 4.3) cargo bench
//! -p integration --bench queues` (the installed broker is the 3.x one,
//! or `AMQP_URL`).

use compute_host::{Center, CenterOptions};
use futures_util::{StreamExt as _, stream};
use lapin::options::QueueDeleteOptions;
use std::time::{Duration, Instant};
use testkit::{
    ServerProcess, amqp_url, compute_command, cpu_seconds, increase_module, unique_queue,
};

const ROUNDS: usize = 3;
/// (calls in flight, calls per round)
const LOADS: [(usize, usize); 3] = [(1, 1000), (16, 10_000), (128, 20_000)];

/// A queue type on a broker, as a user runs it.
struct Variant {
    name: &'static str,
    url: String,
    queue: String,
    node: ServerProcess,
    center: Center,
    broker: Option<u32>,
}

impl Variant {
    async fn start(name: &'static str, url: &str, queue_type: &str) -> Variant {
        let queue = unique_queue("bench-queues");
        let node = ServerProcess::compute(
            compute_command()
                .args(["--queue", &queue, "--amqp-url", url])
                .args(["--queue-type", queue_type])
                .arg("--module")
                .arg(increase_module()),
        )
        .await;
        let options = CenterOptions {
            queue: queue.clone(),
            persistent: queue_type == "quorum",
            ..CenterOptions::default()
        };
        let center = Center::connect_with(url, options)
            .await
            .expect("the center connects");
        Variant {
            name,
            url: url.to_owned(),
            queue,
            node,
            center,
            broker: testkit::broker_pid(url),
        }
    }

    /// `calls` calls, `in_flight` at once, measured.
    async fn run(&self, in_flight: usize, calls: usize) -> Run {
        let node_cpu = cpu_seconds(self.node.pid());
        let broker_cpu = self.broker.map_or(0.0, cpu_seconds);
        let started = Instant::now();
        let mut latencies: Vec<Duration> = stream::iter(0..calls)
            .map(|n| async move {
                let started = Instant::now();
                let reply = self
                    .center
                    .call(n.to_string())
                    .await
                    .expect("call succeeds");
                assert_eq!(reply.body, (n + 1).to_string().into_bytes());
                started.elapsed()
            })
            .buffer_unordered(in_flight)
            .collect()
            .await;
        let elapsed = started.elapsed();
        latencies.sort();
        let per_call = |seconds: f64| seconds / calls as f64 * 1e6;
        Run {
            rate: calls as f64 / elapsed.as_secs_f64(),
            p50: latencies[latencies.len() / 2],
            p99: latencies[latencies.len() * 99 / 100],
            node_us: per_call(cpu_seconds(self.node.pid()) - node_cpu),
            broker_us: per_call(self.broker.map_or(0.0, cpu_seconds) - broker_cpu),
        }
    }

    async fn stop(mut self) {
        self.center.close().await;
        self.node.kill().await;
        if let Ok(connection) = compute_host::shared::amqp::connect(&self.url).await {
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel
                    .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            let _ = connection.close(200, "OK".into()).await;
        }
    }
}

#[derive(Clone)]
struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// CPU microseconds per call.
    node_us: f64,
    broker_us: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(url_4_3) = std::env::var("AMQP_URL_4_3") else {
        eprintln!(
            "AMQP_URL_4_3 is not set: start RabbitMQ 4.3 with `scripts/rabbitmq.sh start 4.3` and give its URL"
        );
        std::process::exit(2);
    };
    let url_3 = amqp_url();
    let variants = [
        Variant::start("3.x, transient (old default)", &url_3, "transient").await,
        Variant::start("3.x, classic durable", &url_3, "classic").await,
        Variant::start("4.3, classic durable", &url_4_3, "classic").await,
        Variant::start("4.3, quorum", &url_4_3, "quorum").await,
    ];
    // Warm up: connections, the node's code paths, the broker's queues.
    for variant in &variants {
        variant.run(16, 2000).await;
    }
    println!(
        "{ROUNDS} rounds, the variants alternating within each; each figure is the median round"
    );
    for (in_flight, calls) in LOADS {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); variants.len()];
        for _ in 0..ROUNDS {
            for (variant, runs) in variants.iter().zip(&mut runs) {
                runs.push(variant.run(in_flight, calls).await);
            }
        }
        println!();
        println!("K = {in_flight}, {calls} calls a round:");
        println!(
            "  {:<30} {:>9} {:>8} {:>8} {:>13} {:>15} {:>9}",
            "queue", "calls/s", "p50 ms", "p99 ms", "node us/call", "broker us/call", "/3.x old"
        );
        let baseline = median(&runs[0]);
        for (variant, runs) in variants.iter().zip(&runs) {
            let run = median(runs);
            println!(
                "  {:<30} {:>9.0} {:>8.3} {:>8.3} {:>13.1} {:>15.1} {:>9.2}",
                variant.name,
                run.rate,
                run.p50.as_secs_f64() * 1e3,
                run.p99.as_secs_f64() * 1e3,
                run.node_us,
                run.broker_us,
                run.rate / baseline.rate
            );
        }
    }
    for variant in variants {
        variant.stop().await;
    }
}

/// The round with the median throughput.
fn median(runs: &[Run]) -> Run {
    let mut runs = runs.to_vec();
    runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    runs[runs.len() / 2].clone()
}
