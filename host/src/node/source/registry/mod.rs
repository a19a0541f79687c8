//! A node following the registry: reads the stream from its first offset,
//! then live; hands the table each function's current and staged version
//! as the messages say; reports what it made of each. Status requests are
//! answered beside it (`status`).
//!
//! While it catches up (messages arriving without a pause) it only
//! replays; at the first pause it offers what the replay ended with, so a
//! node that starts late compiles what is served now, not every version
//! in the history. A message that is unsigned or wrongly signed (when the
//! node trusts keys), malformed, of an older format, of another registry,
//! numbered at or below one already applied for its function (a copy, or
//! the loser of two deployers' race), or that promotes a version the
//! registry does not hold, changes nothing. It is counted in a metric by
//! cause; read live, it is reported and logged through a throttle (once
//! per cause per interval); read while catching up, it is counted, and
//! the catch-up ends with one line saying how many were skipped.

mod status;

use crate::{
    node::{
        functions::Served,
        link::Link,
        metrics::NodeMetrics,
        source::{NewBytes, Offer, Update, Updates},
        throttle::Throttle,
    },
    registry::{
        self,
        message::{Action, Message, Role},
        report::{Identity, REPORT_TYPE, Report},
        signing::Trust,
        state::State,
    },
    shared::{
        amqp,
        backoff::{self, Backoff},
        sandbox::LimitsFile,
    },
};
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection, Consumer,
    options::{BasicAckOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
};
use status::Answerer;
use std::{collections::BTreeMap, sync::Arc, time::Duration};
use tokio::sync::{Notify, oneshot};
use tracing::{debug, info, warn};

/// A pause this long in the stream ends a catch-up.
const CAUGHT_UP_AFTER: Duration = Duration::from_millis(150);
/// How often a node waiting for the registry stream to be created looks
/// for it.
const STREAM_LOOK_AGAIN: Duration = Duration::from_secs(2);
/// Messages of the stream delivered ahead of the node's acks.
const STREAM_PREFETCH: u16 = 32;

/// What the follower needs.
pub(crate) struct Follower {
    pub(crate) stream: String,
    pub(crate) trust: Trust,
    pub(crate) link: Arc<Link>,
    pub(crate) updates: Updates,
    pub(crate) served: Served,
    pub(crate) identity: Identity,
    pub(crate) metrics: Arc<NodeMetrics>,
    /// Refused messages read live are logged at most once per cause per
    /// interval: anyone who may write to the stream could send thousands.
    pub(crate) warnings: Throttle,
}

/// Messages skipped while catching up, by cause.
type Skipped = BTreeMap<&'static str, u64>;

/// What was last offered for a function: its current and staged
/// versions.
type Offered = BTreeMap<String, (Option<Version>, Option<Version>)>;

/// One version as offered: its digest, and its limits file's text.
type Version = (String, Option<String>);

impl Follower {
    /// Follows the stream until dropped, on whatever connection the link
    /// has. `caught_up` learns when the first replay has been offered.
    pub(crate) async fn run(self, caught_up: oneshot::Sender<()>) {
        let mut caught_up = Some(caught_up);
        let mut backoff = Backoff::up_to(backoff::NODE_MAX_WAIT);
        let mut offered = Offered::new();
        let mut last_problem: Option<String> = None;
        loop {
            let connection = self.link.connected().await;
            let problem = self
                .follow(&connection, &mut offered, &mut caught_up, &mut backoff)
                .await;
            if !connection.status().connected() {
                self.link.lost();
            } else if last_problem.as_ref() != Some(&problem) {
                warn!(stream = %self.stream, cause = %problem, "cannot follow the registry; trying again");
                last_problem = Some(problem);
            }
            // Nothing to wait for: a missing stream means nothing to
            // serve yet.
            if let Some(caught_up) = caught_up.take() {
                let _ = caught_up.send(());
            }
            tokio::time::sleep(backoff.next_wait()).await;
        }
    }

