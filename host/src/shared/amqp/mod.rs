//! Connecting to RabbitMQ with an error a person can act on, and keeping
//! the password in an AMQP URL out of every message.
//!
//! `amqps://` URLs connect over TLS ([`tls`]), verifying the broker's
//! certificate and host name unless told otherwise.

pub mod tls;

use crate::shared::backoff::Backoff;
use lapin::tcp::AMQPUriTcpExt as _;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer, ErrorKind,
    message::BasicReturnMessage,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
};
use std::{fmt, future::Future, sync::Arc, time::Duration};
pub use tls::TlsOptions;
use tracing::{info, warn};

/// The default broker: a local RabbitMQ with the default vhost.
pub const DEFAULT_URL: &str = "amqp://127.0.0.1:5672/%2f";

/// How long to wait for the broker to answer when (re)connecting or
/// closing. A broker that is starting up, or a connection half gone, may
/// accept and never answer; without a bound a reconnect would hang.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What an AMQP URL looks like, for a person who gave something else.
pub(crate) const URL_FORM: &str =
    "an AMQP URL looks like amqp://user:password@host:5672/vhost (amqps://...:5671 for TLS)";

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
    /// Why TLS failed, when it did.
    tls: Option<tls::Failure>,
}

/// Opens a connection to the broker at `urls`: one AMQP URL, or several
/// separated by commas (the nodes of a cluster), tried in random order, so
/// that clients spread over them, until one answers. Waits at most
/// [`ANSWER_TIMEOUT`] for each.
///
/// `amqps://` URLs connect over TLS with the system's CAs and no client
/// certificate, unless their query says otherwise; [`connect_with`] gives
/// files for all of them.
pub async fn connect(urls: &str) -> Result<Connection, ConnectError> {
    connect_with(urls, &TlsOptions::default()).await
}

/// [`connect`], with the TLS files that `amqps://` URLs use where their
/// query names none.
pub async fn connect_with(urls: &str, tls: &TlsOptions) -> Result<Connection, ConnectError> {
    let mut urls = broker_urls(urls);
    shuffle(&mut urls);
    let several = urls.len() > 1;
    let mut failures = Vec::new();
    for url in urls {
        match connect_one(url, tls).await {
            Ok(connection) => {
                if several {
                    info!(broker = %Redacted(url.to_owned()), "connected to RabbitMQ");
                }
                return Ok(connection);
            }
            Err(failure) => failures.push(failure),
        }
    }
    Err(ConnectError::of_all(failures))
}

/// The URLs of a comma-separated list (a comma inside a URL, in a
/// password say, is written `%2C`). An empty list is the default broker.
pub fn broker_urls(urls: &str) -> Vec<&str> {
    let urls: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect();
    if urls.is_empty() {
        vec![DEFAULT_URL]
    } else {
        urls
    }
}

/// Puts `urls` in a random order (Fisher-Yates), so that many clients
/// given the same list do not all connect to its first broker.
fn shuffle(urls: &mut [&str]) {
    for last in (1..urls.len()).rev() {
        let chosen = getrandom::u64().unwrap_or(0) % (last as u64 + 1);
        urls.swap(last, chosen as usize);
    }
}

