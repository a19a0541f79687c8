//! What the registry says each function is, replayed from its messages in
//! order. Nodes replay it to know what to serve; tools replay it to know
//! what a promote or rollback means, and which versions to write again
//! before the stream's retention could drop them.

use super::message::{Action, Message, Role};
use std::{collections::BTreeMap, sync::Arc};

/// Bytes a message costs in the stream beyond its body: headers and
/// framing, counted generously.
pub const MESSAGE_OVERHEAD: u64 = 512;

/// One version's bytes and limits, as the latest message that carried
/// them.
#[derive(Clone, Debug)]
pub struct Stored {
    pub bytes: Arc<Vec<u8>>,
    /// Its limits file's text, if it has one.
    pub limits: Option<String>,
    /// How many bytes the stream held before this message.
    pub position: u64,
    /// When it was deployed, as its deployer's clock said (seconds since
    /// the Unix epoch), if the message said.
    pub deployed: Option<u64>,
}

/// One function's versions.
#[derive(Clone, Debug, Default)]
pub struct FunctionState {
    pub current: Option<String>,
    pub staged: Option<String>,
    pub previous: Option<String>,
    /// The bytes of the versions above.
    pub stored: BTreeMap<String, Stored>,
}

impl FunctionState {
    /// The role `digest` has now, if any.
    pub fn role_of(&self, digest: &str) -> Option<Role> {
        let is = |slot: &Option<String>| slot.as_deref() == Some(digest);
        if is(&self.current) {
            Some(Role::Current)
        } else if is(&self.staged) {
            Some(Role::Staged)
        } else if is(&self.previous) {
            Some(Role::Previous)
        } else {
            None
        }
    }

    fn make_current(&mut self, digest: &str) {
        if self.current.as_deref() != Some(digest) {
            self.previous = self.current.take();
        }
        self.current = Some(digest.to_owned());
        if self.staged.as_deref() == Some(digest) {
            self.staged = None;
        }
    }

    /// Forgets the bytes of versions that have no role any more.
    fn forget_unused(&mut self) {
        let live = [&self.current, &self.staged, &self.previous];
        self.stored
            .retain(|digest, _| live.iter().any(|slot| slot.as_deref() == Some(digest)));
    }
}

/// Why a message changed nothing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("promotes {digest} of {function}, a version the registry does not hold")]
    UnknownVersion { function: String, digest: String },
    /// A copy of an earlier message, or one that lost a race for its
    /// number to another deployer's.
    #[error("replayed: sequence {sequence} of {function}, this registry is at {at}")]
    Replayed {
        function: String,
        sequence: u64,
        at: u64,
    },
    /// A message copied from another registry.
    #[error("signed for registry {signed_for:?}, this is {this:?}")]
    OtherRegistry { signed_for: String, this: String },
}

impl Refused {
    /// Its name in metrics and logs.
    pub fn cause(&self) -> &'static str {
        match self {
            Refused::UnknownVersion { .. } => "unknown-version",
            Refused::Replayed { .. } => "replayed",
            Refused::OtherRegistry { .. } => "other-registry",
        }
    }
}

/// Every function the registry holds.
#[derive(Clone, Debug)]
pub struct State {
    /// The registry (stream) whose messages this applies.
    pub registry: String,
    pub functions: BTreeMap<String, FunctionState>,
    /// The sequence number of the last message applied for each function,
    /// removed ones included: none ever applies again.
    pub sequences: BTreeMap<String, u64>,
    /// Where the last `remove` of each removed function sits (bytes before
    /// it): it carries the function's last number, so it is written again
    /// before retention could drop it, like a version in use.
    pub removed: BTreeMap<String, u64>,
    /// Bytes written to the stream so far, as far as this replay saw.
    pub written: u64,
}

impl State {
    /// The state of registry `registry` before its first message.
    pub fn new(registry: &str) -> Self {
        State {
            registry: registry.to_owned(),
            functions: BTreeMap::new(),
            sequences: BTreeMap::new(),
            removed: BTreeMap::new(),
            written: 0,
        }
    }

    /// The sequence number the next message for `function` takes; `None`
    /// once the numbers are used up (a message numbered `u64::MAX`).
    pub fn next_sequence(&self, function: &str) -> Option<u64> {
        self.sequences
            .get(function)
            .map_or(Some(1), |last| last.checked_add(1))
    }

    /// Counts a message that cannot be read: it takes room in the stream
    /// all the same, and ages the versions before it.
    pub fn skip(&mut self, body: &[u8]) {
        self.written += body.len() as u64 + MESSAGE_OVERHEAD;
    }

