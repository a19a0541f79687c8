//! Connecting to RabbitMQ with an error a person can act on, and keeping
//! the password in an AMQP URL out of every message.

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    options::BasicPublishOptions, types::ShortString,
};
use std::{fmt, time::Duration};

/// The default broker: a local RabbitMQ with the default vhost.
pub const DEFAULT_URL: &str = "amqp://127.0.0.1:5672/%2f";

/// How long to wait for the broker to answer when (re)connecting or
/// closing. A broker that is starting up, or a connection half gone, may
/// accept and never answer; without a bound a reconnect would hang.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

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
    client_error: lapin::Error,
}

/// Opens a connection to `url`.
pub async fn connect(url: &str) -> Result<Connection, ConnectError> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|source| {
            let (cause, hint) = match source.kind() {
                // "connection refused" reads better than the raw
                // "Connection refused (os error 111)".
                ErrorKind::IOError(io) if io.kind() != std::io::ErrorKind::Other => (
                    io.kind().to_string(),
                    "is the broker running? (`rabbitmq-server -detached` starts a local one)",
                ),
                _ => (
                    source.to_string(),
                    "check the URL, the user name and the password",
                ),
            };
            ConnectError {
                url: Redacted(url.to_owned()),
                cause,
                hint,
                client_error: source,
            }
        })
}

impl ConnectError {
    /// The underlying client error.
    pub fn lapin_error(&self) -> &lapin::Error {
        &self.client_error
    }

    /// The connection opened but setting up a channel or queue on it
    /// failed (for example a missing vhost permission).
    pub(crate) fn setup(url: &str, source: lapin::Error) -> Self {
        ConnectError {
            url: Redacted(url.to_owned()),
            cause: source.to_string(),
            hint: "check that the user may declare and consume queues",
            client_error: source,
        }
    }
}

/// Where the broker put a message published with [`publish_mandatory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Into the queue named by the routing key.
    Queued,
    /// Nowhere: no queue has that name, so the broker returned it.
    Returned,
    /// The broker refused it (a negative confirm).
    Refused,
}

/// Publishes `body` through the default exchange to the queue `queue`,
/// `mandatory`, and waits for the broker's confirm, so an unroutable
/// message is known at once rather than silently dropped. The channel must
/// be in confirm mode for [`Routed::Returned`] and [`Routed::Refused`] to
/// be seen.
pub(crate) async fn publish_mandatory(
    channel: &Channel,
    queue: ShortString,
    body: &[u8],
    properties: BasicProperties,
) -> lapin::Result<Routed> {
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish("".into(), queue, mandatory, body, properties)
        .await?
        .await?;
    Ok(match confirm {
        Confirmation::Ack(Some(_returned)) => Routed::Returned,
        Confirmation::Nack(_) => Routed::Refused,
        Confirmation::Ack(None) | Confirmation::NotRequested => Routed::Queued,
    })
}

/// An AMQP URL that displays with its password replaced by `***`.
#[derive(Clone, Debug)]
pub struct Redacted(pub String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// `url` with the password of its user info, if any, replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    match authority[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &url[scheme_end + at..]
        ),
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
    }
}
