//! Which queue a function is served on: the naming policy and its
//! defaults, in one place for the node, the center and their commands.

use crate::amqp::{self, QueueNameError};
use lapin::types::ShortString;

/// The queue of the classic Python examples, and of a node serving one
/// module.
pub const DEFAULT_QUEUE: &str = "compute_queue";
/// The prefix of the queues of a node serving many functions.
pub const DEFAULT_PREFIX: &str = "compute";

/// How a node names the queue of each function it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Queues {
    /// Every function on this one queue: a node serving a single module.
    One(String),
    /// Function `name` on queue `<prefix>.<name>`.
    Prefixed(String),
}

impl Queues {
    /// The queue of function `name`, checked.
    ///
    /// # Errors
    ///
    /// When the name makes no valid AMQP queue name (too long, say).
    pub fn of(&self, name: &str) -> Result<ShortString, QueueNameError> {
        match self {
            Queues::One(queue) => amqp::queue_name(queue),
            Queues::Prefixed(prefix) => amqp::queue_name(&prefixed(prefix, name)),
        }
    }
}

/// `<prefix>.<name>`: the queue of function `name` under `prefix`.
pub fn prefixed(prefix: &str, name: &str) -> String {
    format!("{prefix}.{name}")
}
