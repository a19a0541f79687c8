//! One span: what it records while it runs, and what it hands to the
//! exporter when it ends.

use super::{TraceContext, export::Exporter};
use std::time::SystemTime;

/// The longest error description a span keeps, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;

/// What a span stands for, as OTLP numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Work inside a process: the guest call.
    Internal = 1,
    /// A whole call, as its caller sees it.
    Client = 3,
    /// Sending a message.
    Producer = 4,
    /// Processing a message received.
    Consumer = 5,
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A text known when the program was built (a kind, an outcome):
    /// nothing to copy.
    Static(&'static str),
    Str(String),
    Int(i64),
}

impl From<&'static str> for Value {
    fn from(value: &'static str) -> Self {
        Value::Static(value)
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Str(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

/// Something that happened at one moment of a span: a failed input of a
/// batch.
#[derive(Clone, Debug)]
pub struct Event {
    pub name: &'static str,
    pub time: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
}

/// A span once ended: what the exporter sends.
#[derive(Clone, Debug)]
pub struct Ended {
    pub context: TraceContext,
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
    pub events: Vec<Event>,
    /// The error's description, when the span's work failed.
    pub error: Option<String>,
}

/// A span while it runs. It ends, and goes to the exporter, when dropped,
/// so every way out of the work it measures ends it. Without an exporter
/// it only carries its context: recording anything is skipped.
pub struct Span {
    recorded: Option<(Box<Ended>, Exporter)>,
    context: TraceContext,
}

impl Span {
    pub(super) fn start(
        exporter: Option<&Exporter>,
        name: impl FnOnce() -> String,
        kind: Kind,
        parent: Option<&TraceContext>,
    ) -> Self {
        let context = parent.map_or_else(TraceContext::new_root, TraceContext::child);
        let recorded = exporter.filter(|_| context.sampled()).map(|exporter| {
            let ended = Ended {
                context,
                parent: parent.map(|parent| parent.span_id),
                name: name(),
                kind,
                start: SystemTime::now(),
                end: SystemTime::UNIX_EPOCH,
                attributes: Vec::new(),
                events: Vec::new(),
                error: None,
            };
            (Box::new(ended), exporter.clone())
        });
        Span { recorded, context }
    }

    /// Its context: what a message it sends carries as `traceparent`, and
    /// what its children name as their parent.
    pub fn context(&self) -> &TraceContext {
        &self.context
    }

    /// Whether it is exported: when not, there is no point computing what
    /// it would record.
    pub fn is_recording(&self) -> bool {
        self.recorded.is_some()
    }

    /// Sets an attribute; nothing when the span is not recorded.
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some((ended, _)) = &mut self.recorded {
            ended.attributes.push((key, value.into()));
        }
    }

    /// Records an event at this moment: what happened inside the span
    /// without a span of its own (a failed input of a batch).
    pub fn event(&mut self, name: &'static str, attributes: Vec<(&'static str, Value)>) {
        if let Some((ended, _)) = &mut self.recorded {
            ended.events.push(Event {
                name,
                time: SystemTime::now(),
                attributes,
            });
        }
    }

    /// Marks it failed, with `description`, cut to [`MAX_DESCRIPTION`]
    /// bytes: an error message can be as large as a reply, and thousands
    /// of spans wait in the export queue.
    pub fn fail(&mut self, description: impl FnOnce() -> String) {
        if let Some((ended, _)) = &mut self.recorded {
            let mut description = description();
            if description.len() > MAX_DESCRIPTION {
                let cut = (0..=MAX_DESCRIPTION)
                    .rev()
                    .find(|&at| description.is_char_boundary(at))
                    .unwrap_or(0);
                description.truncate(cut);
            }
            ended.error = Some(description);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((mut ended, exporter)) = self.recorded.take() {
            ended.end = SystemTime::now();
            exporter.offer(ended);
        }
    }
}
