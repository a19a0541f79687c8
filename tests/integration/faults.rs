//! Faults injected while work is in flight: nodes killed or stopped
//! mid-batch, a runaway guest beside well-behaved requests, redelivered
//! requests, duplicated replies, and a guest that tries to get out of its
//! sandbox. Each scenario counts what was sent and what came back; nothing
//! may be lost. Where a scenario says how often a request was computed,
//! it counts on the nodes (their metrics), not on the center, which drops
//! a duplicate reply.

use compute_host::{CallError, Center, CenterOptions, Limits, NodeConfig};
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions},
};
use std::time::{Duration, Instant};
use testkit::{
    Load, ModuleDir, RawClient, RunningNode, ServerProcess, center, eventually, increase_module,
    nosy_module, requests_settled, unique_queue,
};

const TIMEOUT: Duration = Duration::from_secs(60);
const BATCH: usize = 5000;
const IN_FLIGHT: usize = 128;

/// A node killed with SIGKILL mid-batch leaves its unacked requests to the
/// broker, which hands them to the other node: every request is answered.
/// Delivery is at least once: a request whose reply the killed node had
/// published but not yet acked is computed again by the other node, and
/// the center drops the second reply. The node acks on publish (the
/// default here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_batch_loses_nothing() {
    killed_mid_batch("on-publish").await;
}

/// The same with `--ack-mode on-confirm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_batch_loses_nothing_on_confirm() {
    killed_mid_batch("on-confirm").await;
}

async fn killed_mid_batch(ack_mode: &str) {
    let queue = unique_queue("sigkill");
    let mut doomed =
        ServerProcess::node(&queue, &increase_module(), &["--ack-mode", ack_mode]).await;
    let survivor = ServerProcess::node(&queue, &increase_module(), &[]).await;
    let center = center(&queue, TIMEOUT).await;

    let batch = Load::batch(&center, BATCH, IN_FLIGHT);
    batch.until_done(BATCH / 5).await;
    doomed.kill().await;
    let tally = batch
        .finish(TIMEOUT)
        .await
        .expect("the batch ends")
        .increase_tally();

    let survivor_settled = requests_settled(survivor.metrics_addr()).await;
    println!(
        "SIGKILL mid-batch, --ack-mode {ack_mode}: {tally:?}, lost {}; the survivor settled {survivor_settled}",
        tally.lost()
    );
    tally.assert_all_answered();
    center.close().await;
}

/// When the last node of a queue dies, the calls waiting on it fail with
/// `no-consumer` once the grace period is over, not each at its timeout,
/// and later calls fail at once; once a node consumes the queue again,
/// calls are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_fast_once_no_node_consumes_their_queue() {
    const GRACE: Duration = Duration::from_secs(1);
    let queue = unique_queue("no_consumer");
    let mut last = ServerProcess::node(&queue, &increase_module(), &[]).await;
    let options = CenterOptions {
        queue: queue.clone(),
        timeout: TIMEOUT,
        no_consumer_grace: Some(GRACE),
        ..CenterOptions::default()
    };
    let center = Center::connect_with(&testkit::amqp_url(), options)
        .await
        .unwrap();
    assert_eq!(center.call("1").await.unwrap().body, b"2");

    last.kill().await;
    let killed = Instant::now();
    let waiting = (0..20).map(|n| center.call(n.to_string()));
    for outcome in futures_util::future::join_all(waiting).await {
        match outcome {
            Err(err @ CallError::NoConsumer { .. }) => assert_eq!(err.kind(), "no-consumer"),
            other => panic!("a call waiting on a queue nobody consumes got {other:?}"),
        }
    }
    let failed = killed.elapsed();
    let started = Instant::now();
    let later = center.call("2").await;
    let at_once = started.elapsed();
    println!(
        "20 waiting calls failed {failed:?} after the last node died (grace {GRACE:?}, timeout {TIMEOUT:?}); a later call failed in {at_once:?}"
    );
    assert!(
        matches!(later, Err(CallError::NoConsumer { .. })),
        "{later:?}"
    );
    assert!(failed < TIMEOUT / 2, "the calls waited {failed:?}");

    let _back = ServerProcess::node(&queue, &increase_module(), &[]).await;
    eventually("a call is answered again", TIMEOUT, || async {
        center
            .call("41")
            .await
            .ok()
            .map(|reply| assert_eq!(reply.body, b"42"))
    })
    .await;
    center.close().await;
}

