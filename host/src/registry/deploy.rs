//! The deployer's side of the registry: read what it holds, append
//! versions and promotes (writing again the versions in use that would
//! otherwise age out), find the nodes that follow it, and collect their
//! reports.

use super::{
    Retention, channel_for_exchanges, declare_exchanges,
    message::{Action, Message, Role},
    report::{NodeStatus, Report, STATUS_TYPE},
    signing::{DeployKey, Trust},
    state::{MESSAGE_OVERHEAD, State},
};
use crate::shared::amqp::{self, ConnectError};
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection, Consumer,
    options::{
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueDeclareOptions,
    },
};
use std::time::Duration;
use tokio::time::Instant;

/// How long reading the whole stream may take.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Nodes answer a status request at once, within milliseconds of each
/// other: this long without an answer after one, or three times as long
/// as the first answer took if more (a loaded host), means they all have.
pub const ANSWERS_STOPPED: Duration = Duration::from_millis(30);

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Connect(#[from] Box<ConnectError>),
    #[error("RabbitMQ refused: {0}")]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?} while {1}")]
    Timeout(Duration, &'static str),
    #[error("the broker did not confirm a registry message")]
    NotConfirmed,
    #[error("the registry holds no version {digest} of {function}")]
    UnknownVersion { function: String, digest: String },
    #[error("{digest} is the start of several versions of {function}: {}; give more of it", .matches.join(", "))]
    AmbiguousVersion {
        function: String,
        digest: String,
        matches: Vec<String>,
    },
    #[error("the registry holds no function {0}")]
    UnknownFunction(String),
    #[error(
        "there is no registry {0} on this broker (compute deploy makes it; check --registry and the vhost in --amqp-url)"
    )]
    NoRegistry(String),
    #[error("{0} has no previous version to roll back to")]
    NoPrevious(String),
    #[error(
        "the versions in use take {live} bytes, more than the stream can keep safely ({keep_within}); declare the registry with a larger --registry-max-bytes"
    )]
    RetentionTooSmall { live: u64, keep_within: u64 },
    #[error(
        "the registry's sequence numbers for {0} are used up (a message numbered {max} is in the stream): deploy it under another name",
        max = u64::MAX
    )]
    SequenceExhausted(String),
}

/// A connection to the registry, for deploying.
pub struct Registry {
    connection: Connection,
    /// In confirm mode: each message is confirmed before the next.
    channel: Channel,
    events: Channel,
    stream: String,
    retention: Retention,
}