    /// Applies one message (with its body), read at the end of what came
    /// before it: only a message of this registry, numbered after the last
    /// one applied for its function, so that copies of earlier messages
    /// change nothing wherever they sit in the stream, and a node that
    /// replays the stream ends where the nodes that followed it live did.
    pub fn apply(&mut self, message: &Message, body: &[u8]) -> Result<(), Refused> {
        let position = self.written;
        self.written += body.len() as u64 + MESSAGE_OVERHEAD;
        if message.action == Action::Sync {
            return Ok(());
        }
        if message.registry != self.registry {
            return Err(Refused::OtherRegistry {
                signed_for: message.registry.clone(),
                this: self.registry.clone(),
            });
        }
        let at = self.sequences.get(&message.function).copied().unwrap_or(0);
        if message.sequence <= at {
            return Err(Refused::Replayed {
                function: message.function.clone(),
                sequence: message.sequence,
                at,
            });
        }
        // Used once, whatever the message then does.
        self.sequences
            .insert(message.function.clone(), message.sequence);
        let stored = || Stored {
            bytes: Arc::new(body.to_vec()),
            limits: message.limits.clone(),
            position,
            deployed: message.deployed,
        };
        if message.action == Action::Remove {
            self.functions.remove(&message.function);
            self.removed.insert(message.function.clone(), position);
            return Ok(());
        }
        self.removed.remove(&message.function);
        let function = self.functions.entry(message.function.clone()).or_default();
        let digest = message.digest.as_str();
        match (message.action, message.role) {
            (Action::Publish, Some(Role::Staged)) => {
                function.stored.insert(digest.to_owned(), stored());
                function.staged = Some(digest.to_owned());
            }
            (Action::Publish, _) => {
                function.stored.insert(digest.to_owned(), stored());
                function.make_current(digest);
            }
            (Action::Promote, _) => {
                if !function.stored.contains_key(digest) {
                    let refused = Refused::UnknownVersion {
                        function: message.function.clone(),
                        digest: digest.to_owned(),
                    };
                    if function.current.is_none() && function.staged.is_none() {
                        self.functions.remove(&message.function);
                    }
                    return Err(refused);
                }
                function.make_current(digest);
            }
            (Action::Keep, role) => {
                function.stored.insert(digest.to_owned(), stored());
                let slot = match role {
                    Some(Role::Staged) => &mut function.staged,
                    Some(Role::Previous) => &mut function.previous,
                    _ => &mut function.current,
                };
                *slot = Some(digest.to_owned());
            }
            (Action::Remove | Action::Sync, _) => {}
        }
        function.forget_unused();
        Ok(())
    }

    /// The versions in use (function, digest, role) whose bytes must be
    /// written again before `incoming` more bytes are, to stay within the
    /// newest `keep_within` bytes of the stream.
    pub fn to_keep(&self, incoming: u64, keep_within: u64) -> Vec<(String, String, Role)> {
        let mut incoming = incoming;
        let mut chosen: Vec<(String, String, Role)> = Vec::new();
        loop {
            let mut more = Vec::new();
            for (name, function) in &self.functions {
                for (digest, stored) in &function.stored {
                    let age = self.written - stored.position;
                    let already = chosen.iter().any(|(f, d, _)| f == name && d == digest);
                    if !already
                        && age + incoming > keep_within
                        && let Some(role) = function.role_of(digest)
                    {
                        more.push((
                            name.clone(),
                            digest.clone(),
                            role,
                            stored.bytes.len() as u64,
                        ));
                    }
                }
            }
            if more.is_empty() {
                return chosen;
            }
            for (name, digest, role, size) in more {
                incoming += size + MESSAGE_OVERHEAD;
                chosen.push((name, digest, role));
            }
        }
    }

    /// The removed functions whose `remove` must be written again before
    /// `incoming` more bytes are, to stay within the newest `keep_within`
    /// bytes of the stream: once it is dropped, a node replaying the
    /// stream would no longer know the function's last number, and a
    /// copy of an old signed `publish` of it would apply again.
    pub fn removals_to_keep(&self, incoming: u64, keep_within: u64) -> Vec<String> {
        let aging = |incoming: u64| {
            self.removed
                .iter()
                .filter(move |(_, position)| self.written - **position + incoming > keep_within)
                .map(|(function, _)| function)
        };
        // Written before the new messages, each one ages the rest a little.
        let rewritten = aging(incoming).count() as u64;
        aging(incoming + rewritten * MESSAGE_OVERHEAD)
            .cloned()
            .collect()
    }