/// SIGTERM mid-batch: the node stops taking requests, answers and acks the
/// ones it has, and exits cleanly; the other node answers the rest. Each
/// request is computed exactly once: the two nodes' counts of requests
/// settled add up to the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_mid_batch_finishes_its_requests_and_exits_cleanly() {
    stopped_mid_batch("on-publish").await;
}

/// The same with `--ack-mode on-confirm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_mid_batch_finishes_its_requests_on_confirm() {
    stopped_mid_batch("on-confirm").await;
}

async fn stopped_mid_batch(ack_mode: &str) {
    let queue = unique_queue("sigterm");
    let mut stopping =
        ServerProcess::node(&queue, &increase_module(), &["--ack-mode", ack_mode]).await;
    let survivor = ServerProcess::node(&queue, &increase_module(), &[]).await;
    let center = center(&queue, TIMEOUT).await;

    let batch = Load::batch(&center, BATCH, IN_FLIGHT);
    batch.until_done(BATCH / 5).await;
    stopping.terminate();
    let status = stopping.wait().await;
    let tally = batch
        .finish(TIMEOUT)
        .await
        .expect("the batch ends")
        .increase_tally();

    println!(
        "SIGTERM mid-batch, --ack-mode {ack_mode}: {tally:?}, lost {}",
        tally.lost()
    );
    let log = stopping.log();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(
        log.contains("shutting down: finishing the requests in flight"),
        "{log}"
    );
    // A close that fails ends the process with the last acks unwritten.
    assert_eq!(
        stopping.connection_closed_when_stopped().as_deref(),
        Some("cleanly"),
        "{log}"
    );
    let stopped_settled = stopping
        .requests_when_stopped()
        .unwrap_or_else(|| panic!("the node says what it settled when it stops:\n{log}"));
    tally.assert_all_answered();
    // The survivor counts a request once its reply is out, a moment after
    // the reply ended its call.
    let metrics = survivor.metrics_addr();
    let computed = eventually(
        "the two nodes have settled the whole batch",
        TIMEOUT,
        || async {
            let computed = stopped_settled + requests_settled(metrics).await;
            (computed >= BATCH as u64).then_some(computed)
        },
    )
    .await;
    println!(
        "the stopped node settled {stopped_settled}, the survivor the rest: {computed} in all"
    );
    assert!(stopped_settled > 0, "the stopped node settled nothing");
    assert_eq!(
        computed,
        BATCH as u64,
        "each request computed exactly once; the stopped node's log:\n{log}\nthe survivor's:\n{}",
        survivor.log()
    );
    center.close().await;
}

