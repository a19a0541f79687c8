//! Prometheus metrics of a compute node, served in the text format on
//! `--metrics-addr` (`GET /metrics`).
//!
//! Requests are counted by function and outcome as they are answered; the
//! module's swaps, failed reloads and current digest are read from the
//! [`LiveModule`] at each scrape, so the table of functions knows nothing
//! of metrics.

use crate::{live::LiveModule, lock::lock, throttle::Throttle};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, text::encode},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

pub(crate) use prometheus_client::metrics::gauge::Gauge;

/// Scrapes answered at once; more wait for a free slot, so a flood of
/// connections cannot take the node's file descriptors or memory.
const MAX_SCRAPES: usize = 32;
/// The wait after a failed accept (out of file descriptors, say), so the
/// accept loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long one scrape may take, from reading the request to writing the
/// last byte of the metrics, so a slow or silent client frees its slot.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

/// The per-request metrics, recorded by the request handler.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    guest_seconds: Family<FunctionLabel, Histogram>,
    request_seconds: Family<FunctionLabel, Histogram>,
    in_flight: Gauge,
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

    /// Records how long a guest call took.
    pub(crate) fn guest_call(&self, function: &str, took: Duration) {
        observe(&self.guest_seconds, function, took);
    }

    /// Counts a request settled with `outcome`.
    pub(crate) fn settled(&self, function: &str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                function: function.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Records the time from the start of computing to the ack (compute,
    /// reply, the broker's confirm).
    pub(crate) fn answered(&self, function: &str, took: Duration) {
        observe(&self.request_seconds, function, took);
    }
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

    pub(crate) fn new() -> Self {
        // 50 µs to about 26 s, doubling: a guest call is microseconds, a
        // request with its confirm milliseconds, a runaway its deadline.
        let buckets = || Histogram::new(exponential_buckets(50e-6, 2.0, 20));
        let requests = Arc::new(RequestMetrics {
            requests: Family::default(),
            guest_seconds: Family::new_with_constructor(buckets),
            request_seconds: Family::new_with_constructor(buckets),
            in_flight: Gauge::default(),
        });
        let mut registry = Registry::with_prefix("compute");
        registry.register(
            "requests",
            "Requests answered, by function and outcome",
            requests.requests.clone(),
        );
        registry.register(
            "guest_call_seconds",
            "Time in the guest: instantiating and running the function",
            requests.guest_seconds.clone(),
        );
        registry.register(
            "request_seconds",
            "Time from delivery to ack: compute, reply, the broker's confirm",
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
        let modules = Arc::new(Modules::default());
        registry.register_collector(Box::new(ModuleCollector {
            modules: modules.clone(),
        }));
        NodeMetrics {
            registry,
            requests,
            broker_blocked,
            modules,
        }
    }

    /// The metrics in the Prometheus text format.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Serves `GET /metrics` on `listener` until the handle is dropped.
    pub(crate) fn serve(self: Arc<Self>, listener: TcpListener) -> AbortOnDropHandle<()> {
        if let Ok(address) = listener.local_addr() {
            info!(%address, "serving metrics on http://{address}/metrics");
        }
        let scrapes = Arc::new(Semaphore::new(MAX_SCRAPES));
        let warnings = Throttle::default();
        AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                let Ok(slot) = scrapes.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        if let Some(held_back) = warnings.admit("accept") {
                            warn!(cause = %err, held_back, "cannot accept a metrics connection");
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let metrics = self.clone();
                tokio::spawn(async move {
                    let scrape = tokio::time::timeout(SCRAPE_TIMEOUT, metrics.respond(stream));
                    match scrape.await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => debug!(%peer, cause = %err, "metrics request failed"),
                        Err(_) => {
                            debug!(%peer, "metrics request took longer than {SCRAPE_TIMEOUT:?}")
                        }
                    }
                    drop(slot);
                });
            }
        }))
    }

    /// Answers one HTTP request: the metrics for `GET /metrics` (or `/`),
    /// 404 for anything else. One request per connection.
    async fn respond(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut head = Vec::with_capacity(1024);
        let mut buffer = [0; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        let request_line = head.split(|&byte| byte == b'\r').next().unwrap_or_default();
        let mut words = request_line.split(|&byte| byte == b' ');
        let (method, path) = (words.next(), words.next());
        let response = match (method, path) {
            (Some(b"GET"), Some(b"/metrics" | b"/")) => {
                let body = self.encode();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_owned(),
        };
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    }
}

/// Binds the metrics address, so a taken port is an error at start.
pub(crate) async fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| BindError { address, source })
}

/// The metrics address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {address}: {source}")]
pub struct BindError {
    address: SocketAddr,
    source: std::io::Error,
}

/// Each function's swaps, failed reloads and current version, read at
/// each scrape.
#[derive(Debug)]
struct ModuleCollector {
    modules: Arc<Modules>,
}

impl Collector for ModuleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let modules: Vec<Arc<LiveModule>> = lock(&self.modules).values().cloned().collect();
        let label = |live: &LiveModule| FunctionLabel {
            function: live.current().name().to_owned(),
        };
        for (name, help, value) in [
            (
                "module_swaps",
                "New versions of the module swapped in",
                LiveModule::swaps as fn(&LiveModule) -> u64,
            ),
            (
                "module_reload_failures",
                "Versions of the module file that could not be served",
                LiveModule::failed_reloads,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0_u64).metric_type(),
            )?;
            for live in &modules {
                ConstCounter::new(value(live)).encode(metric.encode_family(&label(live))?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "module_info",
            "The module version each function serves (always 1)",
            None,
            ConstGauge::new(1_i64).metric_type(),
        )?;
        for live in &modules {
            let module = live.current();
            let labels = [
                ("function", module.name().to_owned()),
                ("digest", module.digest().to_owned()),
            ];
            ConstGauge::new(1_i64).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