    /// The bytes of every version in use, in all.
    pub fn live_bytes(&self) -> u64 {
        self.functions
            .values()
            .flat_map(|function| function.stored.values())
            .map(|stored| stored.bytes.len() as u64 + MESSAGE_OVERHEAD)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message for registry `r`, each numbered after the one before.
    fn message(action: Action, function: &str, digest: &str, role: Option<Role>) -> Message {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Message {
            action,
            registry: "r".into(),
            sequence: SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            function: function.into(),
            digest: digest.into(),
            role,
            limits: None,
            signature: None,
            deployed: None,
        }
    }

    #[test]
    fn publish_stage_promote_and_rollback_move_the_roles() {
        let mut state = State::new("r");
        let publish = |digest, role| message(Action::Publish, "f", digest, Some(role));
        state.apply(&publish("a", Role::Current), b"a").unwrap();
        state.apply(&publish("b", Role::Current), b"b").unwrap();
        state.apply(&publish("c", Role::Staged), b"c").unwrap();
        let f = &state.functions["f"];
        assert_eq!(
            (
                f.current.as_deref(),
                f.staged.as_deref(),
                f.previous.as_deref()
            ),
            (Some("b"), Some("c"), Some("a"))
        );
        state
            .apply(&message(Action::Promote, "f", "c", None), b"")
            .unwrap();
        let f = &state.functions["f"];
        assert_eq!(
            (
                f.current.as_deref(),
                f.staged.as_deref(),
                f.previous.as_deref()
            ),
            (Some("c"), None, Some("b"))
        );
        assert!(!f.stored.contains_key("a"), "a has no role any more");
        // A rollback is a promote of the previous version.
        state
            .apply(&message(Action::Promote, "f", "b", None), b"")
            .unwrap();
        assert_eq!(state.functions["f"].current.as_deref(), Some("b"));
        assert!(
            state
                .apply(&message(Action::Promote, "f", "zz", None), b"")
                .is_err()
        );
        state
            .apply(&message(Action::Remove, "f", "", None), b"")
            .unwrap();
        assert!(state.functions.is_empty());
    }

    #[test]
    fn copies_of_earlier_messages_and_other_registries_change_nothing() {
        let mut state = State::new("r");
        let publish = |digest, sequence| Message {
            sequence,
            ..message(Action::Publish, "f", digest, Some(Role::Current))
        };
        let (old, new) = (publish("a", 1), publish("b", 2));
        state.apply(&old, b"a").unwrap();
        state.apply(&new, b"b").unwrap();
        assert_eq!(
            state.apply(&old, b"a"),
            Err(Refused::Replayed {
                function: "f".into(),
                sequence: 1,
                at: 2
            })
        );
        // A removed function's numbers are not reused either.
        let remove = Message {
            sequence: 3,
            ..message(Action::Remove, "f", "", None)
        };
        state.apply(&remove, b"").unwrap();
        assert!(state.apply(&new, b"b").is_err());
        assert!(state.functions.is_empty());
        assert_eq!(state.next_sequence("f"), Some(4));
        let elsewhere = Message {
            registry: "staging".into(),
            ..publish("c", 9)
        };
        assert!(matches!(
            state.apply(&elsewhere, b"c"),
            Err(Refused::OtherRegistry { .. })
        ));
        assert!(state.functions.is_empty());
    }

    /// Publishes `count` versions of 1,000 bytes of function `busy`,
    /// which age everything before them in the stream.
    fn publish_busy(state: &mut State, count: usize) {
        for i in 0..count {
            let digest = format!("b{i}");
            let busy = message(Action::Publish, "busy", &digest, Some(Role::Current));
            state.apply(&busy, &[0; 1000]).unwrap();
        }
    }

    #[test]
    fn a_removal_is_kept_before_it_ages_out() {
        let mut state = State::new("r");
        let gone = Message {
            sequence: 7,
            ..message(Action::Remove, "gone", "", None)
        };
        state.apply(&gone, b"").unwrap();
        assert!(state.removals_to_keep(1_000, 10_000).is_empty());
        publish_busy(&mut state, 10);
        assert_eq!(state.removals_to_keep(1_000, 10_000), ["gone"]);
        // Written again, it is recent, and carries the function's number
        // on.
        let again = Message {
            sequence: 8,
            ..message(Action::Remove, "gone", "", None)
        };
        state.apply(&again, b"").unwrap();
        assert!(state.removals_to_keep(1_000, 10_000).is_empty());
        assert_eq!(state.next_sequence("gone"), Some(9));
    }

    #[test]
    fn versions_in_use_are_kept_before_they_age_out() {
        let mut state = State::new("r");
        state
            .apply(
                &message(Action::Publish, "old", "a", Some(Role::Current)),
                &[0; 1000],
            )
            .unwrap();
        publish_busy(&mut state, 10);
        // `old` is about 15 KB back; the busy function's current and
        // previous are recent.
        let keep = state.to_keep(1_000, 10_000);
        assert_eq!(keep, [("old".into(), "a".into(), Role::Current)]);
        assert!(state.to_keep(1_000, 100_000).is_empty());
    }
}