/// Guests that never return are stopped at the deadline with a `timeout`
/// error, and meanwhile every other request is answered: more runaways
/// than the node has threads do not hold anyone up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_guests_delay_no_other_request() {
    let (_dir, node) = hostile_node(
        "runaway",
        Limits {
            timeout: Duration::from_secs(3),
            ..Limits::default()
        },
    )
    .await;
    let center = center(&node.queue, TIMEOUT).await;

    let started = Instant::now();
    let runaways = futures_util::future::join_all((0..4).map(|_| {
        let center = center.clone();
        async move { (center.call("spin").await, started.elapsed()) }
    }));
    let others = async {
        // Sent once the node runs all four runaways.
        eventually("the runaways run", Duration::from_secs(10), || async {
            (node.live.in_flight() >= 4).then_some(())
        })
        .await;
        futures_util::stream::iter(0..200)
            .map(|n| {
                let center = center.clone();
                async move {
                    let reply = center.call(n.to_string()).await.expect("answered");
                    assert_eq!(reply.body, n.to_string().as_bytes());
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        started.elapsed()
    };
    let (runaways, others_done) = tokio::join!(runaways, others);

    let first_runaway_stopped = runaways.iter().map(|(_, at)| *at).min().unwrap();
    println!(
        "200 requests answered after {others_done:?}; first runaway stopped after {first_runaway_stopped:?}"
    );
    for (outcome, _) in &runaways {
        match outcome {
            Err(CallError::Remote { kind, .. }) => assert_eq!(kind, "timeout"),
            other => panic!("a runaway got {other:?}"),
        }
    }
    assert!(
        others_done < first_runaway_stopped,
        "the other requests waited for the runaways"
    );
    center.close().await;
    node.stop().await;
}

/// A guest that grows its memory past the cap, traps, overflows its
/// stack, loops, or returns more than `--max-body` gets an error reply of
/// the documented kind for that request; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_get_error_replies_through_the_broker() {
    let (_dir, node) = hostile_node(
        "hostile",
        Limits {
            timeout: Duration::from_millis(200),
            max_body: 1000,
            ..Limits::default()
        },
    )
    .await;
    let mut client = RawClient::connect().await;

    for (request, kind, reason) in [
        ("memory", "compute-failed", "(--guest-memory)"),
        ("trap", "compute-failed", "unreachable"),
        ("recurse", "compute-failed", "call stack exhausted"),
        ("spin", "timeout", "ran longer than"),
        ("oversized", "too-large", "(--max-body)"),
    ] {
        let reply = client.request(&node.queue, request.as_bytes(), None).await;
        let message = String::from_utf8_lossy(&reply.data);
        assert_eq!(
            compute_host::shared::wire::header_text(&reply.properties, "x-error").as_deref(),
            Some(kind),
            "{request}: {message}"
        );
        assert!(message.contains(reason), "{request}: {message}");
        let echo = client.request(&node.queue, b"7", None).await;
        assert_eq!(echo.data, b"7", "the node serves on after {request}");
    }
    node.stop().await;
}

/// A request the broker delivers again (its first delivery was never
/// acked) is computed and answered like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_request_is_answered_normally() {
    let queue = unique_queue("redelivered");
    testkit::declare_queue(&queue).await;
    let mut client = RawClient::connect().await;
    let properties = BasicProperties::default()
        .with_reply_to(client.reply_queue.as_str().into())
        .with_correlation_id("again".into());
    client.publish(&queue, b"41", properties).await;

    // A consumer takes it and goes away without acking it.
    let taken = client
        .channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("the request is queued");
    assert!(!taken.delivery.redelivered);
    taken
        .delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();

    let node = RunningNode::start(&queue).await;
    let reply = client.next_reply().await;
    assert_eq!(reply.data, b"42");
    assert_eq!(
        reply.properties.correlation_id().as_ref().unwrap().as_str(),
        "again"
    );
    node.stop().await;
}

/// Two replies to one call (a request computed twice after a redelivery):
/// the call gets the first, the copy is dropped, and the next call gets its
/// own reply, not the stale copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_center_drops_a_duplicate_reply() {
    let queue = unique_queue("duplicate");
    testkit::declare_queue(&queue).await;
    let center = center(&queue, TIMEOUT).await;
    let node = RawClient::connect().await;

    // A node that answers its first request twice, then each once.
    let fake_node = tokio::spawn(async move {
        let mut consumer =
            compute_host::shared::amqp::consume_no_ack(&node.channel, queue.as_str().into())
                .await
                .unwrap();
        for answers in [&["first", "copy of first"][..], &["second"]] {
            let request = consumer.next().await.unwrap().unwrap();
            for answer in answers {
                let properties = BasicProperties::default()
                    .with_correlation_id(request.properties.correlation_id().clone().unwrap());
                node.channel
                    .basic_publish(
                        "".into(),
                        request.properties.reply_to().clone().unwrap(),
                        BasicPublishOptions::default(),
                        answer.as_bytes(),
                        properties,
                    )
                    .await
                    .unwrap();
            }
        }
        testkit::delete_queue(&queue).await;
    });

    assert_eq!(center.call("1").await.unwrap().body, b"first");
    assert_eq!(center.call("2").await.unwrap().body, b"second");
    fake_node.await.unwrap();
    center.close().await;
}

/// A guest that tries the filesystem, the environment, its arguments and
/// the network is denied each; what it prints is in the node's log, and a
/// guest that prints 100 KB leaves a few KB there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nosy_guest_is_denied_everything_and_its_output_is_logged() {
    let queue = unique_queue("nosy");
    let nosy = nosy_module();
    let mut node = ServerProcess::node(&queue, &nosy, &[]).await;
    let mut client = RawClient::connect().await;

    let report = client.request(&queue, b"look", Some("nosy-1")).await;
    let report = String::from_utf8(report.data).unwrap();
    println!("{report}");
    assert_eq!(report.lines().count(), 7);
    assert!(
        report.lines().all(|line| line.contains(": denied (")),
        "{report}"
    );
    let flood = client.request(&queue, b"flood", Some("nosy-2")).await;
    assert_eq!(flood.data, b"flooded");

    node.terminate();
    assert!(node.wait().await.success());
    let log = node.log();
    assert!(
        log.contains("correlation_id=nosy-1") && log.contains("nosy: looking around (stderr)"),
        "{log}"
    );
    assert!(log.contains("dropped_bytes="), "{log}");
    assert!(log.len() < 20_000, "the log holds {} bytes", log.len());
    testkit::delete_queue(&queue).await;
}

