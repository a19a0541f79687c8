//! The registry of function versions: a RabbitMQ stream that every node
//! reads from its first offset, so each node serves what the others do,
//! and that deployers append to.
//!
//! Each message is one action on one function (see [`message`]): new
//! bytes (current or staged), a promote (or rollback), a removal, or bytes
//! written again so retention never drops a version in use. The broker
//! stores everything; nodes keep only the versions in use.
//!
//! # Layout
//!
//! - this file: the stream's name, its retention, and the exchanges
//!   beside it.
//! - [`message`]: one message's headers.
//! - [`state`]: what the messages say each function is, replayed.
//! - [`signing`]: ed25519 keys; who may deploy.
//! - [`report`]: what nodes tell deployers (`serving`, `rejected`) and
//!   their status.
//! - [`candidate`]: a module file checked before it is deployed, as every
//!   node would check it.
//! - [`deploy`]: the deployer's side: `compute deploy`, `promote`,
//!   `rollback`, `remove`, `status`.
//! - [`versions`]: a function's versions as `compute versions` lists
//!   them.

pub mod candidate;
pub mod deploy;
pub mod message;
pub mod report;
pub mod signing;
pub mod state;
pub mod versions;

use crate::shared::amqp;
use lapin::{
    Channel, Connection, Consumer, ExchangeKind,
    options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
};

/// The stream's name unless told otherwise.
pub const DEFAULT_STREAM: &str = "compute.modules";

/// How much the stream keeps. Versions in use are written again before
/// they could age out (see [`state::State::to_keep`]), so this bounds the
/// history, never what is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The stream's size, past which its oldest segments are dropped.
    pub max_bytes: u64,
    /// The size of one segment: what is dropped at once.
    pub segment_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_bytes: 4 << 30,
            segment_bytes: 64 << 20,
        }
    }
}

impl Retention {
    /// Versions in use stay within the newest this many bytes: half the
    /// stream, less a segment, so a segment dropped at once never holds
    /// one.
    pub fn keep_within(&self) -> u64 {
        (self.max_bytes / 2).saturating_sub(self.segment_bytes)
    }

    /// The arguments the stream is declared with.
    pub(crate) fn arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("stream")),
        );
        arguments.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(self.max_bytes as i64),
        );
        arguments.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(self.segment_bytes as i64),
        );
        arguments
    }
}

/// The fanout exchange nodes report on, and answer status requests on:
/// `<stream>.events`.
pub fn events_exchange(stream: &str) -> String {
    format!("{stream}.events")
}

/// The fanout exchange deployers ask nodes for their status on:
/// `<stream>.status`.
pub fn status_exchange(stream: &str) -> String {
    format!("{stream}.status")
}

/// A channel on which the events and status exchanges are declared.
pub async fn channel_for_exchanges(
    connection: &Connection,
    stream: &str,
) -> Result<Channel, lapin::Error> {
    declare_exchanges(connection, stream, ExchangeDeclareOptions::default()).await
}

/// A channel on which the events and status exchanges are declared with
/// `options` (passive: they must exist already).
pub async fn declare_exchanges(
    connection: &Connection,
    stream: &str,
    options: ExchangeDeclareOptions,
) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    for exchange in [events_exchange(stream), status_exchange(stream)] {
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Fanout,
                options,
                FieldTable::default(),
            )
            .await?;
    }
    Ok(channel)
}

/// Consumes `stream` on `channel` from its first message (the channel's
/// prefetch must be set: streams require it).
pub async fn consume_from_first(channel: &Channel, stream: &str) -> Result<Consumer, lapin::Error> {
    let mut from_first = FieldTable::default();
    from_first.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString(LongString::from("first")),
    );
    channel
        .basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            from_first,
        )
        .await
}

/// A private queue bound to the fanout `exchange`, consumed without acks:
/// what is published there from now on, as long as the channel lives.
pub(crate) async fn listen(channel: &Channel, exchange: &str) -> Result<Consumer, lapin::Error> {
    let private = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare("".into(), private, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    amqp::consume_no_ack(channel, queue.name().clone()).await
}
