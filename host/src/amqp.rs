//! Connecting to RabbitMQ with an error a person can act on, and keeping
//! the password in an AMQP URL out of every message.

use crate::backoff::Backoff;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer, ErrorKind,
    message::BasicReturnMessage,
    options::{BasicConsumeOptions, BasicPublishOptions},
    types::{FieldTable, ShortString},
};
use std::{fmt, future::Future, time::Duration};
use tracing::{info, warn};

/// The default broker: a local RabbitMQ with the default vhost.
pub const DEFAULT_URL: &str = "amqp://127.0.0.1:5672/%2f";

/// How long to wait for the broker to answer when (re)connecting or
/// closing. A broker that is starting up, or a connection half gone, may
/// accept and never answer; without a bound a reconnect would hang.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The pseudo-queue of RabbitMQ's direct reply-to, and the prefix of the
/// `reply_to` it gives each request.
pub(crate) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Why connecting to the broker failed, worded for the person running the
/// command.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach RabbitMQ at {url}: {cause}; {hint}")]
pub struct ConnectError {
    url: Redacted,
    cause: String,
    hint: &'static str,
    // Not named `source`, which thiserror would chain: `cause` already
    // says what it says, and printing the chain (`{:#}`) would repeat it.
    client_error: Option<lapin::Error>,
    /// Whether trying again later may succeed: nothing answered (yet), as
    /// opposed to a broker that answered no (a refused login).
    transient: bool,
}

/// Opens a connection to `url`, waiting at most [`ANSWER_TIMEOUT`] for the
/// broker to answer.
///
/// An `amqps://` URL is refused when this build has no TLS, rather than
/// silently connecting in plain text.
pub async fn connect(url: &str) -> Result<Connection, ConnectError> {
    if !cfg!(feature = "tls") && url.trim_start().to_ascii_lowercase().starts_with("amqps:") {
        return Err(ConnectError::new(
            url,
            "this build has no TLS, so it will not connect to an amqps:// URL in plain text".into(),
            "build with `--features compute-host/tls`, or use amqp:// on a trusted network",
            None,
            false,
        ));
    }
    // The client reports a host name that does not resolve as an
    // "uncategorized error": resolving it first says what is wrong. A URL
    // that does not parse is left to the client's own message.
    if let Ok(uri) = url.parse::<lapin::uri::AMQPUri>() {
        let host = uri.authority.host;
        let lookup = tokio::net::lookup_host((host.as_str(), uri.authority.port));
        if let Ok(Err(err)) = tokio::time::timeout(ANSWER_TIMEOUT, lookup).await {
            return Err(ConnectError::new(
                url,
                format!("cannot resolve the host name {host:?}: {err}"),
                "check the host in the URL",
                None,
                true,
            ));
        }
    }
    let connect = Connection::connect(url, ConnectionProperties::default());
    let Ok(connected) = tokio::time::timeout(ANSWER_TIMEOUT, connect).await else {
        return Err(ConnectError::new(
            url,
            format!("no answer within {ANSWER_TIMEOUT:?}"),
            "is the broker starting up, or is something else listening there?",
            None,
            true,
        ));
    };
    connected.map_err(|source| {
        let (cause, hint, transient) = match source.kind() {
            // "connection refused" reads better than the raw
            // "Connection refused (os error 111)".
            ErrorKind::IOError(io) if io.kind() != std::io::ErrorKind::Other => (
                io.kind().to_string(),
                "is the broker running? (`rabbitmq-server -detached` starts a local one)",
                true,
            ),
            _ => (
                source.to_string(),
                "check the URL, the user name and the password",
                false,
            ),
        };
        ConnectError::new(url, cause, hint, Some(source), transient)
    })
}

impl ConnectError {
    fn new(
        url: &str,
        cause: String,
        hint: &'static str,
        client_error: Option<lapin::Error>,
        transient: bool,
    ) -> Self {
        ConnectError {
            url: Redacted(url.to_owned()),
            cause,
            hint,
            client_error,
            transient,
        }
    }

