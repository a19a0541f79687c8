//! Who may deploy: registry messages are signed with ed25519, and a node
//! acts only on messages signed by a key it trusts.
//!
//! A key file holds the 32-byte secret key as 64 hex digits; its public
//! key, the file to give nodes (`--trusted-key`), is `FILE.pub`, also hex.

use super::message::Message;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use std::path::{Path, PathBuf};

/// A problem with a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not hold a key: expected 64 hex digits")]
    Malformed { path: PathBuf },
    #[error("cannot write key file {path}: {source}")]
    Unwritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists; keygen never overwrites a key")]
    Exists { path: PathBuf },
    #[error("cannot get randomness for a new key: {0}")]
    Randomness(String),
}

/// Why a message's signature is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("it is not signed, and this node accepts only signed versions (--trusted-key)")]
    Unsigned,
    #[error("it is signed by a key this node does not trust ({0})")]
    UnknownKey(String),
    #[error("its signature does not match what it says")]
    BadSignature,
}

/// The keys whose signatures a node accepts, or none: then everything is
/// accepted (`--allow-unsigned`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    Keys(Vec<VerifyingKey>),
    Anyone,
}

impl Trust {
    /// The public keys in `files`.
    pub fn keys(files: &[PathBuf]) -> Result<Self, KeyError> {
        let keys = files
            .iter()
            .map(|path| {
                let bytes = read_hex_key(path)?;
                VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| KeyError::Malformed { path: path.clone() })
            })
            .collect::<Result<_, _>>()?;
        Ok(Trust::Keys(keys))
    }

    /// Whether `message` may act.
    pub fn check(&self, message: &Message) -> Result<(), Untrusted> {
        let Trust::Keys(keys) = self else {
            return Ok(());
        };
        let (signature, signer) = message.signature.as_ref().ok_or(Untrusted::Unsigned)?;
        let key = keys
            .iter()
            .find(|key| hex(key.as_bytes()) == *signer)
            .ok_or_else(|| Untrusted::UnknownKey(signer.chars().take(16).collect()))?;
        let signature = unhex::<64>(signature)
            .map(|bytes| Signature::from_bytes(&bytes))
            .ok_or(Untrusted::BadSignature)?;
        key.verify(message.signed_text().as_bytes(), &signature)
            .map_err(|_| Untrusted::BadSignature)
    }
}

/// A deployer's secret key.
pub struct DeployKey(SigningKey);

impl DeployKey {
    /// The key in `path`.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        Ok(DeployKey(SigningKey::from_bytes(&read_hex_key(path)?)))
    }

    /// The public key that checks this key's signatures.
    pub fn public(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// Signs `message` in place.
    pub fn sign(&self, message: &mut Message) {
        let signature = self.0.sign(message.signed_text().as_bytes());
        message.signature = Some((
            hex(&signature.to_bytes()),
            hex(self.0.verifying_key().as_bytes()),
        ));
    }
}

/// Makes a new key pair: the secret key in `path` (readable by its owner
/// only), the public key in `path.pub`. Returns the public key's path.
pub fn keygen(path: &Path) -> Result<PathBuf, KeyError> {
    let public = PathBuf::from(format!("{}.pub", path.display()));
    for file in [path, public.as_path()] {
        if file.exists() {
            return Err(KeyError::Exists {
                path: file.to_owned(),
            });
        }
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|err| KeyError::Randomness(err.to_string()))?;
    let key = SigningKey::from_bytes(&secret);
    write_private(path, &hex(&secret))?;
    std::fs::write(
        &public,
        format!("{}\n", hex(key.verifying_key().as_bytes())),
    )
    .map_err(|source| KeyError::Unwritable {
        path: public.clone(),
        source,
    })?;
    Ok(public)
}

fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let unwritable = |source| KeyError::Unwritable {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(unwritable)?;
    writeln!(file, "{text}").map_err(unwritable)
}

fn read_hex_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    unhex::<32>(text.trim()).ok_or_else(|| KeyError::Malformed {
        path: path.to_owned(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::message::{Action, Role};

    #[test]
    fn only_a_trusted_key_signing_exactly_this_message_is_accepted() {
        let dir = std::env::temp_dir().join(format!("compute-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ours, theirs) = (dir.join("ours"), dir.join("theirs"));
        let ours_public = keygen(&ours).unwrap();
        keygen(&theirs).unwrap();
        assert!(matches!(keygen(&ours), Err(KeyError::Exists { .. })));
        let trust = Trust::keys(&[ours_public]).unwrap();

        let mut message = Message {
            action: Action::Publish,
            registry: "compute.modules".into(),
            sequence: 1,
            function: "increase".into(),
            digest: "sha256:00".into(),
            role: Some(Role::Current),
            limits: None,
            signature: None,
            deployed: None,
        };
        assert_eq!(trust.check(&message), Err(Untrusted::Unsigned));
        DeployKey::read(&ours).unwrap().sign(&mut message);
        assert_eq!(trust.check(&message), Ok(()));
        let mut moved = message.clone();
        moved.function = "other".into();
        assert_eq!(trust.check(&moved), Err(Untrusted::BadSignature));
        DeployKey::read(&theirs).unwrap().sign(&mut message);
        assert!(matches!(
            trust.check(&message),
            Err(Untrusted::UnknownKey(_))
        ));
        assert_eq!(Trust::Anyone.check(&moved), Ok(()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