/// A warning about a request names it: the node's line about a request
/// it rejects (no `reply_to`) carries the request's correlation id and
/// function, though the request span is made only when something is
/// logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_about_a_request_names_its_correlation_id() {
    let queue = unique_queue("warning-names");
    let mut node = ServerProcess::node(&queue, &increase_module(), &[]).await;
    let mut client = RawClient::connect().await;
    client
        .publish(
            &queue,
            b"5",
            BasicProperties::default().with_correlation_id("orphan-1".into()),
        )
        .await;
    let reply = client.request(&queue, b"6", Some("fine-1")).await;
    assert_eq!(reply.data, b"7");

    node.terminate();
    assert!(node.wait().await.success());
    let log = node.log();
    let warning = log
        .lines()
        .find(|line| line.contains("rejecting a request without requeue"))
        .unwrap_or_else(|| panic!("no rejection in\n{log}"));
    assert!(
        warning.contains("correlation_id=orphan-1") && warning.contains(r#"function="increase""#),
        "{warning}"
    );
    assert!(
        !log.contains("fine-1"),
        "a request answered logs nothing:\n{log}"
    );
    testkit::delete_queue(&queue).await;
}

/// A node serving [`hostile_or_echo`] under `limits`, and the directory
/// its module lives in (removed when dropped).
async fn hostile_node(test: &str, limits: Limits) -> (ModuleDir, RunningNode) {
    let dir = ModuleDir::with_working_copy(&increase_module());
    dir.publish(&hostile_or_echo());
    let node = RunningNode::start_with(NodeConfig {
        limits,
        ..NodeConfig::module(dir.working_copy(), unique_queue(test))
    })
    .await;
    (dir, node)
}

/// A component that misbehaves as the first byte of its request says:
/// `s` spins forever, `m` grows its memory past any cap, `t` traps, `r`
/// recurses until its stack runs out, `o` returns 2000 bytes; any other
/// request is echoed.
fn hostile_or_echo() -> Vec<u8> {
    let body = r#"
        (if (i32.eq (i32.load8_u (local.get 0)) (i32.const 115))
          (then (loop $spin (br $spin))))
        (if (i32.eq (i32.load8_u (local.get 0)) (i32.const 109))
          (then (drop (memory.grow (i32.const 1100))) unreachable))
        (if (i32.eq (i32.load8_u (local.get 0)) (i32.const 116))
          (then unreachable))
        (if (i32.eq (i32.load8_u (local.get 0)) (i32.const 114))
          (then (return (call 0 (local.get 0) (local.get 1)))))
        (if (i32.eq (i32.load8_u (local.get 0)) (i32.const 111))
          (then (local.set 1 (i32.const 2000))))
        (i32.store8 (i32.const 16) (i32.const 0))
        (i32.store (i32.const 20) (local.get 0))
        (i32.store (i32.const 24) (local.get 1))
        i32.const 16"#;
    let template = include_str!("../fixtures/compute.wat");
    wat::parse_str(template.replace("(; BODY ;)", body)).unwrap()
}

/// With `--log-format json` every log line is a JSON object, and a line
/// about a request carries its correlation id and function in its span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_request_they_are_about() {
    let queue = unique_queue("json-logs");
    let nosy = nosy_module();
    let mut node = ServerProcess::node(&queue, &nosy, &["--log-format", "json"]).await;
    let mut client = RawClient::connect().await;
    client.request(&queue, b"look", Some("json-1")).await;
    node.terminate();
    assert!(node.wait().await.success());

    let log = node.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let guest_output = lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("guest output"))
        })
        .unwrap_or_else(|| panic!("no guest output in\n{log}"));
    let span = &guest_output["spans"][0];
    assert_eq!(span["name"], "request");
    assert_eq!(span["correlation_id"], "json-1");
    assert_eq!(span["function"], "nosy");
    testkit::delete_queue(&queue).await;
}