/// Opens a connection to one broker.
async fn connect_one(url: &str, tls: &TlsOptions) -> Result<Connection, ConnectError> {
    let uri = url.parse::<AMQPUri>().map_err(|cause| {
        ConnectError::new(
            url,
            format!("not an AMQP URL: {cause}"),
            URL_FORM,
            None,
            false,
        )
    })?;
    let external = uri.query.auth_mechanism == Some(lapin::uri::SASLMechanism::External);
    let unusable =
        |err: tls::SettingsError| ConnectError::new(url, err.to_string(), err.hint(), None, false);
    let settings = tls::Settings::of(url, tls).map_err(unusable)?;
    let connector = match &settings {
        Some(settings) => Some(settings.connector().map_err(unusable)?),
        None => None,
    };
    let connect = async {
        match (&settings, connector) {
            (Some(settings), Some(connector)) => {
                connect_tls(uri, connector, &settings.server_name).await
            }
            _ => Connection::connect_uri(uri, ConnectionProperties::default()).await,
        }
    };
    let Ok(connected) = tokio::time::timeout(ANSWER_TIMEOUT, connect).await else {
        return Err(ConnectError::new(
            url,
            format!("no answer within {ANSWER_TIMEOUT:?}"),
            "is the broker starting up, or is something else listening there?",
            None,
            true,
        ));
    };
    let source = match connected {
        Ok(connection) => return Ok(connection),
        Err(source) => source,
    };
    if let Some(failure) = settings
        .as_ref()
        .and_then(|settings| tls_failure(settings, &source))
    {
        let mut error = ConnectError::new(
            url,
            failure.to_string(),
            failure.hint(),
            Some(source),
            false,
        );
        error.tls = Some(failure);
        return Err(error);
    }
    let (cause, hint, transient) = match source.kind() {
        // The client reports a host name that does not resolve as an
        // "uncategorized error": resolving it again says what is wrong.
        ErrorKind::IOError(_) if let Some(cause) = unresolvable_host(url).await => {
            (cause, "check the host in the URL", true)
        }
        // "connection refused" reads better than the raw
        // "Connection refused (os error 111)".
        ErrorKind::IOError(io) if io.kind() != std::io::ErrorKind::Other => (
            io.kind().to_string(),
            "is the broker running? (`rabbitmq-server -detached` starts a local one)",
            true,
        ),
        // Bytes that are not AMQP: a TLS listener's alert, say.
        ErrorKind::ParsingError(_) => (
            "what answers there does not speak AMQP 0-9-1".to_owned(),
            tls::WRONG_PORT,
            false,
        ),
        // A user with no permissions in the vhost.
        ErrorKind::ProtocolError(amqp) if amqp.get_id() == NOT_ALLOWED => (
            broker_words(&source),
            "the user has no permissions in this vhost: `rabbitmqctl set_permissions -p VHOST USER CONFIGURE WRITE READ` gives them",
            false,
        ),
        _ if external => (
            source.to_string(),
            "with auth_mechanism=external the broker logs in the user named by the client certificate's common name: does that user exist? (RabbitMQ: the rabbitmq_auth_mechanism_ssl plugin, ssl_cert_login_from = common_name)",
            false,
        ),
        _ => (
            source.to_string(),
            "check the URL, the user name and the password",
            false,
        ),
    };
    Err(ConnectError::new(url, cause, hint, Some(source), transient))
}

/// Opens a TLS connection: TCP as lapin opens it, then the handshake
/// with our own rustls client, for `server_name` (lapin's own client
/// would add the system's CAs to a given one, and can neither skip
/// verification nor send another server name).
async fn connect_tls(
    uri: AMQPUri,
    connector: lapin::tcp::RustlsConnector,
    server_name: &str,
) -> lapin::Result<Connection> {
    let connector = Arc::new(connector);
    let server_name: Arc<str> = server_name.into();
    let runtime = lapin::runtime::default_runtime()?;
    let handshake = async move |mut uri: AMQPUri, runtime| {
        uri.scheme = AMQPScheme::AMQP;
        let plain = uri.connect_async(&runtime).await?;
        Ok(plain.into_rustls(&connector, &server_name).await?)
    };
    Connection::connector(uri, runtime, handshake, ConnectionProperties::default()).await
}

/// The TLS failure behind `error`, if TLS failed.
fn tls_failure(settings: &tls::Settings, error: &lapin::Error) -> Option<tls::Failure> {
    match error.kind() {
        ErrorKind::IOError(io) => tls::Failure::of(settings, io),
        _ => None,
    }
}

/// What the broker said, when it refused (without the client's own
/// words around it), or else the client's error.
fn broker_words(error: &lapin::Error) -> String {
    Refusal::of(error).map_or_else(|| error.to_string(), |refusal| refusal.text)
}

