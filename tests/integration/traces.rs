//! One call followed end to end: W3C Trace Context through the broker,
//! spans exported over OTLP/HTTP by a real `center` and a real `compute`.

use compute_host::shared::trace::TraceContext;
use std::{collections::BTreeSet, time::Duration};
use testkit::{
    OtlpReceiver, ReceivedSpan, ServerProcess, amqp_url, center_command, increase_module, python,
    python_output, run_to_end, unique_queue,
};

/// An API key as a collector might want it, percent-encoded as the
/// OpenTelemetry variables write it, with a `+` that stays one.
const API_KEY_SETTING: &str = "x-api-key=s3cr%3Dt+x";

/// The environment that turns export on, with batches sent every 50 ms
/// so a test waits little for them.
fn exporting_to(endpoint: &str) -> [(&'static str, String); 3] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
        ("OTEL_EXPORTER_OTLP_HEADERS", API_KEY_SETTING.to_owned()),
    ]
}

/// A `compute` process exporting to `endpoint`, with `args`, and debug
/// logs of its requests.
async fn traced_node(queue: &str, endpoint: &str, args: &[&str]) -> ServerProcess {
    let mut env = exporting_to(endpoint).to_vec();
    env.push((
        "RUST_LOG",
        "info,lapin=off,compute_host::node::request=debug".into(),
    ));
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    ServerProcess::node_with_env(queue, &increase_module(), args, &env).await
}

/// Runs `center ARGS` with export to `endpoint`; what it printed.
async fn traced_center(endpoint: &str, args: &[&str]) -> String {
    let output = run_to_end(
        center_command()
            .envs(exporting_to(endpoint))
            .args(["--amqp-url", &amqp_url()])
            .args(args),
        Duration::from_secs(30),
    )
    .await;
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The one span of `spans` named `name` in trace `trace_id`.
fn span<'a>(spans: &'a [ReceivedSpan], trace_id: &str, name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|span| span.trace_id == trace_id && span.name == name)
        .collect();
    assert_eq!(found.len(), 1, "{name} in {spans:#?}");
    found[0]
}

/// An operator with a collector sees one call as one trace: the center's
/// call span, its send span, the node's process span as the send span's
/// child, and the guest call under it, with the messaging attributes. The
/// node's latency histogram points at the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_one_trace_from_the_center_through_the_node() {
    let collector = OtlpReceiver::start().await;
    let queue = unique_queue("traced");
    let node = traced_node(&queue, &collector.endpoint(), &[]).await;

    let printed = traced_center(&collector.endpoint(), &["--queue", &queue, "7"]).await;
    assert_eq!(printed, "increase(7) = 8\n");
    let spans = collector
        .wait_for("the center's two spans and the node's two", |spans| {
            spans.len() >= 4
        })
        .await;
    let traces: BTreeSet<_> = spans.iter().map(|span| span.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 1, "{spans:#?}");
    let trace = spans[0].trace_id.clone();

    let call = span(&spans, &trace, &format!("call {queue}"));
    let send = span(&spans, &trace, &format!("send {queue}"));
    let process = span(&spans, &trace, &format!("process {queue}"));
    let guest = span(&spans, &trace, "compute increase");
    assert_eq!(
        [
            &call.service,
            &send.service,
            &process.service,
            &guest.service
        ],
        ["center", "center", "compute", "compute"]
    );
    assert_eq!(call.parent_span_id, "");
    assert_eq!(send.parent_span_id, call.span_id);
    assert_eq!(process.parent_span_id, send.span_id);
    assert_eq!(guest.parent_span_id, process.span_id);
    assert_eq!(
        [call.kind, send.kind, process.kind, guest.kind],
        [3, 4, 5, 1]
    );
    assert!(process.start_ns >= send.start_ns && guest.end_ns <= process.end_ns);

    for span in [send, process] {
        assert_eq!(span.attribute("messaging.system"), "rabbitmq");
        assert_eq!(span.attribute("messaging.destination.name"), "");
        assert_eq!(
            span.attribute("messaging.rabbitmq.destination.routing_key"),
            queue
        );
    }
    assert_eq!(send.attribute("messaging.operation.type"), "send");
    assert_eq!(process.attribute("messaging.operation.type"), "process");
    let conversation = send.attribute("messaging.message.conversation_id");
    assert_eq!(conversation.len(), 36, "a uuid: {conversation:?}");
    assert_eq!(
        process.attribute("messaging.message.conversation_id"),
        conversation
    );
    assert_eq!(process.attribute("compute.function"), "increase");
    assert!(
        process
            .attribute("compute.module.digest")
            .starts_with("sha256:")
    );
    assert_eq!(process.attribute("compute.outcome"), "ok");
    assert_eq!(call.attribute("compute.outcome"), "ok");
    assert_eq!(process.status_code, 0);
    assert!(
        spans.iter().all(|span| span.flags == 1),
        "sampled: {spans:#?}"
    );
    let headers = collector.header_lines();
    assert!(
        headers.iter().any(|line| line == "x-api-key: s3cr=t+x"),
        "{headers:#?}"
    );

    let exemplar = format!("# {{trace_id=\"{trace}\"}}");
    let metrics = testkit::scrape(node.metrics_addr()).await;
    let bucket = metrics.lines().find(|line| {
        line.starts_with("compute_request_seconds_bucket{") && line.contains(&exemplar)
    });
    assert!(bucket.is_some(), "no bucket has {exemplar}:\n{metrics}");
}