    /// Follows the stream on `connection` until something fails; says
    /// what.
    async fn follow(
        &self,
        connection: &Connection,
        offered: &mut Offered,
        caught_up: &mut Option<oneshot::Sender<()>>,
        backoff: &mut Backoff,
    ) -> String {
        let subscribed = async {
            let channel = registry::channel_for_exchanges(connection, &self.stream).await?;
            let requests =
                registry::listen(&channel, &registry::status_exchange(&self.stream)).await?;
            let asked = Arc::new(Notify::new());
            let answering = Answerer {
                stream: self.stream.clone(),
                channel: channel.clone(),
                served: self.served.clone(),
                identity: self.identity.clone(),
            }
            .answer_all(requests, asked.clone());
            let (stream, stream_channel) = self.open_stream(connection, &asked, caught_up).await?;
            Ok::<_, lapin::Error>((stream, answering, stream_channel, channel))
        };
        let (mut stream, _answering, _stream_channel, channel) = match subscribed.await {
            Ok(subscribed) => subscribed,
            Err(err) => return err.to_string(),
        };
        info!(stream = %self.stream, "following the registry from its first message");
        backoff.reset();
        let mut state = State::new(&self.stream);
        let mut skipped = Skipped::new();
        // While replaying (after every subscribe: the stream is read from
        // its first message again), what the replay has so far is offered
        // once it goes quiet.
        let mut replaying = true;
        let mut pause = Some(tokio::time::Instant::now() + CAUGHT_UP_AFTER);
        loop {
            let paused = async {
                match pause {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                next = stream.next() => match next {
                    Some(Ok(delivery)) => {
                        let skipped = replaying.then_some(&mut skipped);
                        self.replay(&mut state, &channel, &delivery.properties, &delivery.data, skipped).await;
                        let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                        // Live, each message takes effect at once.
                        if replaying {
                            pause = Some(tokio::time::Instant::now() + CAUGHT_UP_AFTER);
                        } else {
                            self.offer(&state, offered, &channel).await;
                        }
                    }
                    Some(Err(err)) => return err.to_string(),
                    None => return "the broker cancelled the registry consumer".into(),
                },
                () = paused => {
                    pause = None;
                    replaying = false;
                    if !skipped.is_empty() {
                        let count: u64 = skipped.values().sum();
                        let causes = skipped
                            .iter()
                            .map(|(cause, count)| format!("{cause} {count}"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        warn!(stream = %self.stream, skipped = count, %causes, "skipped registry messages that change nothing while reading it");
                        // The stream is read again from its start after
                        // every reconnect: its history is counted once.
                        if caught_up.is_some() {
                            for (cause, count) in &skipped {
                                self.metrics.registry_refused(cause, *count);
                            }
                        }
                        skipped.clear();
                    }
                    self.offer(&state, offered, &channel).await;
                    if let Some(caught_up) = caught_up.take() {
                        let _ = caught_up.send(());
                    }
                }
            }
        }
    }

    /// Consumes the stream from its first message. While no stream of
    /// that name exists (no deploy has created it yet) the node says so
    /// once (its status requests are answered meanwhile, so the first
    /// deploy counts it), and looks again every [`STREAM_LOOK_AGAIN`],
    /// or at once after a status request (`asked`): a deployer about to
    /// write sends one.
    async fn open_stream(
        &self,
        connection: &Connection,
        asked: &Notify,
        caught_up: &mut Option<oneshot::Sender<()>>,
    ) -> Result<(Consumer, Channel), lapin::Error> {
        let mut said = false;
        loop {
            match self.consume_stream(connection).await {
                Err(err) if amqp::is_not_found(&err) => {}
                opened => return opened,
            }
            if !said {
                info!(stream = %self.stream, "waiting for the registry: no stream of that name exists yet (the first `compute deploy` creates it); answering status requests meanwhile");
                said = true;
            }
            // Nothing to catch up with: there is nothing to serve yet.
            if let Some(caught_up) = caught_up.take() {
                let _ = caught_up.send(());
            }
            tokio::select! {
                () = asked.notified() => {}
                () = tokio::time::sleep(STREAM_LOOK_AGAIN) => {}
            }
        }
    }

    /// Opens a channel and consumes the stream on it from its first
    /// message.
    async fn consume_stream(
        &self,
        connection: &Connection,
    ) -> Result<(Consumer, Channel), lapin::Error> {
        let channel = connection.create_channel().await?;
        // Passive: deployers create the stream with its retention; a node
        // needs only to read it.
        channel
            .queue_declare(
                self.stream.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .basic_qos(STREAM_PREFETCH, BasicQosOptions::default())
            .await?;
        let consumer = registry::consume_from_first(&channel, &self.stream).await?;
        Ok((consumer, channel))
    }

    /// Applies one message to `state`, if it may act. One that may not is,
    /// while catching up, counted in `skipped`; live, counted in the
    /// metrics, logged (throttled), and reported when it names a function.
    async fn replay(
        &self,
        state: &mut State,
        channel: &Channel,
        properties: &BasicProperties,
        body: &[u8],
        skipped: Option<&mut Skipped>,
    ) {
        let (cause, reason, message) = match Message::read(properties, body) {
            Ok(message) if message.action == Action::Sync => return,
            Ok(message) => match self.trust.check(&message) {
                Ok(()) => match state.apply(&message, body) {
                    Ok(()) => return,
                    Err(refused) => (refused.cause(), refused.to_string(), Some(message)),
                },
                Err(untrusted) => ("untrusted", untrusted.to_string(), Some(message)),
            },
            Err(problem) => {
                state.skip(body);
                (problem.cause(), problem.to_string(), None)
            }
        };
        if let Some(skipped) = skipped {
            *skipped.entry(cause).or_default() += 1;
            return;
        }
        self.metrics.registry_refused(cause, 1);
        if let Some(held_back) = self.warnings.admit(cause) {
            warn!(
                function = message.as_ref().map(|message| message.function.as_str()),
                digest = message.as_ref().map(|message| message.digest.as_str()),
                action = message.as_ref().map(|message| message.action.as_str()),
                cause,
                %reason,
                held_back,
                "ignoring a registry message"
            );
        }
        if let Some(message) = message {
            let role = message.role.unwrap_or(Role::Current);
            self.report(
                channel,
                &message.function,
                &message.digest,
                role,
                Err(reason),
            )
            .await;
        }
    }

    /// Offers the table each function's current and staged versions that
    /// changed since last offered, and functions that are gone; reports
    /// what became of each.
    async fn offer(&self, state: &State, offered: &mut Offered, channel: &Channel) {
        let gone: Vec<String> = offered
            .keys()
            .filter(|name| !state.functions.contains_key(*name))
            .cloned()
            .collect();
        for function in gone {
            offered.remove(&function);
            let _ = self.updates.send(Update::new(function, Offer::Gone)).await;
        }
        for (name, function) in &state.functions {
            let before = offered.entry(name.clone()).or_default();
            let wanted = [
                (Role::Current, &function.current, &mut before.0),
                (Role::Staged, &function.staged, &mut before.1),
            ];
            for (role, digest, was) in wanted {
                let Some(digest) = digest else {
                    *was = None;
                    continue;
                };
                let Some(stored) = function.stored.get(digest) else {
                    continue;
                };
                let version = (digest.clone(), stored.limits.clone());
                if was.as_ref() == Some(&version) {
                    continue;
                }
                let (verdict, learned) = oneshot::channel();
                let update = Update {
                    function: name.clone(),
                    offer: Offer::Bytes(NewBytes {
                        bytes: stored.bytes.to_vec(),
                        limits: stored.limits.clone().map(|text| LimitsFile {
                            path: format!("the limits of {name} in registry {}", self.stream)
                                .into(),
                            text,
                        }),
                        from: format!("registry {}", self.stream),
                        settled: true,
                        stage: role == Role::Staged,
                    }),
                    verdict: Some(verdict),
                };
                if self.updates.send(update).await.is_err() {
                    return;
                }
                let outcome = learned
                    .await
                    .unwrap_or_else(|_| Err("the node is stopping".into()));
                // Offered once, taken or not: a rejected version is not
                // offered (and reported) again at every later message.
                *was = Some(version);
                self.report(channel, name, digest, role, outcome).await;
            }
        }
    }

    /// Publishes what became of a version on the events exchange.
    async fn report(
        &self,
        channel: &Channel,
        function: &str,
        digest: &str,
        role: Role,
        outcome: Result<(), String>,
    ) {
        let report = Report {
            node: self.identity.node.clone(),
            host: self.identity.host.clone(),
            function: function.to_owned(),
            digest: digest.to_owned(),
            role: role.as_str().to_owned(),
            outcome: if outcome.is_ok() {
                "serving"
            } else {
                "rejected"
            }
            .to_owned(),
            reason: outcome.err(),
        };
        let body = serde_json::to_vec(&report).unwrap_or_default();
        let publish = channel.basic_publish(
            registry::events_exchange(&self.stream).into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_type(REPORT_TYPE.into()),
        );
        if let Err(err) = tokio::time::timeout(amqp::ANSWER_TIMEOUT, publish).await {
            debug!(cause = %err, "could not report to the registry's events exchange");
        }
    }
}
