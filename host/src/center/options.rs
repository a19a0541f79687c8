//! What a caller chooses about how a [`Center`](super::Center) calls.

use crate::shared::trace::Tracer;
use std::time::Duration;

/// RabbitMQ's default `max_message_size` (128 MiB): a larger message
/// makes the broker close the channel, which every call shares.
pub const DEFAULT_MAX_BODY: usize = 128 << 20;

/// How long a queue may have no consumer before the calls waiting on it
/// fail: longer than a node takes to reconnect after a broker restart,
/// or to be replaced in a rolling restart.
pub const DEFAULT_NO_CONSUMER_GRACE: Duration = Duration::from_secs(10);

/// How a [`Center`](super::Center) sends its requests.
#[derive(Clone, Debug)]
pub struct CenterOptions {
    /// The queue the compute nodes consume.
    pub queue: String,
    /// How long a call may take, from publishing to the reply, retries
    /// and reconnecting included.
    pub timeout: Duration,
    /// How many times a call is sent again when the connection to the
    /// broker is lost before its reply arrives.
    pub retries: u32,
    /// Where replies come back.
    pub reply_mode: ReplyMode,
    /// The largest request body sent; a larger one fails its own call
    /// with [`CallError::TooLarge`](super::CallError::TooLarge) without being published.
    pub max_body: usize,
    /// The version (`sha256:<hex>`, or the start of it that only one
    /// version the node holds has) every call asks for; a node that does
    /// not hold it answers `unknown-version`. `None` runs the current
    /// version.
    pub version: Option<String>,
    /// How long [`Center::connect_with`](super::Center::connect_with)
    /// tries a broker that does not answer, waiting longer after each
    /// try; `None` tries until it answers. A broker that answers no (a
    /// refused login) fails at once.
    pub connect_timeout: Option<Duration>,
    /// Publish requests persistent (delivery mode 2), for a durable
    /// queue such as a quorum queue: a request waiting there then
    /// survives a broker restart. Off, requests are published as the
    /// Python examples publish them.
    pub persistent: bool,
    /// Ask the broker to confirm each request. A request it refuses (a
    /// full queue with `x-overflow: reject-publish`) then fails at once
    /// with [`CallError::Refused`](super::CallError::Refused), and is sent
    /// again; without confirms such a call waits for its timeout. Nothing
    /// else changes: a request with no queue to go to fails with
    /// `no-route` either way, and a request lost with the connection is
    /// sent again either way. Off by default: confirms cost the broker and
    /// the center work on every call.
    pub confirms: bool,
    /// The TLS files for `amqps://` URLs that name none in their query.
    pub tls: crate::shared::amqp::TlsOptions,
    /// How long the queue may have no consumer, while calls wait on it,
    /// before they fail with
    /// [`CallError::NoConsumer`](super::CallError::NoConsumer); new calls
    /// then fail at once, until a node consumes the queue again. `None`:
    /// calls wait for their timeout.
    pub no_consumer_grace: Option<Duration>,
    /// Where each call's spans go. With [`Tracer::off`] (the default) a
    /// request carries no trace context; with export on, every request
    /// carries its send span's in `traceparent`.
    pub tracer: Tracer,
}

impl Default for CenterOptions {
    fn default() -> Self {
        CenterOptions {
            queue: crate::shared::queues::DEFAULT_QUEUE.into(),
            timeout: Duration::from_secs(30),
            retries: 3,
            reply_mode: ReplyMode::Queue,
            max_body: DEFAULT_MAX_BODY,
            version: None,
            connect_timeout: None,
            persistent: false,
            confirms: false,
            tls: crate::shared::amqp::TlsOptions::default(),
            no_consumer_grace: Some(DEFAULT_NO_CONSUMER_GRACE),
            tracer: Tracer::off(),
        }
    }
}

/// Where a [`Center`](super::Center)'s replies come back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplyMode {
    /// A private, exclusive reply queue, declared by the center.
    #[default]
    Queue,
    /// RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`): no queue at
    /// all; the broker routes replies straight to the center's channel.
    Direct,
}
