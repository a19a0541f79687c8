//! What `center --stats` prints at the end of a run, and the progress bar
//! `center` shows on a terminal meanwhile. Both take constant memory, so a
//! million inputs cost what ten do.

use crate::center::{CallError, Reply};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    time::{Duration, Instant},
};

/// Distinct error kinds counted by name; the rest go under
/// [`OTHER_ERRORS`].
pub const MAX_ERROR_KINDS: usize = 16;
/// Where error kinds past [`MAX_ERROR_KINDS`] are counted.
pub const OTHER_ERRORS: &str = "other";

/// Counts and latencies of a run's calls.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    ok: u64,
    errors: BTreeMap<String, u64>,
    /// Call latencies in microseconds, to 3 significant digits.
    latency_us: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            ok: 0,
            errors: BTreeMap::new(),
            // 1 µs to an hour; longer calls count as an hour.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("the bounds and precision are valid"),
        }
    }
}

impl Stats {
    /// Counts one call that took `latency`.
    ///
    /// Error kinds come from the node's `x-error` header, so from any
    /// peer: past [`MAX_ERROR_KINDS`] distinct kinds, new ones are counted
    /// as [`OTHER_ERRORS`], and the map stays small.
    pub fn record(&mut self, result: &Result<Reply, CallError>, latency: Duration) {
        match result {
            Ok(_) => self.ok += 1,
            Err(err) => {
                let kind = err.kind();
                let key = if self.errors.contains_key(kind) || self.errors.len() < MAX_ERROR_KINDS {
                    kind
                } else {
                    OTHER_ERRORS
                };
                *self.errors.entry(key.to_owned()).or_default() += 1;
            }
        }
        // Saturates rather than fails on a latency beyond the histogram.
        self.latency_us
            .saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Calls counted so far.
    pub fn count(&self) -> u64 {
        self.latency_us.len()
    }

    /// Calls that succeeded.
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// Calls that failed, of any kind.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    fn calls_per_second(&self) -> f64 {
        self.count() as f64 / self.started.elapsed().as_secs_f64()
    }

    fn percentile_ms(&self, percentile: f64) -> f64 {
        self.latency_us.value_at_quantile(percentile / 100.0) as f64 / 1000.0
    }

    /// `{"stats":{"count":3,"ok":2,"errors":{"timeout":1},"calls_per_s":...,"p50_ms":...,"p99_ms":...}}`
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "stats": {
                "count": self.count(),
                "ok": self.ok,
                "errors": self.errors,
                "calls_per_s": round(self.calls_per_second()),
                "p50_ms": round(self.percentile_ms(50.0)),
                "p99_ms": round(self.percentile_ms(99.0)),
            }
        })
        .to_string()
    }

    /// A few lines for a person.
    pub fn to_text(&self) -> String {
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(kind, count)| format!("{count} {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{} calls: {} ok, errors: {errors}\n{:.0} calls/s, latency p50 {:.3} ms, p99 {:.3} ms",
            self.count(),
            self.ok,
            self.calls_per_second(),
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
        )
    }
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Requests before the progress bar shows: a short run is over before a
/// bar would tell anyone anything.
const PROGRESS_AFTER: u64 = 300;

/// A progress bar on stderr (requests done, rate, errors), shown only on a
/// terminal and only once a run is past a few hundred requests.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar if stderr is a terminal; otherwise nothing is ever drawn.
    pub fn on_terminal() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {pos} done, {msg}")
                    .expect("the template is valid"),
            );
            bar
        });
        Progress { bar }
    }

    /// Updates the bar after each call.
    pub fn update(&self, stats: &Stats) {
        let Some(bar) = &self.bar else { return };
        if stats.count() == PROGRESS_AFTER {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        bar.set_position(stats.count());
        bar.set_message(format!(
            "{:.0} calls/s, {} errors",
            stats.calls_per_second(),
            stats.failed()
        ));
    }

    /// Removes the bar, leaving stderr as it was.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::center::Origin;

    /// A peer that invents a new `x-error` for every reply cannot grow
    /// the summary.
    #[test]
    fn error_kinds_from_peers_are_bounded() {
        let mut stats = Stats::default();
        for n in 0..1000 {
            let invented = Err(CallError::Remote {
                kind: crate::shared::wire::PeerErrorKind::Other(format!("kind-{n}")),
                message: String::new(),
                origin: Origin::default(),
            });
            stats.record(&invented, Duration::from_millis(1));
        }
        assert_eq!(stats.errors.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(stats.errors[OTHER_ERRORS], 1000 - MAX_ERROR_KINDS as u64);
        assert_eq!(stats.failed(), 1000);
    }

    #[test]
    fn counts_outcomes_and_latencies() {
        let mut stats = Stats::default();
        let ok = Ok(Reply {
            body: b"2".to_vec(),
            origin: Origin::default(),
        });
        for millis in 1..=99 {
            stats.record(&ok, Duration::from_millis(millis));
        }
        stats.record(
            &Err(CallError::Timeout(Duration::from_secs(30))),
            Duration::from_secs(30),
        );

        let json: serde_json::Value = serde_json::from_str(&stats.to_json()).unwrap();
        let stats_json = &json["stats"];
        assert_eq!(stats_json["count"], 100);
        assert_eq!(stats_json["ok"], 99);
        assert_eq!(stats_json["errors"], serde_json::json!({"timeout": 1}));
        let p50 = stats_json["p50_ms"].as_f64().unwrap();
        assert!((49.9..=50.1).contains(&p50), "{p50}");
        let p99 = stats_json["p99_ms"].as_f64().unwrap();
        assert!((98.9..=99.1).contains(&p99), "{p99}");
        assert!(
            stats
                .to_text()
                .starts_with("100 calls: 99 ok, errors: 1 timeout\n")
        );
    }
}
