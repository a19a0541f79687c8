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

use super::{ExportConfig, otlp, post, span::Ended};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{Notify, mpsc, mpsc::error::TryRecvError, oneshot};
use tracing::{info, warn};

/// How often a collector that stays down is mentioned again.
const REMIND_EVERY: Duration = Duration::from_secs(300);
/// The most spans a batch reserves room for before any arrive.
const BATCH_RESERVE: usize = 1024;

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
        let mut batch = Vec::with_capacity(self.config.max_batch.min(BATCH_RESERVE));
        let mut flushes = Vec::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.schedule_delay) => {}
                _ = self.wake.notified() => {}
            }
            // Everything queued now, a batch at a time: while batches come
            // back full, spans arrive faster than one batch a wake.
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
        let posted = tokio::time::timeout(self.config.timeout, post::post(&self.config, &body));
        let failure = match posted.await {
            Ok(Ok(())) => None,
            Ok(Err(cause)) => Some(cause.to_string()),
            Err(_) => Some(format!(
                "no answer within {:?} (OTEL_EXPORTER_OTLP_TIMEOUT)",
                self.config.timeout
            )),
        };
        match (failure, self.failing_since) {
            (None, None) => self.say_dropped(),
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
                let remind = failing.is_none() || self.may_remind();
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

    /// With a collector that answers, says (at most every
    /// [`REMIND_EVERY`]) how many spans found the queue full.
    fn say_dropped(&mut self) {
        if self.dropped.load(Ordering::Relaxed) == 0 || !self.may_remind() {
            return;
        }
        self.reminded = Some(Instant::now());
        warn!(
            dropped = self.dropped.swap(0, Ordering::Relaxed),
            max_queue = self.config.max_queue,
            "spans dropped: they came faster than the collector took them (OTEL_BSP_MAX_QUEUE_SIZE)"
        );
    }

    fn may_remind(&self) -> bool {
        self.reminded
            .is_none_or(|reminded| reminded.elapsed() >= REMIND_EVERY)
    }
}
