//! Requests, replies, modules and inputs that a careless or hostile client
//! or operator sends: none of them stops, stalls or loops a node. Each
//! scenario runs the real `compute` binary, so a crash would show as a
//! dead process, and checks afterwards that the node is alive, answers
//! the next normal request, holds nothing and left nothing in its queue,
//! and counted the poison under its own `outcome`.

use clap::Parser as _;
use compute_host::{
    CallError, Center, CenterOptions, ReplyMode,
    cli::center::{self as center_cli, CenterArgs},
    shared::wire::{ERROR_HEADER, header_text},
};
use lapin::{
    BasicProperties,
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable},
};
use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use testkit::{
    Load, ModuleDir, RawClient, ServerProcess, amqp_url, built_module, center, eventually,
    increase_module, python, python_output, requests_settled, scrape, unique_queue,
    wait_for_metric,
};

/// A node process under attack, with a client for normal requests.
struct Target {
    node: ServerProcess,
    queue: String,
    metrics: SocketAddr,
    client: RawClient,
}

impl Target {
    /// `compute --module MODULE ARGS...` on a queue of its own.
    async fn start(test: &str, module: &Path, args: &[&str]) -> Self {
        Self::on_queue(unique_queue(test), module, args).await
    }

    /// The same, on `queue`.
    async fn on_queue(queue: String, module: &Path, args: &[&str]) -> Self {
        let node = ServerProcess::node(&queue, module, args).await;
        let metrics = node.metrics_addr();
        Target {
            node,
            queue,
            metrics,
            client: RawClient::connect().await,
        }
    }

    /// The node is alive, answers a normal request, holds no request and
    /// has none left in its queue.
    async fn assert_unharmed(&mut self, normal: &[u8], expected: Option<&[u8]>) {
        assert!(
            self.node.is_running(),
            "the node died:\n{}",
            self.node.log()
        );
        let reply = self
            .client
            .request(&self.queue, normal, Some("normal"))
            .await;
        assert_eq!(
            header_text(&reply.properties, ERROR_HEADER),
            None,
            "{}",
            String::from_utf8_lossy(&reply.data)
        );
        if let Some(expected) = expected {
            assert_eq!(reply.data, expected);
        }
        wait_for_metric(self.metrics, "compute_in_flight_requests 0").await;
        assert_eq!(self.queued().await, 0, "requests left in the queue");
        assert!(
            self.node.is_running(),
            "the node died:\n{}",
            self.node.log()
        );
    }

    async fn queued(&self) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.client
            .channel
            .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap()
            .message_count()
    }

    /// Waits until the node counted `count` requests of `function` under
    /// `outcome`.
    async fn counted(&self, function: &str, outcome: &str, count: usize) -> String {
        let line = format!(
            r#"compute_requests_total{{function="{function}",outcome="{outcome}"}} {count}"#
        );
        wait_for_metric(self.metrics, &line).await
    }

    /// Checks that the node ran the guest exactly `count` times in all.
    async fn assert_computed(&self, count: usize) {
        let metrics = scrape(self.metrics).await;
        let computed =
            format!(r#"compute_guest_call_seconds_count{{function="increase"}} {count}"#);
        assert!(metrics.lines().any(|line| line == computed), "{metrics}");
    }

    /// Runs `hostile_client.py` against this node's queue, replies going
    /// to `reply_queue`; returns how many requests it published.
    async fn publish_hostile(&self, reply_queue: &str, what: &[&str]) -> usize {
        let mut command = python("hostile_client.py");
        let output = python_output(
            command.args([self.queue.as_str(), reply_queue]).args(what),
            Duration::from_secs(120),
        )
        .await;
        output.trim().parse().unwrap()
    }
}

/// Every short-string property and table key that can carry bytes that
/// are not UTF-8, and headers nested 18,000 deep (this used to abort the
/// process): the requests the node can answer are answered; one whose
/// `correlation_id` or `reply_to` it cannot echo is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_that_are_not_utf8_and_deep_headers_stop_no_node() {
    let mut target = Target::start("not-utf8", &increase_module(), &[]).await;
    let mut sink = RawClient::connect().await;

    let sent = target.publish_hostile(&sink.reply_queue, &["all"]).await;
    let rejected = 2; // correlation_id and reply_to
    for _ in 0..sent - rejected {
        let reply = sink.next_reply().await;
        assert_eq!(reply.data, b"2", "{:?}", reply.properties);
    }
    target.counted("increase", "bad-properties", rejected).await;
    target.counted("increase", "ok", sent - rejected).await;
    target.assert_unharmed(b"41", Some(b"42")).await;
    println!(
        "{sent} hostile requests: {} answered, {rejected} rejected",
        sent - rejected
    );
}

