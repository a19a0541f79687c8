//! Prometheus metrics of a compute node, served in the text format on
//! `--metrics-addr` (`GET /metrics`).
//!
//! Requests are counted by function and outcome as they are answered; the
//! module's swaps, failed reloads and current digest are read from the
//! [`LiveModule`] at each scrape, so the table of functions knows nothing
//! of metrics.
//!
//! # Layout
//!
//! - this file: the node's metrics and the per-request counting.
//! - `modules`: each function's versions, read at each scrape.
//! - `http`: the small HTTP/1 server that answers scrapes.

mod http;
mod modules;

pub(crate) use http::{BindError, bind};

use crate::{
    node::live::LiveModule,
    shared::{lock::lock, sandbox::ComputeError, trace::TraceContext},
};
use modules::ModuleCollector;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        exemplar::HistogramWithExemplars,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

pub(crate) use prometheus_client::metrics::gauge::Gauge;

/// Sets a gauge back to 0 when dropped, however its owner ends.
pub(crate) struct ClearOnDrop(pub(crate) Gauge);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.set(0);
    }
}

/// What happened to a request: `ok`, an error kind (`bad-request`,
/// `compute-failed`, `timeout`, `too-large`), `rejected` (no `reply_to`)
/// or `requeued` (its reply could not be published).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    function: String,
    outcome: &'static str,
}

/// Why a registry message changed nothing: `unreadable`, `old-format`,
/// `untrusted`, `replayed`, `other-registry` or `unknown-version`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

/// An exemplar's label: the trace of a request the histogram counted, so
/// a slow bucket leads to a slow call's trace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceLabel {
    trace_id: String,
}

/// The per-request metrics, recorded by the request handler.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    /// Inputs computed: one for a request, one for each input of a batch.
    inputs: Family<RequestLabels, Counter>,
    guest_seconds: Family<FunctionLabel, Histogram>,
    /// With the trace id of a traced request as exemplar.
    request_seconds: Family<FunctionLabel, HistogramWithExemplars<TraceLabel>>,
    in_flight: Gauge,
    /// Every request settled, whatever its function and outcome: what the
    /// node says it did when it stops.
    settled_total: AtomicU64,
}

impl RequestMetrics {
    /// Counts a request that started; the guard counts it finished.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Requests being computed or replied to.
    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Requests settled (answered, or rejected) since the node started.
    pub(crate) fn settled_total(&self) -> u64 {
        self.settled_total.load(Ordering::Relaxed)
    }