/// Why the host of `url` does not resolve, if it does not. A URL that
/// does not parse is left to the client's own message.
async fn unresolvable_host(url: &str) -> Option<String> {
    let uri = url.parse::<lapin::uri::AMQPUri>().ok()?;
    let host = uri.authority.host;
    let lookup = tokio::net::lookup_host((host.as_str(), uri.authority.port));
    match tokio::time::timeout(ANSWER_TIMEOUT, lookup).await {
        Ok(Err(err)) => Some(format!("cannot resolve the host name {host:?}: {err}")),
        Ok(Ok(_)) | Err(_) => None,
    }
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
            tls: None,
        }
    }

    /// One error for a list of brokers none of which could be reached:
    /// each one's cause, the first one's hint, and transient if trying
    /// again may reach any of them.
    fn of_all(mut failures: Vec<ConnectError>) -> Self {
        if failures.len() == 1 {
            return failures.remove(0);
        }
        let urls: Vec<String> = failures
            .iter()
            .map(|failure| failure.url.to_string())
            .collect();
        let causes: Vec<String> = failures
            .iter()
            .map(|failure| format!("{} at {}", failure.cause, failure.url))
            .collect();
        ConnectError {
            url: Redacted(format!("any of {}", urls.join(", "))),
            cause: causes.join("; "),
            hint: failures.first().map_or("", |failure| failure.hint),
            client_error: None,
            transient: failures.iter().any(ConnectError::is_transient),
            tls: None,
        }
    }

    /// Whether trying again later may succeed: nothing answered, or the
    /// host name did not resolve (yet), as when the broker is still
    /// starting. A broker that answered no (a refused login, a missing
    /// vhost) or a URL this build cannot serve will say the same again.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// Why TLS failed, when connecting failed in TLS.
    pub fn tls_failure(&self) -> Option<&tls::Failure> {
        self.tls.as_ref()
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
    /// failed (for example a missing permission), with what to do.
    pub(crate) fn setup(url: &str, source: lapin::Error, hint: &'static str) -> Self {
        // A connection lost while setting up may come back; a refusal
        // will not.
        let transient = matches!(source.kind(), ErrorKind::IOError(_));
        ConnectError::new(url, broker_words(&source), hint, Some(source), transient)
    }
}

/// Tries `attempt` until it succeeds, fails for good, or `limit` has
/// passed (`None`: no limit), waiting longer after each transient failure
/// (up to `max_wait`), as a worker started before its broker should. The
/// first transient failure is logged, once; the last one is the error.
///
/// The limit is kept to: the last wait is cut short to end at it, for a
/// last attempt there. An attempt is not cut (dropping the client's
/// connect mid-way leaves its thread to fail noisily), so one to a broker
/// that accepts and never answers may end up to [`ANSWER_TIMEOUT`] late.
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
        let now = tokio::time::Instant::now();
        let out_of_time = deadline.is_some_and(|deadline| now >= deadline);
        if !error.is_transient() || out_of_time {
            return Err(error);
        }
        let wait = match deadline {
            Some(deadline) => backoff.next_wait().min(deadline - now),
            None => backoff.next_wait(),
        };
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

/// A channel or a connection the broker closed, with its reply code and
/// its words: a refusal of something the client asked (403
/// `ACCESS_REFUSED`, 406 `PRECONDITION_FAILED`, 541 `INTERNAL_ERROR` for a
/// denied deprecated feature...), or the broker going away (320
/// `CONNECTION_FORCED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The AMQP reply code.
    pub(crate) code: u16,
    /// What the broker said, on one line (RabbitMQ's texts may span
    /// several).
    pub(crate) text: String,
}

impl Refusal {
    /// What the broker said when it closed, or `None` for an error of
    /// another kind (I/O, a timeout, a channel already closed).
    pub(crate) fn of(error: &lapin::Error) -> Option<Refusal> {
        match error.kind() {
            ErrorKind::ProtocolError(amqp) => Some(Refusal {
                code: amqp.get_id(),
                text: amqp
                    .get_message()
                    .as_str()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            }),
            _ => None,
        }
    }