/// With `--ack-mode on-confirm`, a reply the broker refuses (the caller's
/// queue is full and rejects publishes) is published a few times without
/// computing it again, then its request is rejected: settled once, not
/// recomputed in a hot loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reply_is_given_up_not_recomputed_in_a_loop() {
    refused_reply_settles_once("on-confirm", "undeliverable").await;
}

/// With `--ack-mode on-publish`, the node never learns that the broker
/// refused the reply: its request is acked once, and not computed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_publish_a_refused_reply_is_acked_once() {
    refused_reply_settles_once("on-publish", "ok").await;
}

/// One request whose reply goes to a queue that refuses every message,
/// under `ack_mode`: counted once as `outcome`, computed once.
async fn refused_reply_settles_once(ack_mode: &str, outcome: &str) {
    let mut target = Target::start(
        &format!("refused-reply-{ack_mode}"),
        &increase_module(),
        &["--ack-mode", ack_mode],
    )
    .await;
    let full = unique_queue("full");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(0));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    target
        .client
        .channel
        .queue_declare(full.as_str().into(), exclusive, arguments)
        .await
        .unwrap();

    let properties = BasicProperties::default().with_reply_to(full.as_str().into());
    target.client.publish(&target.queue, b"1", properties).await;
    target.counted("increase", outcome, 1).await;
    target.assert_computed(1).await;
    // A window to watch, not a wait for a condition: in two seconds a
    // loop would have computed it thousands of times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    target.assert_computed(1).await;
    target.assert_unharmed(b"1", Some(b"2")).await;
}

/// A guest asleep in a host call (`std::thread::sleep` through
/// `wasi:clocks`), where the CPU deadline cannot see it, is stopped by the
/// wall-clock limit with a `timeout` reply; more sleepers than the node has
/// slots do not stall it for longer than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_asleep_in_host_calls_are_stopped_by_the_wall_clock_limit() {
    let nosy = testkit::nosy_module();
    let mut target = Target::start(
        "sleeper",
        &nosy,
        &["--guest-wall-timeout", "1", "--prefetch", "8"],
    )
    .await;
    let center = center(&target.queue, Duration::from_secs(30)).await;

    let started = Instant::now();
    let sleepers = futures_util::future::join_all((0..20).map(|_| center.call("sleep"))).await;
    let took = started.elapsed();
    for outcome in &sleepers {
        match outcome {
            Err(CallError::Remote { kind, message, .. }) => {
                assert_eq!(kind, "timeout");
                assert!(message.contains("wall-clock"), "{message}");
            }
            other => panic!("a sleeper got {other:?}"),
        }
    }
    println!("20 sleepers, 8 at a time, 1 s each: all stopped after {took:?}");
    assert!(
        took < Duration::from_secs(15),
        "the sleepers held the node for {took:?}"
    );
    target.counted("nosy", "timeout", 20).await;
    center.close().await;
    target.assert_unharmed(b"look", None).await;
}

/// A guest asleep holds back no other request: with `--prefetch 2`, the
/// broker hands the node a third request only once one is acked, and the
/// node acks each request answered past the sleeper's at once, not when
/// the sleeper ends, so twenty requests are answered while it sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_request_holds_back_no_other_requests_ack() {
    let nosy = testkit::nosy_module();
    let mut target = Target::start(
        "ack-past-sleeper",
        &nosy,
        &["--guest-wall-timeout", "10", "--prefetch", "2"],
    )
    .await;
    let center = center(&target.queue, Duration::from_secs(60)).await;

    let sleeper = tokio::spawn({
        let center = center.clone();
        async move { center.call("sleep").await }
    });
    wait_for_metric(target.metrics, "compute_in_flight_requests 1").await;
    for _ in 0..20 {
        let reply = center
            .call("look")
            .await
            .expect("a request past the sleeper");
        let report = String::from_utf8_lossy(&reply.body);
        assert!(report.contains("read a file: denied"), "{report}");
    }
    assert!(
        !sleeper.is_finished(),
        "the requests past the sleeper waited for it: their acks were held back"
    );
    match sleeper.await.expect("the sleeper's task") {
        Err(CallError::Remote { kind, .. }) => assert_eq!(kind, "timeout"),
        other => panic!("the sleeper got {other:?}"),
    }
    center.close().await;
    target.assert_unharmed(b"look", None).await;
}

