//! Sending ended spans to an OTLP/HTTP collector, off the request path.
//!
//! A span is handed over with `try_send` on a bounded queue, so a request
//! never waits for export: when the queue is full (a collector slow or
//! down) the span is dropped and counted. The export task is not woken
//! for each span, which would cost more than the span: it sleeps until
//! the schedule delay has passed or a full batch waits, then takes what
//! is queued and posts it in batches, each with a timeout. A collector
//! that is down costs one warning when export starts failing, a reminder
//! at most every [`REMIND_EVERY`], and a line when it works again.

use super::{ExportConfig, otlp, span::Ended};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::{Notify, mpsc, mpsc::error::TryRecvError, oneshot},
};
use tracing::{info, warn};

/// How often a collector that stays down is mentioned again.
const REMIND_EVERY: Duration = Duration::from_secs(300);
/// The most of a collector's answer that is read: its status line is
/// what matters.
const MAX_ANSWER: u64 = 64 * 1024;

enum Item {
    Span(Box<Ended>),
    /// Export what is queued now, then answer.
    Flush(oneshot::Sender<()>),
}

/// Where ended spans go: a handle on the export task's queue.
#[derive(Clone)]
pub(crate) struct Exporter {
    queue: mpsc::Sender<Item>,
    /// Wakes the export task early: a full batch waits, or a flush.
    wake: Arc<Notify>,
    max_batch: usize,
    dropped: Arc<AtomicU64>,
}

impl Exporter {
    /// Starts the export task on the current runtime.
    pub(crate) fn start(config: ExportConfig) -> Self {
        let (queue, spans) = mpsc::channel(config.max_queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let wake = Arc::new(Notify::new());
        let exporter = Exporter {
            queue,
            wake: wake.clone(),
            max_batch: config.max_batch,
            dropped: dropped.clone(),
        };
        let task = ExportTask {
            config,
            spans,
            wake,
            dropped,
            failing_since: None,
            reminded: None,
        };
        tokio::spawn(task.run());
        exporter
    }

    /// Queues `span` for export, or drops it when the queue is full.
    pub(super) fn offer(&self, span: Box<Ended>) {
        if self.queue.try_send(Item::Span(span)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let queued = self.queue.max_capacity() - self.queue.capacity();
        if queued >= self.max_batch {
            self.wake.notify_one();
        }
    }

    /// Exports every span queued so far, waiting at most `limit`.
    pub(crate) async fn flush(&self, limit: Duration) {
        let (done, exported) = oneshot::channel();
        let flushed = async {
            if self.queue.send(Item::Flush(done)).await.is_ok() {
                self.wake.notify_one();
                let _ = exported.await;
            }
        };
        let _ = tokio::time::timeout(limit, flushed).await;
    }
}

struct ExportTask {
    config: ExportConfig,
    spans: mpsc::Receiver<Item>,
    wake: Arc<Notify>,
    dropped: Arc<AtomicU64>,
    /// When exports started failing, while they fail.
    failing_since: Option<Instant>,
    reminded: Option<Instant>,
}

impl ExportTask {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.config.max_batch);
        let mut flushes = Vec::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.schedule_delay) => {}
                _ = self.wake.notified() => {}
            }
            // Everything queued now, a batch at a time.
            let mut closed = false;
            loop {
                while batch.len() < self.config.max_batch {
                    match self.spans.try_recv() {
                        Ok(Item::Span(span)) => batch.push(*span),
                        Ok(Item::Flush(done)) => flushes.push(done),
                        Err(TryRecvError::Empty) => break,
                        // Every handle is gone.
                        Err(TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                let full = batch.len() == self.config.max_batch;
                self.export(&mut batch).await;
                if !full {
                    break;
                }
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            if closed {
                return;
            }
        }
    }

    async fn export(&mut self, batch: &mut Vec<Ended>) {
        if batch.is_empty() {
            return;
        }
        let body = otlp::encode(&self.config.resource, batch);
        let count = batch.len() as u64;
        batch.clear();
        let posted = tokio::time::timeout(self.config.timeout, self.post(&body)).await;
        let failure = match posted {
            Ok(Ok(())) => None,
            Ok(Err(cause)) => Some(cause),
            Err(_) => Some(format!(
                "no answer within {:?} (OTEL_EXPORTER_OTLP_TIMEOUT)",
                self.config.timeout
            )),
        };
        match (failure, self.failing_since) {
            (None, None) => {}
            (None, Some(since)) => {
                info!(
                    endpoint = %self.config.endpoint,
                    failing_for_s = since.elapsed().as_secs(),
                    dropped = self.dropped.swap(0, Ordering::Relaxed),
                    "exporting spans again"
                );
                self.failing_since = None;
                self.reminded = None;
            }
            (Some(cause), failing) => {
                self.dropped.fetch_add(count, Ordering::Relaxed);
                let remind = failing.is_none()
                    || self
                        .reminded
                        .is_some_and(|reminded| reminded.elapsed() >= REMIND_EVERY);
                self.failing_since.get_or_insert_with(Instant::now);
                if remind {
                    self.reminded = Some(Instant::now());
                    warn!(
                        endpoint = %self.config.endpoint,
                        %cause,
                        dropped = self.dropped.load(Ordering::Relaxed),
                        "cannot export spans; dropping them until the collector answers (requests are not affected; this is said again every {} s while it lasts)",
                        REMIND_EVERY.as_secs()
                    );
                }
            }
        }
    }

    /// One HTTP/1.1 POST of `body`; `Ok` when the collector answers 2xx.
    async fn post(&self, body: &[u8]) -> Result<(), String> {
        let url = &self.config.endpoint;
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|err| format!("cannot connect: {err}"))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n",
            &url[url::Position::BeforePath..],
            body.len()
        );
        for (name, value) in &self.config.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let sent = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body).await?;
            let mut answer = Vec::new();
            (&mut stream)
                .take(MAX_ANSWER)
                .read_to_end(&mut answer)
                .await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = sent
            .await
            .map_err(|err| format!("the request failed: {err}"))?;
        let status_line = answer
            .split(|byte| *byte == b'\r')
            .next()
            .unwrap_or_default();
        let status_line = String::from_utf8_lossy(status_line);
        match status_line.split(' ').nth(1) {
            Some(code) if code.starts_with('2') => Ok(()),
            _ => Err(format!("the collector answered {status_line:?}")),
        }
    }
}
