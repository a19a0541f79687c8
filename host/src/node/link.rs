//! The node's one connection to RabbitMQ, opened again whenever it is lost.
//!
//! Every function's consumer runs on a channel of this connection. When a
//! consumer finds the connection gone, it says so here and waits for the
//! next one; this task reconnects with backoff and hands the new
//! connection to every consumer.

use crate::{
    node::{
        NodeConfig,
        metrics::{self, NodeMetrics},
    },
    shared::{
        amqp::{self, Refusal},
        backoff::{self, Backoff},
    },
};
use futures_util::StreamExt as _;
use lapin::{Connection, Event};
use std::{fmt, sync::Arc, time::Duration};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

/// A connection that lasts this long was a success: the next reconnect
/// starts again from the first wait. One that is lost sooner (a message
/// that kills the connection at each delivery, say) makes the waits grow,
/// so nothing can make the node reconnect in a hot loop.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// How often the connection's state is looked at, besides the events
/// that report its loss.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a connection found closed may take to say why.
const CLOSE_REASON_WAIT: Duration = Duration::from_millis(500);

/// The current connection, shared by the node's consumers.
pub(crate) struct Link {
    url: String,
    tls: amqp::TlsOptions,
    purpose: LinkFor,
    current: watch::Sender<Option<Arc<Connection>>>,
    lost: Notify,
}

/// How a link's connection ended when the node closed it.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closed {
    /// The broker answered the close: it has every frame written before.
    Cleanly,
    /// The close failed or was not answered in time: the last frames
    /// written (acks, say) may never have reached the broker.
    Uncleanly,
    /// There was no open connection to close (it was lost, and not yet
    /// opened again).
    NotOpen,
}

/// How the node's `stopped` line names it.
impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Closed::Cleanly => "cleanly",
            Closed::Uncleanly => "uncleanly",
            Closed::NotOpen => "not-open",
        })
    }
}

/// What a link's connection is for, which decides what it shows and
/// what it says when it is lost or blocked.
pub(super) enum LinkFor {
    /// The node's requests and replies; its gauges are the node's, which
    /// `/health` and the metrics read.
    Requests {
        /// 1 while connected.
        connected: metrics::Gauge,
        /// 1 while the broker blocks publishing.
        blocked: metrics::Gauge,
    },
    /// The registry, on a broker or vhost of its own (`--registry-url`).
    Registry,
}

impl LinkFor {
    /// The node's requests, shown in `metrics`.
    pub(super) fn requests(metrics: &NodeMetrics) -> Self {
        LinkFor::Requests {
            connected: metrics.broker_connected.clone(),
            blocked: metrics.broker_blocked.clone(),
        }
    }

    /// 1 while connected, 0 while not; nothing for the registry's link.
    fn set_connected(&self, connected: bool) {
        if let LinkFor::Requests {
            connected: gauge, ..
        } = self
        {
            gauge.set(i64::from(connected));
        }
    }

    /// Where a block of publishing shows: the node's gauge, or one that
    /// nobody reads.
    fn blocked(&self) -> metrics::Gauge {
        match self {
            LinkFor::Requests { blocked, .. } => blocked.clone(),
            LinkFor::Registry => metrics::Gauge::default(),
        }
    }

    /// What waits while the broker blocks publishing.
    fn publishes(&self) -> &'static str {
        match self {
            LinkFor::Requests { .. } => "replies",
            LinkFor::Registry => "reports to the registry",
        }
    }
}

impl Link {
    /// Connects to `url` (the node's broker, or its registry's) with the
    /// node's TLS files, trying again with backoff while nothing answers,
    /// for up to its connect timeout (`None`: until it does), and keeps a
    /// connection open from then on, until the handle is dropped.
    pub(super) async fn connect(
        url: &str,
        config: &NodeConfig,
        purpose: LinkFor,
    ) -> Result<(Arc<Link>, AbortOnDropHandle<()>), amqp::ConnectError> {
        let tls = &config.tls;
        let limit = config.connect_timeout;
        let connection = amqp::patiently(limit, backoff::NODE_MAX_WAIT, || {
            amqp::connect_with(url, tls)
        })
        .await?;
        purpose.set_connected(true);
        let link = Arc::new(Link {
            url: url.to_owned(),
            tls: tls.clone(),
            purpose,
            current: watch::Sender::new(Some(Arc::new(connection))),
            lost: Notify::new(),
        });
        let keeper = AbortOnDropHandle::new(tokio::spawn(link.clone().keep()));
        Ok((link, keeper))
    }