/// Fifty requests whose callers are gone make one warning, not fifty; a
/// correlation id with a newline in it is logged escaped, so it cannot
/// forge a log line, and still comes back exactly in its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_warnings_are_throttled_and_escaped() {
    let mut target = Target::start("throttled", &increase_module(), &[]).await;
    let forged = "gone\n2026-01-01T00:00:00Z  INFO forged line";
    for _ in 0..50 {
        let gone = BasicProperties::default()
            .with_reply_to(unique_queue("gone").as_str().into())
            .with_correlation_id(forged.into());
        target.client.publish(&target.queue, b"1", gone).await;
    }
    target.counted("increase", "ok", 50).await;
    let reply = target
        .client
        .request(&target.queue, b"1", Some(forged))
        .await;
    assert_eq!(
        reply.properties.correlation_id().as_ref().unwrap().as_str(),
        forged
    );
    // Without confirms the node learns of returned replies once a second.
    eventually("the warning", Duration::from_secs(10), || async {
        target
            .node
            .log()
            .contains("the caller is gone")
            .then_some(())
    })
    .await;
    let log = target.node.log();
    assert_eq!(log.matches("the caller is gone").count(), 1, "{log}");
    assert!(log.contains(r"gone\n2026-01-01"), "{log}");
    assert!(
        !log.contains("\n2026-01-01T00:00:00Z  INFO forged"),
        "{log}"
    );
    target.assert_unharmed(b"1", Some(b"2")).await;
}

/// A module file whose name makes a queue name longer than AMQP allows is
/// skipped with one clear line; the node serves the other functions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_named_too_long_for_a_queue_is_skipped() {
    let dir = ModuleDir::empty();
    std::fs::copy(increase_module(), dir.join("increase.wasm")).unwrap();
    let long = "f".repeat(250);
    std::fs::copy(built_module("double"), dir.join(format!("{long}.wasm"))).unwrap();
    let prefix = unique_queue("long-name");
    let mut node = ServerProcess::compute(
        testkit::compute_command()
            .args(["--amqp-url", &amqp_url(), "--queue-prefix", &prefix])
            .arg("--modules")
            .arg(&dir.path),
    )
    .await;
    let mut client = RawClient::connect().await;
    let queue = format!("{prefix}.increase");
    assert_eq!(client.request(&queue, b"1", None).await.data, b"2");
    // Reported once the file has settled (it was copied just now)...
    eventually(
        "the long name is reported",
        Duration::from_secs(30),
        || async { node.log().contains("AMQP allows at most 255").then_some(()) },
    )
    .await;
    // ...and, in a window of two more rescans, not tried again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(node.is_running(), "{}", node.log());
    let log = node.log();
    assert_eq!(log.matches("AMQP allows at most 255").count(), 1, "{log}");
    assert_eq!(client.request(&queue, b"2", None).await.data, b"3");
    node.terminate();
    assert!(node.wait().await.success());
    testkit::delete_queue(&queue).await;
}

/// An error message longer than `--max-body` is cut to fit and says so,
/// like any reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_fit_max_body_too() {
    let mut target = Target::start("long-error", &increase_module(), &["--max-body", "60"]).await;
    let reply = target
        .client
        .request(&target.queue, &[b'x'; 10], Some("long"))
        .await;
    let message = String::from_utf8(reply.data).unwrap();
    assert_eq!(
        header_text(&reply.properties, ERROR_HEADER).as_deref(),
        Some("bad-request")
    );
    assert!(message.len() <= 60, "{} bytes", message.len());
    assert!(message.contains("to fit --max-body]"), "{message}");
    target.assert_unharmed(b"1", Some(b"2")).await;
}