    /// Whether trying again later may succeed: nothing answered, or the
    /// host name did not resolve (yet), as when the broker is still
    /// starting. A broker that answered no (a refused login, a missing
    /// vhost) or a URL this build cannot serve will say the same again.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The underlying client error, when the client library failed (and
    /// not this crate's own checks).
    pub fn lapin_error(&self) -> Option<&lapin::Error> {
        self.client_error.as_ref()
    }

    /// The connection opened but the broker did not answer while setting
    /// up a channel or queue on it.
    pub(crate) fn no_answer(url: &str) -> Self {
        ConnectError::new(
            url,
            format!("no answer within {ANSWER_TIMEOUT:?} while setting up"),
            "is the broker overloaded or in a resource alarm?",
            None,
            true,
        )
    }

    /// The connection opened but setting up a channel or queue on it
    /// failed (for example a missing vhost permission).
    pub(crate) fn setup(url: &str, source: lapin::Error) -> Self {
        // A connection lost while setting up may come back; a refusal
        // will not.
        let transient = matches!(source.kind(), ErrorKind::IOError(_));
        ConnectError::new(
            url,
            source.to_string(),
            "check that the user may declare and consume queues",
            Some(source),
            transient,
        )
    }
}

/// Tries `attempt` until it succeeds, fails for good, or `limit` has
/// passed (`None`: no limit), waiting longer after each transient failure
/// (up to `max_wait`), as a worker started before its broker should. The
/// first transient failure is logged, once; the last one is the error.
pub(crate) async fn patiently<T, Attempt>(
    limit: Option<Duration>,
    max_wait: Duration,
    mut attempt: impl FnMut() -> Attempt,
) -> Result<T, ConnectError>
where
    Attempt: Future<Output = Result<T, ConnectError>>,
{
    let deadline = limit.map(|limit| tokio::time::Instant::now() + limit);
    let mut backoff = Backoff::up_to(max_wait);
    let mut said = false;
    loop {
        let error = match attempt().await {
            Ok(connected) => {
                if said {
                    info!("RabbitMQ answers now");
                }
                return Ok(connected);
            }
            Err(error) => error,
        };
        let wait = backoff.next_wait();
        let out_of_time =
            deadline.is_some_and(|deadline| tokio::time::Instant::now() + wait > deadline);
        if !error.is_transient() || out_of_time {
            return Err(error);
        }
        if !said {
            let until = match limit {
                Some(limit) => format!("for up to {} s (--connect-timeout)", limit.as_secs_f64()),
                None => "until it does (--connect-timeout bounds this)".to_owned(),
            };
            warn!(cause = %error, "RabbitMQ does not answer yet; trying again with backoff {until}");
            said = true;
        }
        tokio::time::sleep(wait).await;
    }
}

/// Consumes `queue` without acks: each delivery is settled as it is sent,
/// as replies, status answers and fanout listeners want (and direct
/// reply-to requires).
pub async fn consume_no_ack(
    channel: &Channel,
    queue: ShortString,
) -> Result<Consumer, lapin::Error> {
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    channel
        .basic_consume(queue, "".into(), no_ack, FieldTable::default())
        .await
}

/// A queue name as AMQP carries it: at most 255 bytes. Checked wherever a
/// name comes from a person or a file, so a long one is an error to
/// report, not a panic in the client library.
pub fn queue_name(name: &str) -> Result<ShortString, QueueNameError> {
    ShortString::try_new(name).map_err(|_| QueueNameError {
        name: name.chars().take(40).collect(),
        bytes: name.len(),
    })
}

/// A queue name longer than AMQP allows.
#[derive(Debug, thiserror::Error)]
#[error(
    "the queue name {name:?}... is {bytes} bytes long; AMQP allows at most 255 (shorten the name or the file name it comes from)"
)]
pub struct QueueNameError {
    /// The start of the name.
    name: String,
    /// Its length in bytes.
    bytes: usize,
}

/// Where the broker put a message published with [`publish_mandatory`].
#[derive(Debug)]
pub(crate) enum Routed {
    /// Into the queue named by the routing key.
    Queued,
    /// Nowhere: no queue has that name, so the broker returned it. The
    /// message returned is not always the one published: when several are
    /// returned at once the client may pair them in another order, so a
    /// caller matches it by its correlation id.
    Returned(Box<BasicReturnMessage>),
    /// The broker refused it (a negative confirm).
    Refused,
}