impl Registry {
    /// Connects and declares the stream (with `retention`) and the
    /// exchanges beside it.
    pub async fn connect(
        url: &str,
        tls: &amqp::TlsOptions,
        stream: &str,
        retention: Retention,
    ) -> Result<Self, DeployError> {
        let connection = amqp::connect_with(url, tls).await.map_err(Box::new)?;
        let set_up = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channel
                .queue_declare(
                    stream.into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    retention.arguments(),
                )
                .await?;
            let events = channel_for_exchanges(&connection, stream).await?;
            Ok::<_, lapin::Error>((channel, events))
        };
        let (channel, events) =
            bounded(amqp::ANSWER_TIMEOUT, "declaring the registry", set_up).await??;
        Ok(Registry {
            connection,
            channel,
            events,
            stream: stream.to_owned(),
            retention,
        })
    }

    /// Connects to a registry that exists already, creating nothing: for
    /// the commands that only read (`compute status`).
    ///
    /// # Errors
    ///
    /// [`DeployError::NoRegistry`] when the stream or the exchanges beside
    /// it do not exist.
    pub async fn open_existing(
        url: &str,
        tls: &amqp::TlsOptions,
        stream: &str,
    ) -> Result<Self, DeployError> {
        let connection = amqp::connect_with(url, tls).await.map_err(Box::new)?;
        let look = async {
            // A passive look at something missing closes its channel.
            let channel = connection.create_channel().await?;
            if amqp::existing_queue(&channel, stream.into())
                .await?
                .is_none()
            {
                return Ok(None);
            }
            // As every registry's channel is, whatever it is used for.
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            match declare_exchanges(&connection, stream, passive).await {
                Ok(events) => Ok(Some((channel, events))),
                Err(err) if amqp::is_not_found(&err) => Ok(None),
                Err(err) => Err(err),
            }
        };
        let found = bounded(amqp::ANSWER_TIMEOUT, "looking for the registry", look).await??;
        let Some((channel, events)) = found else {
            let _ = tokio::time::timeout(amqp::ANSWER_TIMEOUT, connection.close(200, "OK".into()))
                .await;
            return Err(DeployError::NoRegistry(stream.to_owned()));
        };
        Ok(Registry {
            connection,
            channel,
            events,
            stream: stream.to_owned(),
            retention: Retention::default(),
        })
    }

    /// Reads the whole stream: writes a marker, then reads from the first
    /// message to the marker, applying only messages `trust` accepts, as
    /// the nodes that trust the same keys do.
    pub async fn read(&self, trust: &Trust) -> Result<State, DeployError> {
        let marker = uuid::Uuid::new_v4().to_string();
        self.publish(&Message::sync(), &[], &marker).await?;
        let channel = self.connection.create_channel().await?;
        channel.basic_qos(64, BasicQosOptions::default()).await?;
        let mut consumer = super::consume_from_first(&channel, &self.stream).await?;
        let read = async {
            let mut state = State::new(&self.stream);
            while let Some(delivery) = consumer.next().await {
                let delivery = delivery?;
                delivery
                    .acker
                    .ack(lapin::options::BasicAckOptions::default())
                    .await?;
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str());
                if id == Some(marker.as_str()) {
                    break;
                }
                // A message the nodes would not apply takes room in the
                // stream, and nothing else: above all not a sequence number
                // that a writer without a key could set to the last one.
                match Message::read(&delivery.properties, &delivery.data) {
                    Ok(message) if trust.check(&message).is_ok() => {
                        let _ = state.apply(&message, &delivery.data);
                    }
                    _ => state.skip(&delivery.data),
                }
            }
            Ok::<_, lapin::Error>(state)
        };
        let state = bounded(READ_TIMEOUT, "reading the registry", read).await??;
        let _ = channel.close(200, "OK".into()).await;
        Ok(state)
    }

    /// Starts collecting the nodes' reports; call before appending.
    pub async fn reports(&self) -> Result<Consumer, DeployError> {
        let exchange = super::events_exchange(&self.stream);
        let listen = super::listen(&self.events, &exchange);
        Ok(bounded(amqp::ANSWER_TIMEOUT, "listening for reports", listen).await??)
    }

    /// Asks every node following the registry for its status, and takes
    /// the answers that come within `wait`: all of it when none comes,
    /// else until none has come for a while ([`ANSWERS_STOPPED`]). Nodes
    /// answer at once, so a fixed wait only made every command slower
    /// (0.5 s of a 657 ms deploy).
    pub async fn nodes(&self, wait: Duration) -> Result<Vec<NodeStatus>, DeployError> {
        let request = uuid::Uuid::new_v4().to_string();
        let ask = async {
            let channel = self.connection.create_channel().await?;
            let answers = super::listen(&channel, &super::events_exchange(&self.stream)).await?;
            channel
                .basic_publish(
                    super::status_exchange(&self.stream).into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    b"status",
                    BasicProperties::default().with_correlation_id(request.as_str().into()),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, answers))
        };
        let (channel, mut answers) =
            bounded(amqp::ANSWER_TIMEOUT, "asking the nodes", ask).await??;
        let mut nodes = Vec::new();
        let asked = Instant::now();
        let deadline = asked + wait;
        let mut until = deadline;
        let mut quiet = ANSWERS_STOPPED;
        while let Ok(Some(Ok(answer))) = tokio::time::timeout_at(until, answers.next()).await {
            let properties = &answer.properties;
            let answers_this = properties
                .kind()
                .as_ref()
                .is_some_and(|kind| kind.as_str() == STATUS_TYPE)
                && properties
                    .correlation_id()
                    .as_ref()
                    .is_some_and(|id| id.as_str() == request);
            if answers_this && let Ok(status) = serde_json::from_slice::<NodeStatus>(&answer.data) {
                if nodes.is_empty() {
                    quiet = quiet.max(3 * asked.elapsed());
                }
                nodes.push(status);
                until = deadline.min(Instant::now() + quiet);
            }
        }
        let _ = tokio::time::timeout(amqp::ANSWER_TIMEOUT, channel.close(200, "OK".into())).await;
        nodes.sort_by(|a, b| (&a.host, &a.node).cmp(&(&b.host, &b.node)));
        Ok(nodes)
    }

    /// Removes `function` (as `trust` reads the registry), in a message
    /// signed with `key` if given: nodes stop serving it, and the last to
    /// stop deletes its queue.
    pub async fn remove(
        &self,
        function: &str,
        trust: &Trust,
        key: Option<&DeployKey>,
    ) -> Result<(), DeployError> {
        let state = self.read(trust).await?;
        if !state.functions.contains_key(function) {
            return Err(DeployError::UnknownFunction(function.to_owned()));
        }
        self.append(&state, vec![(remove(function), Vec::new())], key)
            .await
    }

    /// Appends `messages` (with their bodies), signed with `key` if given,
    /// after writing again every version in use of `state`, and every
    /// removal, that the new bytes could push out of the stream's
    /// retention. Each message takes the next sequence number of its
    /// function.
    pub async fn append(
        &self,
        state: &State,
        messages: Vec<(Message, Vec<u8>)>,
        key: Option<&DeployKey>,
    ) -> Result<(), DeployError> {
        let keep_within = self.retention.keep_within();
        let incoming: u64 = messages
            .iter()
            .map(|(_, body)| body.len() as u64 + MESSAGE_OVERHEAD)
            .sum();
        let live = state.live_bytes() + incoming;
        if live > keep_within / 2 {
            return Err(DeployError::RetentionTooSmall { live, keep_within });
        }
        let mut all = Vec::new();
        for (function, digest, role) in state.to_keep(incoming, keep_within) {
            let stored = &state.functions[&function].stored[&digest];
            let (bytes, limits) = (stored.bytes.to_vec(), stored.limits.clone());
            let mut keep =
                Message::unnumbered(Action::Keep, &function, &digest, Some(role), limits);
            // Written again, deployed when it was.
            keep.deployed = stored.deployed;
            all.push((keep, bytes));
        }
        for function in state.removals_to_keep(incoming, keep_within) {
            all.push((remove(&function), Vec::new()));
        }
        all.extend(messages);
        // Each takes the next number of its function in this registry,
        // under the signature: a node refuses any message numbered at or
        // below one it applied, so a copy replayed later, or a message of
        // another deployer that took the same number first, changes
        // nothing.
        let mut numbered = state.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        for (mut message, body) in all {
            if message.action == Action::Publish {
                message.deployed = Some(now);
            }
            let function = message.function.clone();
            message.sequence = numbered
                .next_sequence(&function)
                .ok_or(DeployError::SequenceExhausted(function.clone()))?;
            numbered.sequences.insert(function, message.sequence);
            message.registry = self.stream.clone();
            if let Some(key) = key {
                key.sign(&mut message);
            }
            self.publish(&message, &body, &uuid::Uuid::new_v4().to_string())
                .await?;
        }
        Ok(())
    }

    async fn publish(&self, message: &Message, body: &[u8], id: &str) -> Result<(), DeployError> {
        let publish = async {
            self.channel
                .basic_publish(
                    "".into(),
                    self.stream.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    message.properties(id),
                )
                .await?
                .await
        };
        let confirm = bounded(
            Duration::from_secs(30),
            "confirming a registry message",
            publish,
        )
        .await??;
        if confirm.is_nack() {
            return Err(DeployError::NotConfirmed);
        }
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            amqp::ANSWER_TIMEOUT,
            self.connection.close(200, "OK".into()),
        )
        .await;
    }
}