/// A batch is one process span counting its inputs, with an event for
/// each input that failed, not a span for each input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_span_with_an_event_for_each_failed_input() {
    let collector = OtlpReceiver::start().await;
    let queue = unique_queue("traced-batch");
    let _node = traced_node(&queue, &collector.endpoint(), &[]).await;

    let printed = traced_center(
        &collector.endpoint(),
        &["--queue", &queue, "--batch", "3", "1", "x", "2"],
    )
    .await;
    assert!(printed.starts_with("increase(1) = 2\n"), "{printed}");
    let process_name = format!("process {queue}");
    let spans = collector
        .wait_for("the node's spans", |spans| {
            spans.iter().any(|span| span.name == process_name)
                && spans
                    .iter()
                    .any(|span| span.service == "compute" && span.kind == 1)
        })
        .await;
    let process = span(&spans, &spans[0].trace_id, &process_name);
    assert_eq!(process.attribute("messaging.batch.message_count"), "3");
    assert_eq!(process.attribute("compute.outcome"), "ok");
    let failed: Vec<_> = process
        .events
        .iter()
        .map(|(name, attributes)| {
            (
                name.as_str(),
                attributes["compute.input.index"].as_str(),
                attributes["error.type"].as_str(),
            )
        })
        .collect();
    assert_eq!(failed, [("input failed", "1", "bad-request")]);
    let node_spans = spans
        .iter()
        .filter(|span| span.service == "compute")
        .count();
    assert_eq!(
        node_spans, 2,
        "one process span and one guest span: {spans:#?}"
    );
}

/// A pika caller that writes `traceparent` itself, as the OpenTelemetry
/// pika instrumentation does, finds the node's span in its trace: the
/// node's span continues the caller's, the reply carries the node's
/// context and the caller's `tracestate`, and the node's JSON log lines
/// for the request name the trace and the span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pika_callers_trace_is_continued_by_the_node() {
    let collector = OtlpReceiver::start().await;
    let queue = unique_queue("traced-pika");
    let node = traced_node(&queue, &collector.endpoint(), &["--log-format", "json"]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent}-01");

    let printed = python_output(
        python("traced_call.py").args([&queue, &traceparent, "vendor=opaque", "41"]),
        Duration::from_secs(30),
    )
    .await;
    let spans = collector
        .wait_for("the node's span", |spans| spans.len() >= 2)
        .await;
    let process = span(&spans, trace_id, &format!("process {queue}"));
    assert_eq!(process.parent_span_id, parent);
    let reply_context = format!("00-{trace_id}-{}-01", process.span_id);
    assert_eq!(
        printed.lines().collect::<Vec<_>>(),
        ["42", reply_context.as_str(), "vendor=opaque"]
    );

    let log = node.log();
    let request_line = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["fields"]["message"] == "request")
        .unwrap_or_else(|| panic!("no request line in:\n{log}"));
    let request_span = request_line["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|span| span["name"] == "request"))
        .unwrap_or_else(|| panic!("the line is not in the request's span: {request_line}"));
    assert_eq!(request_span["trace_id"], trace_id, "{request_line}");
    assert_eq!(request_span["span_id"], process.span_id.as_str());
}

/// A node that exports nothing (the default) still continues the trace a
/// caller sends, so the caller's collector links the reply; a
/// `traceparent` it cannot read is ignored, as is a `tracestate` W3C does
/// not allow, and the call is answered all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_export_passes_a_readable_trace_on_and_ignores_the_rest() {
    let queue = unique_queue("traced-off");
    let _node = ServerProcess::node(&queue, &increase_module(), &[]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let call = |traceparent: String, tracestate: String| {
        let queue = queue.clone();
        async move {
            let printed = python_output(
                python("traced_call.py").args([&queue, &traceparent, &tracestate, "41"]),
                Duration::from_secs(30),
            )
            .await;
            printed.lines().map(str::to_owned).collect::<Vec<_>>()
        }
    };

    let continued = call(traceparent.clone(), "vendor=opaque".into()).await;
    assert_eq!(continued[0], "42");
    let reply_parent = TraceContext::parse(&continued[1]).unwrap();
    assert_eq!(reply_parent.trace_id_hex(), trace_id);
    assert_ne!(reply_parent.span_id_hex(), "00f067aa0ba902b7");
    assert_eq!(continued[2], "vendor=opaque");

    let unreadable = call("00-not-a-trace".into(), "vendor=opaque".into()).await;
    assert_eq!(unreadable, ["42", "", ""]);

    let oversized = call(traceparent, format!("vendor={}", "x".repeat(600))).await;
    assert_eq!(oversized[0], "42");
    assert!(oversized[1].contains(trace_id), "{oversized:?}");
    assert_eq!(oversized[2], "");
}

/// A collector that is down costs nothing but the spans: 10,000 calls
/// from a center that exports too all succeed, and the node and the
/// center each warn once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_every_call_succeeds_and_each_side_warns_once() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let queue = unique_queue("traced-down");
    let node = traced_node(&queue, &nobody, &[]).await;

    let inputs: Vec<String> = (0..10_000).map(|n| n.to_string()).collect();
    let output = run_to_end(
        center_command()
            .envs(exporting_to(&nobody))
            .args(["--amqp-url", &amqp_url(), "--queue", &queue])
            .args(["--concurrency", "64"])
            .args(&inputs),
        Duration::from_secs(120),
    )
    .await;
    let printed = String::from_utf8_lossy(&output.stdout);
    let center_log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{center_log}");
    assert_eq!(printed.lines().count(), 10_000);
    assert!(printed.ends_with("increase(9999) = 10000\n"));
    let warned = |log: &str| log.matches("cannot export spans").count();
    assert_eq!(warned(&center_log), 1, "{center_log}");
    assert_eq!(warned(&node.log()), 1, "{}", node.log());
}
