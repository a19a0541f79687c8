//! `otlp-tree [ADDRESS]`: an OTLP/HTTP receiver (default
//! `127.0.0.1:4318`) that prints each trace it gets as a tree of spans,
//! once no span has arrived for a while. For a look at what a
//! node and a center export, without running a collector; the book's
//! trace (docs/src/operations.md) comes from it.

use compute_host::shared::trace::SCHEDULE_DELAY;
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};
use testkit::{OtlpReceiver, ReceivedSpan};

/// How long no span must arrive before the traces are taken as complete:
/// longer than an exporter waits by default before it sends.
const QUIET: Duration = SCHEDULE_DELAY.saturating_add(Duration::from_secs(1));

#[tokio::main]
async fn main() {
    let address = std::env::args().nth(1);
    let receiver = OtlpReceiver::start_on(address.as_deref().unwrap_or("127.0.0.1:4318")).await;
    eprintln!("otlp-tree: receiving spans on {}", receiver.endpoint());
    let mut printed = BTreeSet::new();
    let mut seen = 0;
    loop {
        tokio::time::sleep(QUIET).await;
        let spans = receiver.spans();
        if spans.len() != seen {
            seen = spans.len();
            continue;
        }
        let mut traces: BTreeMap<&str, Vec<&ReceivedSpan>> = BTreeMap::new();
        for span in &spans {
            traces.entry(&span.trace_id).or_default().push(span);
        }
        let mut traces: Vec<_> = traces.into_iter().collect();
        traces.sort_by_key(|(_, spans)| spans.iter().map(|span| span.start_ns).min());
        for (trace, mut spans) in traces {
            if printed.insert(trace.to_owned()) {
                spans.sort_by_key(|span| span.start_ns);
                println!("trace {trace}");
                print_children(&spans, "", "", 0);
            }
        }
    }
}

/// Prints the spans whose parent is `parent` (the roots: `""`), and
/// theirs below them.
fn print_children(spans: &[&ReceivedSpan], parent: &str, indent: &str, depth: usize) {
    let ids: BTreeSet<&str> = spans.iter().map(|span| span.span_id.as_str()).collect();
    let children: Vec<_> = spans
        .iter()
        .filter(|span| {
            // A span whose parent is not in the trace (another process's
            // that exports nothing) is shown as a root.
            span.parent_span_id == parent
                || (depth == 0 && !ids.contains(span.parent_span_id.as_str()))
        })
        .collect();
    for (at, span) in children.iter().enumerate() {
        let last = at + 1 == children.len();
        let kind = match span.kind {
            1 => "internal",
            3 => "client",
            4 => "producer",
            5 => "consumer",
            _ => "?",
        };
        let took = span.end_ns.saturating_sub(span.start_ns) as f64 / 1e6;
        let shown: Vec<String> = span
            .attributes
            .iter()
            .filter(|(key, _)| {
                key.starts_with("compute.")
                    || key.starts_with("error")
                    || key.ends_with("message_count")
            })
            .map(|(key, value)| match value.strip_prefix("sha256:") {
                // As `compute status` shows a digest.
                Some(hex) => format!("{key}=sha256:{}", hex.get(..12).unwrap_or(hex)),
                None => format!("{key}={value}"),
            })
            .collect();
        let shown = if shown.is_empty() {
            String::new()
        } else {
            format!(" {}", shown.join(" "))
        };
        println!(
            "{indent}{} {} {:?} ({kind}, {took:.2} ms){shown}",
            if last { "└─" } else { "├─" },
            span.service,
            span.name,
        );
        let deeper = format!("{indent}{}", if last { "   " } else { "│  " });
        for (name, attributes) in &span.events {
            let attributes: Vec<String> = attributes
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            println!("{deeper}· event {name:?} {}", attributes.join(" "));
        }
        print_children(spans, &span.span_id, &deeper, depth + 1);
    }
}