/// Why a message was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The client library failed to send it (the channel or connection is
    /// gone, or the broker closed the channel).
    #[error("publishing failed: {0}")]
    Client(#[from] lapin::Error),
    /// The broker did not confirm it in time.
    #[error("the broker did not confirm the message within {0:?}")]
    NoConfirm(Duration),
    /// The broker refused it (a negative confirm), when the caller treats
    /// that as a failure.
    #[error("the broker refused the message (a negative confirm)")]
    Refused,
}

/// Publishes `body` through the default exchange to the queue `queue`,
/// `mandatory`, and waits for the broker's confirm, so an unroutable
/// message is known at once rather than silently dropped. The channel must
/// be in confirm mode for [`Routed::Returned`] and [`Routed::Refused`] to
/// be seen.
///
/// The wait has no bound of its own, so a call does not pay for a second
/// timer: each caller bounds it (a node's reply by
/// its confirm timeout, a center's call by its deadline). A broker in a
/// memory or disk alarm may never confirm.
///
/// Direct reply-to addresses are published without `mandatory`: RabbitMQ
/// 3.10 returns a message sent to one even when it delivered it.
pub(crate) async fn publish_mandatory(
    channel: &Channel,
    queue: ShortString,
    body: &[u8],
    properties: BasicProperties,
) -> Result<Routed, PublishError> {
    let options = BasicPublishOptions {
        mandatory: !queue.as_str().starts_with(DIRECT_REPLY_TO),
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish("".into(), queue, options, body, properties)
        .await?
        .await?;
    Ok(match confirm {
        Confirmation::Ack(Some(returned)) => Routed::Returned(Box::new(returned)),
        Confirmation::Nack(_) => Routed::Refused,
        Confirmation::Ack(None) | Confirmation::NotRequested => Routed::Queued,
    })
}

/// An AMQP URL that displays, and debug-prints, with its password
/// replaced by `***`.
#[derive(Clone)]
pub struct Redacted(pub String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// Parses a URL as given on the command line, so that the arguments
/// holding it debug-print redacted too.
impl std::str::FromStr for Redacted {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(Redacted(url.to_owned()))
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact(&self.0), f)
    }
}

/// `url` with the password of its user info, if any, replaced by `***`.
///
/// The user info ends at the last `@` before any `?` or `#`, not at the
/// first `/`: a password with an unencoded `/` (which URL parsers
/// disagree on) must still be hidden. Hiding too much is harmless.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let before_query = url[scheme_end..]
        .find(['?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..before_query]
        .rfind('@')
        .map(|i| scheme_end + i)
    else {
        return url.to_owned();
    };
    match url[scheme_end..at].find(':').map(|i| scheme_end + i) {
        Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_passwords_and_nothing_else() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://user@host/"), "amqp://user@host/");
        assert_eq!(
            redact("amqp://127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqps://a:p@ss:w@h/v?x=@"), "amqps://a:***@h/v?x=@");
        assert_eq!(
            redact("amqp://user:pa/ss@host:5672/%2f"),
            "amqp://user:***@host:5672/%2f"
        );
    }

    #[test]
    fn debug_output_hides_the_password_too() {
        let url = super::Redacted("amqp://guest:secret@host/".into());
        assert_eq!(format!("{url:?}"), r#""amqp://guest:***@host/""#);
    }

    /// Refused before any connection is tried, so no broker is needed.
    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn amqps_without_tls_is_refused_not_sent_in_plain_text() {
        let err = super::connect("amqps://guest:secret@127.0.0.1:5672/%2f")
            .await
            .expect_err("refused");
        let message = err.to_string();
        assert!(message.contains("no TLS"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn long_queue_names_are_errors_not_panics() {
        assert!(super::queue_name(&"q".repeat(255)).is_ok());
        let err = super::queue_name(&"q".repeat(256)).unwrap_err();
        assert!(err.to_string().contains("256 bytes"), "{err}");
    }
}