/// A request whose timestamp and expiration say its caller stopped waiting
/// is rejected, not computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_request_is_not_computed() {
    let mut target = Target::start("expired", &increase_module(), &[]).await;
    let an_hour_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let stale = BasicProperties::default()
        .with_reply_to(target.client.reply_queue.as_str().into())
        .with_timestamp(an_hour_ago)
        .with_expiration("60000".into());
    target.client.publish(&target.queue, b"1", stale).await;
    target.counted("increase", "expired", 1).await;
    target.assert_unharmed(b"5", Some(b"6")).await;
    // The normal request only.
    target.assert_computed(1).await;
}

/// Requests whose caller timed out before any node took them expire in
/// the broker: a node that starts later computes none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_nobody_waits_for_are_never_computed() {
    let queue = unique_queue("nobody-waits");
    testkit::declare_queue(&queue).await;
    let impatient = center(&queue, Duration::from_millis(500)).await;
    for n in 0..5 {
        let outcome = impatient.call(n.to_string()).await;
        assert!(matches!(outcome, Err(CallError::Timeout(_))), "{outcome:?}");
    }
    impatient.close().await;

    let mut target = Target::on_queue(queue, &increase_module(), &[]).await;
    target.assert_unharmed(b"1", Some(b"2")).await;
    // The normal request only.
    target.assert_computed(1).await;
}

/// Replies to RabbitMQ's direct reply-to are not mistaken for replies to
/// a caller that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_raises_no_false_warning() {
    let target = Target::start("direct-warning", &increase_module(), &[]).await;
    let options = CenterOptions {
        queue: target.queue.clone(),
        reply_mode: ReplyMode::Direct,
        ..CenterOptions::default()
    };
    let center = Center::connect_with(&amqp_url(), options).await.unwrap();
    for n in 0..20 {
        assert_eq!(
            center.call(n.to_string()).await.unwrap().body,
            (n + 1).to_string().as_bytes()
        );
    }
    target.counted("increase", "ok", 20).await;
    let log = target.node.log();
    assert!(!log.contains("caller is gone"), "{log}");
    center.close().await;
}

/// The center: a line of standard input that is not UTF-8 gets its own
/// line (the node's `bad-request`) and the batch goes on; an input too
/// large to publish fails alone, without closing the channel the other
/// calls share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_input_fails_only_itself_in_the_center() {
    let target = Target::start("center-input", &increase_module(), &[]).await;
    let args = CenterArgs::try_parse_from([
        "center",
        "--queue",
        &target.queue,
        "--amqp-url",
        &amqp_url(),
        "--max-body",
        "20",
    ])
    .unwrap();
    let mut input = b"1\n\xff\xfe\n".to_vec();
    input.extend_from_slice(&[b'9'; 21]);
    input.extend_from_slice(b"\n3\n");
    let mut output = Vec::new();
    let summary = center_cli::run(args, &input[..], &mut output)
        .await
        .unwrap();
    let output = String::from_utf8(output).unwrap();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 4, "{output}");
    assert_eq!(lines[0], "increase(1) = 2");
    assert!(lines[1].contains("failed: bad-request"), "{output}");
    assert!(lines[2].contains("failed: too-large"), "{output}");
    assert_eq!(lines[3], "increase(3) = 4");
    assert_eq!((summary.ok(), summary.failed()), (2, 2));
}

/// Thousands of requests with random properties (not UTF-8 half the
/// time), random headers (nested, some thousands deep) and random bodies,
/// published while a center's normal calls run: every normal call is
/// answered and the node stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuzzed_stream_of_requests_stops_no_node() {
    const FUZZED: usize = 3000;
    const NORMAL: usize = 2000;
    let mut target = Target::start("fuzz", &increase_module(), &[]).await;
    let sink = RawClient::connect().await;
    let center = center(&target.queue, Duration::from_secs(60)).await;

    let batch = Load::batch(&center, NORMAL, 32);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sent = target
        .publish_hostile(
            &sink.reply_queue,
            &["fuzz", &FUZZED.to_string(), &seed.to_string()],
        )
        .await;
    let tally = batch
        .finish(Duration::from_secs(120))
        .await
        .expect("the normal calls end")
        .increase_tally();
    println!("fuzz seed {seed}: {sent} fuzzed requests beside {NORMAL} normal calls: {tally:?}");
    tally.assert_all_answered();
    center.close().await;
    target.assert_unharmed(b"41", Some(b"42")).await;
    let settled = requests_settled(target.metrics).await;
    assert_eq!(settled as usize, sent + NORMAL + 1);
}