/// What one rollout came to: a report from each node that answered, and
/// the nodes that did not within the wait.
#[derive(Debug)]
pub struct Rollout {
    pub reports: Vec<Report>,
    pub silent: Vec<NodeStatus>,
    /// From the last message appended to the last report.
    pub took: Duration,
    /// The role the version had already, when nothing was appended.
    pub unchanged: Option<Role>,
}

impl Rollout {
    /// Whether every node serves the version.
    pub fn succeeded(&self) -> bool {
        self.silent.is_empty()
            && self
                .reports
                .iter()
                .all(|report| report.outcome == "serving")
    }
}

/// Waits for a report on `function` at `digest` from each of `nodes`, for
/// at most `wait`.
pub async fn collect(
    reports: &mut Consumer,
    nodes: &[NodeStatus],
    function: &str,
    digest: &str,
    since: Instant,
    wait: Duration,
) -> Rollout {
    let deadline = since + wait;
    let mut got: Vec<Report> = Vec::new();
    let mut took = Duration::ZERO;
    while got.len() < nodes.len() {
        let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, reports.next()).await else {
            break;
        };
        // Status answers to deployers come this way too. A report from
        // a node of an earlier version has no type.
        let is_status = delivery
            .properties
            .kind()
            .as_ref()
            .is_some_and(|kind| kind.as_str() == STATUS_TYPE);
        if is_status {
            continue;
        }
        let Ok(report) = serde_json::from_slice::<Report>(&delivery.data) else {
            continue;
        };
        let expected = report.function == function
            && report.digest == digest
            && nodes.iter().any(|node| node.node == report.node)
            && !got.iter().any(|seen| seen.node == report.node);
        if expected {
            took = since.elapsed();
            got.push(report);
        }
    }
    let silent = nodes
        .iter()
        .filter(|node| !got.iter().any(|report| report.node == node.node))
        .cloned()
        .collect();
    Rollout {
        reports: got,
        silent,
        took,
        unchanged: None,
    }
}

