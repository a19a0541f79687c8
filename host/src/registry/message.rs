//! One message of the registry stream: what it does to one function, and
//! the headers that carry it.

use crate::shared::wire;
use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString},
};

/// Header that says what a message does.
pub const ACTION_HEADER: &str = "x-action";
/// Header that says which role a version takes (`publish` and `keep`).
pub const ROLE_HEADER: &str = "x-role";
/// Header holding a version's limits file, its TOML text (`publish` and
/// `keep`, when the version has one).
pub const LIMITS_HEADER: &str = "x-limits";
/// Header holding the ed25519 signature of the message, hex.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// Header holding the public key that signed the message, hex.
pub const SIGNED_BY_HEADER: &str = "x-signed-by";
/// Header naming the registry (the stream) a message was written for.
pub const REGISTRY_HEADER: &str = "x-registry";
/// Header holding a message's sequence number among its function's
/// messages, decimal: each is greater than the one before.
pub const SEQUENCE_HEADER: &str = "x-sequence";

/// What a registry message does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// New bytes of a function, current or staged: the body is the
    /// component.
    Publish,
    /// An earlier version becomes current (a promote, or a rollback).
    Promote,
    /// The function is no longer served.
    Remove,
    /// Bytes written again, with the role they have now, so the stream's
    /// retention never drops a version still in use. Changes nothing
    /// else.
    Keep,
    /// A marker a tool writes to know when it has read everything before
    /// it. Changes nothing.
    Sync,
}

impl Action {
    /// Its name in the `x-action` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Promote => "promote",
            Action::Remove => "remove",
            Action::Keep => "keep",
            Action::Sync => "sync",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Action::Publish,
            Action::Promote,
            Action::Remove,
            Action::Keep,
            Action::Sync,
        ]
        .into_iter()
        .find(|action| action.as_str() == name)
    }
}

/// The role of a version of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// What requests run.
    Current,
    /// Only for requests that pin it, until it is promoted.
    Staged,
    /// The current version before the last promote: where a rollback
    /// goes.
    Previous,
}

impl Role {
    /// Its name in the `x-role` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Current => "current",
            Role::Staged => "staged",
            Role::Previous => "previous",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Role::Current, Role::Staged, Role::Previous]
            .into_iter()
            .find(|role| role.as_str() == name)
    }
}

/// A registry message, its headers read.
///
/// What it belongs to and where it stands are part of what it says, and
/// of what its signature covers: the registry it was written for, and its
/// sequence number among its function's messages. A copy of a signed
/// message, put back at the end of its stream or into another one, is
/// refused for either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub action: Action,
    /// The registry (stream) it was written for; empty for
    /// [`Action::Sync`].
    pub registry: String,
    /// Its place among its function's messages: greater than every one
    /// before; 0 for [`Action::Sync`].
    pub sequence: u64,
    /// The function; empty for [`Action::Sync`].
    pub function: String,
    /// The version; empty for [`Action::Remove`] and [`Action::Sync`].
    pub digest: String,
    /// The role, for [`Action::Publish`] and [`Action::Keep`].
    pub role: Option<Role>,
    /// The version's limits file, its text, for [`Action::Publish`] and
    /// [`Action::Keep`]: none means the node's limits.
    pub limits: Option<String>,
    /// The signature and the key that made it, if signed.
    pub signature: Option<(String, String)>,
    /// When its version was deployed, in seconds since the Unix epoch, as
    /// the deployer's clock said (the AMQP `timestamp`): for people
    /// reading `compute versions`, so not signed, and never acted on.
    pub deployed: Option<u64>,
}

/// Why a message could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadMessage {
    #[error("no {ACTION_HEADER} header, or an unknown action")]
    Action,
    #[error("no {} header", wire::FUNCTION_HEADER)]
    Function,
    #[error("no {} header", wire::MODULE_HEADER)]
    Digest,
    #[error("no {ROLE_HEADER} header, or an unknown role")]
    Role,
    #[error(
        "no {REGISTRY_HEADER} or {SEQUENCE_HEADER} header: written by an older `compute deploy`; deploy its version again"
    )]
    OldFormat,
    #[error("its body's digest is {actual}, not the {claimed} it claims")]
    DigestMismatch { claimed: String, actual: String },
}

impl BadMessage {
    /// Its name in metrics and logs.
    pub fn cause(&self) -> &'static str {
        match self {
            BadMessage::OldFormat => "old-format",
            _ => "unreadable",
        }
    }
}

impl Message {
    /// A message of `action` on `digest` of `function`, not yet numbered
    /// nor signed: a deployer gives it its registry and sequence number
    /// when it appends it.
    pub fn unnumbered(
        action: Action,
        function: &str,
        digest: &str,
        role: Option<Role>,
        limits: Option<String>,
    ) -> Self {
        Message {
            action,
            registry: String::new(),
            sequence: 0,
            function: function.to_owned(),
            digest: digest.to_owned(),
            role,
            limits,
            signature: None,
            deployed: None,
        }
    }

    /// A marker a tool writes to know when it has read everything before
    /// it: it belongs to no registry and no function, and changes
    /// nothing.
    pub fn sync() -> Self {
        Message::unnumbered(Action::Sync, "", "", None, None)
    }