    /// Counts one input computed, by its outcome (`ok` or the error's
    /// kind), and records how long its guest call took.
    pub(crate) fn computed<T>(
        &self,
        function: &str,
        outcome: &Result<T, ComputeError>,
        took: Duration,
    ) {
        observe(&self.guest_seconds, function, took);
        let outcome = match outcome {
            Ok(_) => OK,
            Err(err) => err.kind().as_str(),
        };
        self.inputs
            .get_or_create(&RequestLabels {
                function: function.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts a request settled with `outcome`.
    pub(crate) fn settled(&self, function: &str, outcome: &'static str) {
        self.settled_total.fetch_add(1, Ordering::Relaxed);
        self.requests
            .get_or_create(&RequestLabels {
                function: function.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Records the time from the start of computing to the ack (compute,
    /// reply, and with confirms the broker's confirm), with the request's
    /// trace, if it is traced, as exemplar.
    pub(crate) fn answered(&self, function: &str, took: Duration, trace: Option<&TraceContext>) {
        let label = FunctionLabel {
            function: function.to_owned(),
        };
        self.request_seconds.get_or_create(&label).observe(
            took.as_secs_f64(),
            exemplar(trace),
            None,
        );
    }
}

/// One function's request metrics, as its request handler records them:
/// the series of its requests that succeed are looked up once, here, not
/// for each request, where a lookup by labels costs a lock, a hash and an
/// allocation. Other outcomes, and another function's name, are looked
/// up as they come.
pub(crate) struct FunctionMetrics {
    all: Arc<RequestMetrics>,
    function: String,
    ok_requests: Counter,
    ok_inputs: Counter,
    guest_seconds: Histogram,
    request_seconds: HistogramWithExemplars<TraceLabel>,
}

impl FunctionMetrics {
    /// `function`'s metrics in `all`.
    pub(crate) fn new(all: Arc<RequestMetrics>, function: &str) -> Self {
        let ok = |family: &Family<RequestLabels, Counter>| {
            family
                .get_or_create(&RequestLabels {
                    function: function.to_owned(),
                    outcome: OK,
                })
                .clone()
        };
        let label = FunctionLabel {
            function: function.to_owned(),
        };
        let guest_seconds = all.guest_seconds.get_or_create(&label).clone();
        let request_seconds = all.request_seconds.get_or_create(&label).clone();
        FunctionMetrics {
            ok_requests: ok(&all.requests),
            ok_inputs: ok(&all.inputs),
            guest_seconds,
            request_seconds,
            function: label.function,
            all,
        }
    }

    /// See [`RequestMetrics::start`].
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.all.start()
    }

    /// See [`RequestMetrics::computed`].
    pub(crate) fn computed<T>(
        &self,
        function: &str,
        outcome: &Result<T, ComputeError>,
        took: Duration,
    ) {
        if function != self.function || outcome.is_err() {
            return self.all.computed(function, outcome, took);
        }
        self.guest_seconds.observe(took.as_secs_f64());
        self.ok_inputs.inc();
    }

    /// See [`RequestMetrics::settled`].
    pub(crate) fn settled(&self, function: &str, outcome: &'static str) {
        if function != self.function || outcome != OK {
            return self.all.settled(function, outcome);
        }
        self.all.settled_total.fetch_add(1, Ordering::Relaxed);
        self.ok_requests.inc();
    }

    /// See [`RequestMetrics::answered`].
    pub(crate) fn answered(&self, function: &str, took: Duration, trace: Option<&TraceContext>) {
        if function != self.function {
            return self.all.answered(function, took, trace);
        }
        self.request_seconds
            .observe(took.as_secs_f64(), exemplar(trace), None);
    }
}

/// The outcome of a request answered with its result.
const OK: &str = "ok";

/// The exemplar of a request's timing: its trace, if it is traced.
fn exemplar(trace: Option<&TraceContext>) -> Option<TraceLabel> {
    trace.map(|trace| TraceLabel {
        trace_id: trace.trace_id_hex(),
    })
}

/// 50 µs to about 26 s, doubling: a guest call is microseconds, a request
/// with its confirm milliseconds, a runaway its deadline.
fn request_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(50e-6, 2.0, 20)
}

fn observe(histograms: &Family<FunctionLabel, Histogram>, function: &str, took: Duration) {
    let label = FunctionLabel {
        function: function.to_owned(),
    };
    histograms.get_or_create(&label).observe(took.as_secs_f64());
}

/// A request in flight; counted down when dropped, however it ends.
pub(crate) struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The functions a node serves, by name, for the module metrics.
type Modules = Mutex<BTreeMap<String, Arc<LiveModule>>>;

/// A node's metrics, for all the functions it serves: the registry to
/// encode and the request metrics to record into.
pub(crate) struct NodeMetrics {
    registry: Registry,
    pub(crate) requests: Arc<RequestMetrics>,
    /// 1 while the broker blocks publishing (a memory or disk alarm).
    pub(crate) broker_blocked: Gauge,
    /// 1 while the node has a connection to the broker.
    pub(crate) broker_connected: Gauge,
    /// Registry messages that changed nothing, by cause.
    registry_refused: Family<CauseLabel, Counter>,
    /// Whether the node is consuming: set once it has started, cleared
    /// when it begins to stop. With `broker_connected`, what `/health`
    /// answers.
    pub(crate) serving: AtomicBool,
    modules: Arc<Modules>,
}

impl NodeMetrics {
    /// Adds a function's module metrics (swaps, reload failures, digest).
    pub(crate) fn add_function(&self, name: &str, live: Arc<LiveModule>) {
        lock(&self.modules).insert(name.to_owned(), live);
    }

    /// Drops a function's module metrics once it is no longer served,
    /// unless a function of the same name has been added since.
    pub(crate) fn remove_function(&self, name: &str, live: &Arc<LiveModule>) {
        let mut modules = lock(&self.modules);
        if modules
            .get(name)
            .is_some_and(|kept| Arc::ptr_eq(kept, live))
        {
            modules.remove(name);
        }
    }

    /// Counts `count` registry messages that changed nothing, and why.
    pub(crate) fn registry_refused(&self, cause: &'static str, count: u64) {
        self.registry_refused
            .get_or_create(&CauseLabel { cause })
            .inc_by(count);
    }

    pub(crate) fn new() -> Self {
        let buckets = || Histogram::new(request_buckets());
        let requests = Arc::new(RequestMetrics {
            requests: Family::default(),
            inputs: Family::default(),
            guest_seconds: Family::new_with_constructor(buckets),
            request_seconds: Family::new_with_constructor(|| {
                HistogramWithExemplars::new(request_buckets())
            }),
            in_flight: Gauge::default(),
            settled_total: AtomicU64::new(0),
        });
        let mut registry = Registry::with_prefix("compute");
        registry.register(
            "requests",
            "Requests answered, by function and outcome",
            requests.requests.clone(),
        );
        registry.register(
            "inputs",
            "Inputs computed, by function and outcome: one for each request, and one for each input of a batch, where `requests` counts the batch once",
            requests.inputs.clone(),
        );
        registry.register(
            "guest_call_seconds",
            "Time in the guest: instantiating and running the function",
            requests.guest_seconds.clone(),
        );
        registry.register(
            "request_seconds",
            "Time from taking a request to its ack: compute, reply, and with --ack-mode on-confirm the broker's confirm",
            requests.request_seconds.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being computed or replied to",
            requests.in_flight.clone(),
        );
        let broker_blocked = Gauge::default();
        registry.register(
            "broker_blocked",
            "1 while RabbitMQ blocks this node's publishing (a memory or disk alarm)",
            broker_blocked.clone(),
        );
        let broker_connected = Gauge::default();
        registry.register(
            "broker_connected",
            "1 while the node has a connection to RabbitMQ",
            broker_connected.clone(),
        );
        let registry_refused = Family::default();
        registry.register(
            "registry_messages_refused",
            "Registry messages that changed nothing, by cause: unreadable, old-format, untrusted, replayed, other-registry, unknown-version",
            registry_refused.clone(),
        );
        let modules = Arc::new(Modules::default());
        registry.register_collector(Box::new(ModuleCollector {
            modules: modules.clone(),
        }));
        NodeMetrics {
            registry,
            requests,
            broker_blocked,
            broker_connected,
            registry_refused,
            serving: AtomicBool::new(false),
            modules,
        }
    }

    /// Whether the node is connected to the broker and serving, as
    /// `GET /health` answers it.
    pub(crate) fn healthy(&self) -> bool {
        self.serving.load(Ordering::Acquire) && self.broker_connected.get() == 1
    }

    /// The metrics in the Prometheus text format.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function's handler counts into the series the node exports,
    /// through the series it looked up once and through the lookups of
    /// other outcomes alike.
    #[test]
    fn a_functions_metrics_are_the_exported_series() {
        let node = NodeMetrics::new();
        let metrics = FunctionMetrics::new(node.requests.clone(), "increase");
        let ok: Result<(), ComputeError> = Ok(());
        metrics.computed("increase", &ok, Duration::from_micros(7));
        metrics.settled("increase", OK);
        metrics.answered("increase", Duration::from_micros(90), None);
        metrics.settled("increase", "bad-request");
        metrics.settled("increase", OK);

        let text = node.encode();
        for line in [
            r#"requests_total{function="increase",outcome="ok"} 2"#,
            r#"requests_total{function="increase",outcome="bad-request"} 1"#,
            r#"inputs_total{function="increase",outcome="ok"} 1"#,
            r#"guest_call_seconds_count{function="increase"} 1"#,
            r#"request_seconds_count{function="increase"} 1"#,
        ] {
            assert!(
                text.lines().any(|exported| exported.ends_with(line)),
                "no {line} in\n{text}"
            );
        }
        assert_eq!(node.requests.settled_total(), 3);
    }
}