/// Whether `messages`, which give `digest` of `function` the role
/// `role`, would change nothing: the version has that role already, with
/// the same limits file.
pub fn holds_already(
    state: &State,
    function: &str,
    digest: &str,
    role: Role,
    messages: &[(Message, Vec<u8>)],
) -> bool {
    let Some(held) = state.functions.get(function) else {
        return false;
    };
    let same_limits = messages
        .iter()
        .filter(|(message, _)| message.action == Action::Publish)
        .all(|(message, _)| {
            held.stored
                .get(digest)
                .is_some_and(|stored| stored.limits == message.limits)
        });
    held.role_of(digest) == Some(role) && same_limits
}

/// The rollout of a version that has its role already: nothing is
/// appended, and each node's status says whether it serves `digest` in
/// that role.
pub fn unchanged(nodes: &[NodeStatus], function: &str, digest: &str, role: Role) -> Rollout {
    let reports = nodes
        .iter()
        .map(|node| {
            let held = node.functions.iter().find(|held| held.name == function);
            let in_role = held.and_then(|held| match role {
                Role::Staged => held.staged.clone(),
                Role::Current | Role::Previous => Some(held.current.clone()),
            });
            let serves = in_role.as_deref() == Some(digest);
            Report {
                node: node.node.clone(),
                host: node.host.clone(),
                function: function.to_owned(),
                digest: digest.to_owned(),
                role: role.as_str().to_owned(),
                outcome: if serves { "serving" } else { "rejected" }.to_owned(),
                reason: (!serves).then(|| match in_role {
                    Some(other) => format!("serves {other} as {} instead", role.as_str()),
                    None => format!("does not serve {function}"),
                }),
            }
        })
        .collect();
    Rollout {
        reports,
        silent: Vec::new(),
        took: Duration::ZERO,
        unchanged: Some(role),
    }
}