    /// Reads a message's headers, and checks that a body it carries has
    /// the digest it claims.
    pub fn read(properties: &BasicProperties, body: &[u8]) -> Result<Self, BadMessage> {
        let text = |name| wire::header_text(properties, name);
        let action = text(ACTION_HEADER)
            .as_deref()
            .and_then(Action::parse)
            .ok_or(BadMessage::Action)?;
        if action == Action::Sync {
            return Ok(Message::sync());
        }
        let registry = text(REGISTRY_HEADER).ok_or(BadMessage::OldFormat)?;
        let sequence = text(SEQUENCE_HEADER)
            .and_then(|sequence| sequence.parse().ok())
            .ok_or(BadMessage::OldFormat)?;
        let function = text(wire::FUNCTION_HEADER).ok_or(BadMessage::Function)?;
        let digest = match action {
            Action::Remove => String::new(),
            _ => text(wire::MODULE_HEADER).ok_or(BadMessage::Digest)?,
        };
        let role = match action {
            Action::Publish | Action::Keep => Some(
                text(ROLE_HEADER)
                    .as_deref()
                    .and_then(Role::parse)
                    .filter(|role| action == Action::Keep || *role != Role::Previous)
                    .ok_or(BadMessage::Role)?,
            ),
            _ => None,
        };
        if matches!(action, Action::Publish | Action::Keep) {
            let actual = crate::shared::sandbox::digest(body);
            if actual != digest {
                return Err(BadMessage::DigestMismatch {
                    claimed: digest,
                    actual,
                });
            }
        }
        let limits = match action {
            Action::Publish | Action::Keep => text(LIMITS_HEADER),
            _ => None,
        };
        let signature = text(SIGNATURE_HEADER).zip(text(SIGNED_BY_HEADER));
        Ok(Message {
            action,
            registry,
            sequence,
            function,
            digest,
            role,
            limits,
            signature,
            deployed: *properties.timestamp(),
        })
    }

    /// What a signature covers: everything the message does, so a
    /// signature cannot be moved onto another action, function, version,
    /// role or limits; and the registry and sequence number it was
    /// written with, so it cannot be replayed later or elsewhere.
    pub fn signed_text(&self) -> String {
        let mut text = format!(
            "compute-registry-v2\n{}\n{}\n{}\n{}\n{}\n{}",
            self.registry,
            self.sequence,
            self.action.as_str(),
            self.function,
            self.digest,
            self.role.map_or("", Role::as_str)
        );
        if let Some(limits) = &self.limits {
            text.push_str("\nlimits\n");
            text.push_str(limits);
        }
        text
    }

    /// The properties that carry this message.
    pub fn properties(&self, message_id: &str) -> BasicProperties {
        let mut headers = FieldTable::default();
        let mut put = |name: &str, value: &str| {
            headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
        };
        put(ACTION_HEADER, self.action.as_str());
        if self.action != Action::Sync {
            put(REGISTRY_HEADER, &self.registry);
            put(SEQUENCE_HEADER, &self.sequence.to_string());
        }
        if !self.function.is_empty() {
            put(wire::FUNCTION_HEADER, &self.function);
        }
        if !self.digest.is_empty() {
            put(wire::MODULE_HEADER, &self.digest);
        }
        if let Some(role) = self.role {
            put(ROLE_HEADER, role.as_str());
        }
        if let Some(limits) = &self.limits {
            put(LIMITS_HEADER, limits);
        }
        if let Some((signature, key)) = &self.signature {
            put(SIGNATURE_HEADER, signature);
            put(SIGNED_BY_HEADER, key);
        }
        let properties = BasicProperties::default()
            .with_headers(headers)
            .with_message_id(message_id.into())
            .with_delivery_mode(2);
        match self.deployed {
            Some(deployed) => properties.with_timestamp(deployed),
            None => properties,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_what_it_wrote_and_its_body_must_match() {
        let body = b"component bytes";
        let message = Message {
            action: Action::Publish,
            registry: "compute.modules".into(),
            sequence: 7,
            function: "increase".into(),
            digest: crate::shared::sandbox::digest(body),
            role: Some(Role::Staged),
            limits: Some("instances = 2\n".into()),
            signature: Some(("ab".into(), "cd".into())),
            deployed: Some(1_796_471_401),
        };
        let properties = message.properties("id-1");
        assert_eq!(Message::read(&properties, body), Ok(message.clone()));
        assert!(matches!(
            Message::read(&properties, b"other bytes"),
            Err(BadMessage::DigestMismatch { .. })
        ));
        let unsigned = Message {
            signature: None,
            ..message.clone()
        };
        assert_ne!(
            unsigned.signed_text(),
            Message {
                role: Some(Role::Current),
                ..unsigned.clone()
            }
            .signed_text()
        );
        for other in [
            Message {
                limits: None,
                ..unsigned.clone()
            },
            Message {
                sequence: 8,
                ..unsigned.clone()
            },
            Message {
                registry: "staging".into(),
                ..unsigned.clone()
            },
        ] {
            assert_ne!(unsigned.signed_text(), other.signed_text());
        }
        // A message of the format before sequences is refused, not read
        // as if it were in order.
        let mut old = message.properties("id-2");
        let headers = old.headers().clone().unwrap();
        let mut without = FieldTable::default();
        for (name, value) in headers.inner() {
            if name.as_str() != SEQUENCE_HEADER {
                without.insert(name.clone(), value.clone());
            }
        }
        old = old.with_headers(without);
        assert_eq!(Message::read(&old, body), Err(BadMessage::OldFormat));
    }
}