    /// Whether the broker refused what the client asked, and will again
    /// until someone changes the broker or the client's settings: a
    /// permission, a queue's settings, a feature the broker denies. Not a
    /// broker going away (320), nor a queue another connection holds for a
    /// while (405 `RESOURCE_LOCKED`), nor a framing error.
    pub(crate) fn is_lasting(&self) -> bool {
        matches!(
            self.code,
            ACCESS_REFUSED
                | NOT_FOUND
                | PRECONDITION_FAILED
                | NOT_ALLOWED
                | NOT_IMPLEMENTED
                | INTERNAL_ERROR
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// AMQP 0-9-1's reply codes, as the broker gives them.
pub(crate) const ACCESS_REFUSED: u16 = 403;
pub(crate) const NOT_FOUND: u16 = 404;
pub(crate) const PRECONDITION_FAILED: u16 = 406;
pub(crate) const NOT_ALLOWED: u16 = 530;
pub(crate) const NOT_IMPLEMENTED: u16 = 540;
/// RabbitMQ 4.3 and later close the connection with it for a deprecated
/// feature they deny.
pub(crate) const INTERNAL_ERROR: u16 = 541;

/// Whether the broker answered `error` with 404 `NOT_FOUND`: what it
/// says of a passive look at something missing.
pub(crate) fn is_not_found(error: &lapin::Error) -> bool {
    Refusal::of(error).is_some_and(|refusal| refusal.code == NOT_FOUND)
}

/// Declares `queue` passively on `channel`: its message and consumer
/// counts if it exists, whatever its settings, or `None` if it does not.
/// RabbitMQ 3.x asks no permission for it; 4.x asks for one on the queue
/// (some releases, `configure`). The broker closes the channel when
/// the queue does not exist, so give it a channel of its own.
pub(crate) async fn existing_queue(
    channel: &Channel,
    queue: ShortString,
) -> Result<Option<lapin::Queue>, lapin::Error> {
    let passive = QueueDeclareOptions::default().passive();
    match channel
        .queue_declare(queue, passive, FieldTable::default())
        .await
    {
        Ok(queue) => Ok(Some(queue)),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(err),
    }
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
    /// The broker did not confirm it in time, or, on a channel without
    /// confirms, did not read it.
    #[error("the broker did not take or confirm the message within {0:?}")]
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
/// be seen; without confirms this returns [`Routed::Queued`] once the
/// message is written to the connection, and a returned message waits
/// for [`take_returned`].
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

/// The messages the broker returned on `channel`, a channel without
/// publisher confirms, since the last call. The client library keeps
/// them, signalling nothing, until asked; with no confirm to wait for,
/// `wait_for_confirms` only hands them over.
pub(crate) async fn take_returned(channel: &Channel) -> Vec<BasicReturnMessage> {
    channel.wait_for_confirms().await.unwrap_or_default()
}

/// An AMQP URL that displays, and debug-prints, with its password
/// replaced by `***`.
#[derive(Clone)]
pub struct Redacted(pub String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_list(&self.0))
    }
}

impl Redacted {
    /// URLs given one by one, as the comma-separated list [`connect`]
    /// takes.
    pub fn list(urls: &[Redacted]) -> String {
        let urls: Vec<&str> = urls.iter().map(|url| url.0.as_str()).collect();
        urls.join(",")
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
        fmt::Debug::fmt(&redact_list(&self.0), f)
    }
}

/// Each URL of a comma-separated list redacted.
fn redact_list(urls: &str) -> String {
    urls.split(',').map(redact).collect::<Vec<_>>().join(",")
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
    use super::*;

    #[test]
    fn a_list_of_brokers_is_split_redacted_and_shuffled() {
        let list = " amqp://a:one@h1/%2f, amqp://b:two@h2/%2f ,,";
        assert_eq!(
            broker_urls(list),
            ["amqp://a:one@h1/%2f", "amqp://b:two@h2/%2f"]
        );
        assert_eq!(broker_urls(""), [DEFAULT_URL]);
        let shown = Redacted(list.to_owned()).to_string();
        assert!(!shown.contains("one") && !shown.contains("two"), "{shown}");
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..64 {
            let mut urls = vec!["a", "b", "c"];
            shuffle(&mut urls);
            let mut sorted = urls.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, ["a", "b", "c"]);
            firsts.insert(urls[0]);
        }
        assert_eq!(firsts.len(), 3, "every broker comes first sometimes");
    }

    /// None of several brokers answers: one error naming each, which may
    /// pass if any of them might still answer.
    #[tokio::test]
    async fn no_broker_of_a_list_answering_is_one_error() {
        let err = connect("amqp://127.0.0.1:1/%2f,amqp://u:secret@127.0.0.1:2/%2f")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("any of"), "{text}");
        assert!(
            text.contains("127.0.0.1:1") && text.contains("127.0.0.1:2"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        assert!(err.is_transient());
    }

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

    #[test]
    fn long_queue_names_are_errors_not_panics() {
        assert!(super::queue_name(&"q".repeat(255)).is_ok());
        let err = super::queue_name(&"q".repeat(256)).unwrap_err();
        assert!(err.to_string().contains("256 bytes"), "{err}");
    }
}