    /// The connection to open channels on, once there is one.
    pub(crate) async fn connected(&self) -> Arc<Connection> {
        let mut current = self.current.subscribe();
        loop {
            if let Some(connection) = current.borrow_and_update().as_ref()
                && connection.status().connected()
            {
                return connection.clone();
            }
            if current.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Tells the link that its connection failed.
    pub(crate) fn lost(&self) {
        self.lost.notify_one();
    }

    /// Closes the connection, if it is open, and says how that went.
    /// Bounded: a close on a connection that is half gone may never be
    /// answered.
    pub(super) async fn close(&self) -> Closed {
        let connection = self.current.send_replace(None);
        let Some(connection) = connection.filter(|connection| connection.status().connected())
        else {
            return Closed::NotOpen;
        };
        let close = connection.close(200, "OK".into());
        let cause = match tokio::time::timeout(amqp::ANSWER_TIMEOUT, close).await {
            Ok(Ok(())) => return Closed::Cleanly,
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {:?}", amqp::ANSWER_TIMEOUT),
        };
        match self.purpose {
            LinkFor::Requests { .. } => warn!(
                %cause,
                "could not close the connection cleanly; the broker redelivers the requests whose acks it did not get"
            ),
            LinkFor::Registry => {
                debug!(%cause, "could not close the registry's connection cleanly")
            }
        }
        Closed::Uncleanly
    }

    /// Watches the connection and opens a new one whenever it is lost.
    async fn keep(self: Arc<Self>) {
        let mut backoff = Backoff::up_to(backoff::NODE_MAX_WAIT);
        loop {
            let Some(connection) = self.current.borrow().clone() else {
                return;
            };
            let opened = Instant::now();
            let lost = self.until_lost(&connection).await;
            self.purpose.set_connected(false);
            // A connection the broker closed in answer to a queue it
            // refused is the consumer's to report, in its own words.
            let refused = lost.refusal.as_ref().is_some_and(Refusal::is_lasting);
            if refused {
                debug!(cause = %lost.cause, "RabbitMQ closed the connection on a refusal; reconnecting");
            } else if let LinkFor::Registry = self.purpose {
                warn!(cause = %lost.cause, "lost the connection to the registry's broker; reconnecting");
            } else {
                warn!(
                    cause = %lost.cause,
                    "lost the session with RabbitMQ; the broker will redeliver the unacked requests; reconnecting"
                );
            }
            self.current.send_replace(None);
            if opened.elapsed() >= STABLE_SESSION {
                backoff.reset();
            }
            let connection = self.reconnect(&mut backoff, refused).await;
            self.purpose.set_connected(true);
            self.current.send_replace(Some(Arc::new(connection)));
        }
    }

    /// Waits until `connection` is lost, and says why. Meanwhile logs
    /// when the broker blocks the connection's publishing (a memory or
    /// disk alarm: replies then wait, and so do the requests behind them)
    /// and when it lifts the block, and shows it in `blocked`.
    ///
    /// The one listener of the connection's events: listeners share them
    /// out rather than each seeing all.
    async fn until_lost(&self, connection: &Connection) -> Lost {
        let blocked = self.purpose.blocked();
        let _cleared_when_gone = metrics::ClearOnDrop(blocked.clone());
        let waiting = self.purpose.publishes();
        let mut events = connection.events_listener();
        let mut check = tokio::time::interval(CHECK_EVERY);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Event::ConnectionBlocked(reason)) => {
                        blocked.set(1);
                        warn!(%reason, "RabbitMQ blocked publishing on this connection (a resource alarm); {waiting} wait until it lifts");
                    }
                    Some(Event::ConnectionUnblocked) => {
                        blocked.set(0);
                        info!("RabbitMQ lifted its block; {waiting} flow again");
                    }
                    Some(Event::Error(err)) if !connection.status().connected() => {
                        return Lost::from(&err);
                    }
                    // While the connection is open, an error is a
                    // channel's (a passive look at a missing queue, say),
                    // not why the connection ends.
                    Some(_) => {}
                    None => return Lost::without_refusal("the connection ended"),
                },
                () = self.lost.notified() => {}
                _ = check.tick() => {}
            }
            if !connection.status().connected() {
                // The client marks the connection closing before it
                // reports why: wait a little for the reason.
                let reason = async {
                    while let Some(event) = events.next().await {
                        if let Event::Error(err) = event {
                            return Some(err);
                        }
                    }
                    None
                };
                return match tokio::time::timeout(CLOSE_REASON_WAIT, reason).await {
                    Ok(Some(err)) => Lost::from(&err),
                    _ => Lost::without_refusal("the connection is closed"),
                };
            }
        }
    }

    /// Connects again, waiting longer after each failed attempt. After a
    /// refusal, quietly: the consumer that was refused says what matters.
    async fn reconnect(&self, backoff: &mut Backoff, quietly: bool) -> Connection {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            tokio::time::sleep(backoff.next_wait()).await;
            match amqp::connect_with(&self.url, &self.tls).await {
                Ok(connection) => {
                    // Each consumer says "serving again" once its queue is
                    // consumed on this connection.
                    if quietly {
                        debug!(attempt, "reconnected to RabbitMQ");
                    } else {
                        info!(attempt, "reconnected to RabbitMQ");
                    }
                    return connection;
                }
                Err(err) => warn!(
                    attempt,
                    cause = %err,
                    retry_in_ms = backoff.upcoming().as_millis() as u64,
                    "cannot reconnect yet"
                ),
            }
        }
    }
}

/// Why a connection ended.
struct Lost {
    cause: String,
    /// What the broker refused, when it closed the connection on a
    /// refusal.
    refusal: Option<Refusal>,
}

impl Lost {
    fn from(err: &lapin::Error) -> Lost {
        Lost {
            cause: err.to_string(),
            refusal: Refusal::of(err),
        }
    }

    fn without_refusal(cause: &str) -> Lost {
        Lost {
            cause: cause.to_owned(),
            refusal: None,
        }
    }
}