/// The version of `function` the registry holds whose digest is, or
/// starts with, `digest` (as `compute status` shortens them, and as git
/// takes a commit): one version, or an error naming none or several.
pub fn held_version(state: &State, function: &str, digest: &str) -> Result<String, DeployError> {
    let held = state
        .functions
        .get(function)
        .ok_or_else(|| DeployError::UnknownFunction(function.to_owned()))?;
    let matches: Vec<&String> = held
        .stored
        .keys()
        .filter(|held| held.starts_with(digest))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(DeployError::UnknownVersion {
            function: function.to_owned(),
            digest: digest.to_owned(),
        }),
        several => Err(DeployError::AmbiguousVersion {
            function: function.to_owned(),
            digest: digest.to_owned(),
            matches: several.iter().map(|digest| (*digest).clone()).collect(),
        }),
    }
}

/// The version a rollback of `function` goes to: its previous one.
pub fn rollback_target(state: &State, function: &str) -> Result<String, DeployError> {
    let held = state
        .functions
        .get(function)
        .ok_or_else(|| DeployError::UnknownFunction(function.to_owned()))?;
    held.previous
        .clone()
        .ok_or_else(|| DeployError::NoPrevious(function.to_owned()))
}

/// A message that makes `digest` of `function` current.
pub fn promote(function: &str, digest: &str) -> Message {
    Message::unnumbered(Action::Promote, function, digest, None, None)
}

/// A message carrying new bytes of `function`, with the text of their
/// limits file if they have one.
pub fn publish(function: &str, digest: &str, stage: bool, limits: Option<String>) -> Message {
    let role = if stage { Role::Staged } else { Role::Current };
    Message::unnumbered(Action::Publish, function, digest, Some(role), limits)
}

/// A message that removes `function`.
pub fn remove(function: &str) -> Message {
    Message::unnumbered(Action::Remove, function, "", None, None)
}

async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    future: impl Future<Output = T>,
) -> Result<T, DeployError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| DeployError::Timeout(limit, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deploying what the registry holds changes nothing, unless its
    /// limits file or its role differs.
    #[test]
    fn a_deploy_of_what_the_registry_holds_is_told_apart() {
        let mut state = State::new("r");
        let mut held = publish("f", "d1", false, Some("max_memory = 1".into()));
        held.registry = "r".into();
        held.sequence = 1;
        state.apply(&held, b"bytes").unwrap();
        let again = |stage, limits: Option<&str>| {
            let message = publish("f", "d1", stage, limits.map(str::to_owned));
            let role = message.role.unwrap_or(Role::Current);
            holds_already(&state, "f", "d1", role, &[(message, Vec::new())])
        };
        assert!(again(false, Some("max_memory = 1")));
        assert!(!again(false, Some("max_memory = 2")), "other limits");
        assert!(!again(false, None), "limits removed");
        assert!(!again(true, Some("max_memory = 1")), "staged, not current");
        let promote = promote("f", "d1");
        assert!(holds_already(
            &state,
            "f",
            "d1",
            Role::Current,
            &[(promote, Vec::new())]
        ));
        assert!(
            !holds_already(&state, "g", "d1", Role::Current, &[]),
            "unknown function"
        );
    }

    /// A version is named by its digest or by a start only it has.
    #[test]
    fn a_version_is_found_by_the_start_of_its_digest() {
        let mut state = State::new("r");
        for (sequence, digest) in [(1, "sha256:aa11"), (2, "sha256:aa22")] {
            let mut message = publish("f", digest, false, None);
            (message.registry, message.sequence) = ("r".into(), sequence);
            state.apply(&message, digest.as_bytes()).unwrap();
        }
        assert_eq!(
            held_version(&state, "f", "sha256:aa1").unwrap(),
            "sha256:aa11"
        );
        assert_eq!(
            held_version(&state, "f", "sha256:aa22").unwrap(),
            "sha256:aa22"
        );
        let several = held_version(&state, "f", "sha256:aa").unwrap_err();
        assert!(
            matches!(&several, DeployError::AmbiguousVersion { matches, .. } if matches.len() == 2)
        );
        assert!(
            several.to_string().contains("sha256:aa11, sha256:aa22"),
            "{several}"
        );
        assert!(matches!(
            held_version(&state, "f", "sha256:bb"),
            Err(DeployError::UnknownVersion { .. })
        ));
    }
}
