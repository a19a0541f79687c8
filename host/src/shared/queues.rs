//! Which queue a function is served on: the naming policy and its
//! defaults, in one place for the node, the center and their commands.

use crate::shared::amqp::{self, QueueNameError};
use lapin::{
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable, ShortString},
};

/// The queue of the classic Python examples, and of a node serving one
/// module.
pub const DEFAULT_QUEUE: &str = "compute_queue";
/// The prefix of the queues of a node serving many functions.
pub const DEFAULT_PREFIX: &str = "compute";

/// A quorum queue's default delivery limit: a request delivered this many
/// times more (its node died or lost its connection each time) is
/// dead-lettered instead of delivered again.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;

/// How a node declares its queues, and the type `--queue-type` names on
/// the command lines (`quorum` with the default delivery limit there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum QueueType {
    /// Durable classic queues on the one broker node that holds them;
    /// requests are not persistent, so a broker restart keeps the queue
    /// and drops what waited in it. A queue that exists already, of any
    /// type or durability (a Python peer's, an operator's), is used as
    /// it is: it is declared passively first.
    #[default]
    Classic,
    /// As the Python examples declare them: not durable, gone with their
    /// broker node. RabbitMQ 4.3 and later refuse them by default.
    Transient,
    /// Durable quorum queues, replicated across a cluster (Raft): they
    /// survive a broker node, and a request redelivered more than
    /// `delivery_limit` times goes to `dead_letter_queue` (`<queue>.dead`
    /// when `None`), which is declared too.
    Quorum {
        delivery_limit: u32,
        dead_letter_queue: Option<String>,
    },
}

/// The types `--queue-type` takes, in the order its help lists them.
static QUEUE_TYPES: [QueueType; 3] = [
    QueueType::Classic,
    QueueType::Quorum {
        delivery_limit: DEFAULT_DELIVERY_LIMIT,
        dead_letter_queue: None,
    },
    QueueType::Transient,
];

impl clap::ValueEnum for QueueType {
    fn value_variants<'a>() -> &'a [Self] {
        &QUEUE_TYPES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let (name, help) = match self {
            QueueType::Classic => (
                "classic",
                "Durable, on one broker node, messages not persistent: what every RabbitMQ from 3.x to 4.3 and later accepts. A queue that exists already is used as it is",
            ),
            QueueType::Quorum { .. } => ("quorum", "Durable and replicated across a cluster"),
            QueueType::Transient => (
                "transient",
                "Not durable, exactly as the Python examples declare it. RabbitMQ 4.3 and later refuse it unless their operator permits the deprecated feature `transient_nonexcl_queues`",
            ),
        };
        Some(clap::builder::PossibleValue::new(name).help(help))
    }
}

impl QueueType {
    /// Whether this is a quorum queue, whatever its settings.
    pub fn is_quorum(&self) -> bool {
        matches!(self, QueueType::Quorum { .. })
    }

    /// How to declare `queue`: its options and arguments.
    pub(crate) fn declaration(&self, queue: &str) -> (QueueDeclareOptions, FieldTable) {
        match self {
            // Durable and nothing more: every RabbitMQ accepts it, and no
            // deprecated feature (`transient_nonexcl_queues`,
            // `x-queue-mode`, `x-queue-master-locator`, `x-queue-version`)
            // is asked for.
            QueueType::Classic => (QueueDeclareOptions::durable(), FieldTable::default()),
            QueueType::Transient => (QueueDeclareOptions::default(), FieldTable::default()),
            QueueType::Quorum { delivery_limit, .. } => {
                let (options, mut arguments) = quorum();
                arguments.insert(
                    "x-delivery-limit".into(),
                    AMQPValue::LongUInt(*delivery_limit),
                );
                arguments.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString("".into()),
                );
                let dead_letter = self.dead_letter_queue(queue).unwrap_or_default();
                arguments.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString(dead_letter.as_str().into()),
                );
                (options, arguments)
            }
        }
    }

    /// Whether a queue that exists already is used as it is, rather than
    /// declared with this type's settings (and refused by the broker when
    /// they differ). Only the default: a quorum queue's delivery limit
    /// and a transient queue's exact declaration are what their user
    /// asked for.
    pub(crate) fn takes_existing(&self) -> bool {
        matches!(self, QueueType::Classic)
    }

    /// Where `queue`'s requests go past the delivery limit, if anywhere.
    pub(crate) fn dead_letter_queue(&self, queue: &str) -> Option<ShortString> {
        match self {
            QueueType::Classic | QueueType::Transient => None,
            QueueType::Quorum {
                dead_letter_queue, ..
            } => Some(
                dead_letter_queue
                    .clone()
                    .unwrap_or_else(|| format!("{queue}.dead"))
                    .into(),
            ),
        }
    }

    /// How to declare a dead-letter queue: a quorum queue that keeps what
    /// reaches it.
    pub(crate) fn dead_letter_declaration() -> (QueueDeclareOptions, FieldTable) {
        quorum()
    }
}

/// A durable quorum queue, with no more arguments yet.
fn quorum() -> (QueueDeclareOptions, FieldTable) {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    (QueueDeclareOptions::durable(), arguments)
}

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
