//! What a request may use: the node's limits ([`Limits`]), and a
//! function's own ([`FunctionLimits`]), read from the small file beside its
//! module (`NAME.toml` beside `NAME.wasm`), which may only narrow them.
//!
//! One size does not fit all: `increase.wasm` touches one 64 KiB page,
//! while a Python function starts with megabytes of interpreter. The node's
//! limits are the maxima the instance pool is sized for; a function asks
//! for less, or for fewer instances at once, never for more.

use serde::Deserialize;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// What one request may use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// CPU time the guest may run for one request (instantiation included).
    /// Counted only while the guest's own code runs.
    pub timeout: Duration,
    /// Wall-clock time one request may take in the sandbox, whatever it
    /// does: running, waiting for a thread, or blocked in a host call
    /// (a WASI sleep or poll), which [`timeout`](Self::timeout) does not
    /// count.
    pub wall_timeout: Duration,
    /// Linear memory the guest may grow to, in bytes.
    pub memory: usize,
    /// The largest request body the guest is given, and the largest reply
    /// body it may return, in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(1),
            wall_timeout: Duration::from_secs(10),
            memory: 64 << 20,
            max_body: 1 << 20,
        }
    }
}

/// A function's own limits, each within the node's: what `NAME.toml`
/// says, in the units of the node's flags. Every key is optional:
///
/// ```toml
/// memory = 32          # MiB, at most --guest-memory
/// timeout = 0.5        # seconds of CPU, at most --guest-timeout
/// wall-timeout = 5     # seconds, at most --guest-wall-timeout
/// instances = 8        # requests of this function computed at once
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FunctionLimits {
    /// Linear memory, in MiB.
    pub memory: Option<u32>,
    /// CPU time per request, in seconds.
    pub timeout: Option<f64>,
    /// Wall-clock time per request, in seconds.
    pub wall_timeout: Option<f64>,
    /// Requests of this function computed at once; the others wait for
    /// one to finish. For a guest whose every instance writes megabytes,
    /// this bounds the node's memory.
    pub instances: Option<u32>,
}

/// `memory 32 MiB, instances 8`, or `the node's limits`.
impl std::fmt::Display for FunctionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let FunctionLimits {
            memory,
            timeout,
            wall_timeout,
            instances,
        } = self;
        let asked: Vec<String> = [
            memory.map(|mib| format!("memory {mib} MiB")),
            timeout.map(|seconds| format!("timeout {seconds} s")),
            wall_timeout.map(|seconds| format!("wall-timeout {seconds} s")),
            instances.map(|instances| format!("instances {instances}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if asked.is_empty() {
            f.write_str("the node's limits")
        } else {
            f.write_str(&asked.join(", "))
        }
    }
}

/// Why a function's limits cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// `NAME.toml` is not TOML, or has keys or values we do not know.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The limits file.
        path: String,
        /// What is wrong, as the parser says it.
        reason: String,
    },
    /// `NAME.toml` is there but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The limits file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The module's memory, before it runs any code, is already larger
    /// than its memory limit: no request could ever run.
    #[error(
        "the module needs {needs} bytes of memory to start, more than its own memory limit of {limit} bytes"
    )]
    TooSmallToStart {
        /// Bytes the module's memories start with.
        needs: usize,
        /// Bytes it may have.
        limit: usize,
    },
    /// A limit is above the node's, or not a usable value.
    #[error("{key} = {asked} {reason}")]
    OutOfRange {
        /// The key in `NAME.toml`.
        key: &'static str,
        /// The value it asks for.
        asked: String,
        /// Why it cannot have it.
        reason: String,
    },
}

/// A limits file as read: where, and what it says, not yet parsed, so
/// that a source can tell whether it changed and the node decides what to
/// make of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsFile {
    /// Where it was read.
    pub path: PathBuf,
    /// What it holds.
    pub text: String,
}

impl LimitsFile {
    /// The limits file of the module at `module`: `NAME.toml` beside
    /// `NAME.wasm`.
    pub fn path_beside(module: &Path) -> PathBuf {
        module.with_extension("toml")
    }

    /// Reads the limits file of the module at `module`: none when there
    /// is no such file.
    ///
    /// # Errors
    ///
    /// When the file is there but cannot be read.
    pub fn read_beside(module: &Path) -> std::io::Result<Option<Self>> {
        let path = Self::path_beside(module);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(LimitsFile { path, text })),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The limits it asks for.
    ///
    /// # Errors
    ///
    /// When it is not TOML or holds an unknown key or a value of the
    /// wrong type.
    pub fn parse(&self) -> Result<FunctionLimits, LimitsError> {
        FunctionLimits::parse(&self.text, &self.path)
    }
}

impl LimitsError {
    /// The limits file of the module at `module` could not be read.
    pub fn unreadable_beside(module: &Path, source: std::io::Error) -> Self {
        LimitsError::Io {
            path: LimitsFile::path_beside(module).display().to_string(),
            source,
        }
    }
}

impl FunctionLimits {
    /// The limits of a function whose limits file, if any, is `file`.
    ///
    /// # Errors
    ///
    /// When the file cannot be parsed.
    pub fn of(file: Option<&LimitsFile>) -> Result<Self, LimitsError> {
        file.map_or(Ok(FunctionLimits::default()), LimitsFile::parse)
    }

    /// Parses `text`, the contents of the limits file at `path`.
    ///
    /// # Errors
    ///
    /// When it is not TOML or holds an unknown key or a value of the
    /// wrong type.
    pub fn parse(text: &str, path: &Path) -> Result<Self, LimitsError> {
        toml::from_str(text).map_err(|err| {
            // The parser's own text spans lines (a caret under the key);
            // the log and the registry want one, which names the place as
            // compilers do: FILE:LINE:COLUMN.
            let at = err.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                format!(":{line}:{column}")
            });
            LimitsError::Unreadable {
                path: format!("{}{}", path.display(), at.unwrap_or_default()),
                reason: err.message().to_owned(),
            }
        })
    }

    /// The node's `limits`, narrowed by these.
    ///
    /// # Errors
    ///
    /// When one asks for more than the node allows, or is zero or not a
    /// number of seconds.
    pub fn within(&self, node: Limits) -> Result<Limits, LimitsError> {
        let mut limits = node;
        if let Some(memory) = self.memory {
            let node_mib = node.memory >> 20;
            if memory == 0 || memory as usize > node_mib {
                return Err(LimitsError::OutOfRange {
                    key: "memory",
                    asked: memory.to_string(),
                    reason: format!(
                        "is not between 1 and the node's --guest-memory of {node_mib} MiB"
                    ),
                });
            }
            limits.memory = (memory as usize) << 20;
        }
        limits.timeout = seconds("timeout", self.timeout, node.timeout, "--guest-timeout")?;
        limits.wall_timeout = seconds(
            "wall-timeout",
            self.wall_timeout,
            node.wall_timeout,
            "--guest-wall-timeout",
        )?;
        if self.instances == Some(0) {
            return Err(LimitsError::OutOfRange {
                key: "instances",
                asked: "0".to_owned(),
                reason: "would never run a request".to_owned(),
            });
        }
        Ok(limits)
    }
}

/// `asked` seconds as a duration no longer than the node's `node`, or
/// `node` when not asked.
fn seconds(
    key: &'static str,
    asked: Option<f64>,
    node: Duration,
    flag: &str,
) -> Result<Duration, LimitsError> {
    let Some(asked) = asked else {
        return Ok(node);
    };
    match Duration::try_from_secs_f64(asked) {
        Ok(duration) if !duration.is_zero() && duration <= node => Ok(duration),
        _ => Err(LimitsError::OutOfRange {
            key,
            asked: asked.to_string(),
            reason: format!(
                "is not a number of seconds above 0 and at most the node's {flag} of {}",
                node.as_secs_f64()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FunctionLimits, LimitsError> {
        FunctionLimits::parse(text, Path::new("modules/f.toml"))
    }

    /// Each key narrows the node's limit it names; the rest stay the
    /// node's.
    #[test]
    fn a_function_narrows_the_node_limits_it_names() {
        let node = Limits::default();
        let own = parse("memory = 16\ninstances = 4\ntimeout = 0.25\n").unwrap();
        let limits = own.within(node).unwrap();
        assert_eq!(limits.memory, 16 << 20);
        assert_eq!(limits.timeout, Duration::from_millis(250));
        assert_eq!(limits.wall_timeout, node.wall_timeout);
        assert_eq!(limits.max_body, node.max_body);
        assert_eq!(own.instances, Some(4));
        assert_eq!(FunctionLimits::default().within(node).unwrap(), node);
    }

    /// Asking for more than the node allows, or for nothing, is refused
    /// with the key, the value and the node's limit.
    #[test]
    fn a_function_cannot_ask_for_more_than_the_node() {
        let node = Limits::default();
        let refused = |text: &str| parse(text).unwrap().within(node).unwrap_err().to_string();
        assert_eq!(
            refused("memory = 128"),
            "memory = 128 is not between 1 and the node's --guest-memory of 64 MiB"
        );
        assert!(refused("timeout = 2").contains("--guest-timeout of 1"));
        assert!(refused("wall-timeout = -1").starts_with("wall-timeout = -1 is not"));
        assert!(refused("timeout = 0").starts_with("timeout = 0 is not"));
        assert_eq!(
            refused("instances = 0"),
            "instances = 0 would never run a request"
        );
    }

    /// A typo is an error naming the file, the line and the column, not
    /// a limit silently ignored.
    #[test]
    fn an_unknown_key_or_a_wrong_type_is_an_error() {
        let unknown = parse("memroy = 16").unwrap_err().to_string();
        assert!(
            unknown.starts_with("modules/f.toml:1:1: unknown field `memroy`"),
            "{unknown}"
        );
        assert!(!unknown.contains('\n'), "{unknown}");
        let wrong = parse("timeout = 2\nmemory = \"16 MiB\"")
            .unwrap_err()
            .to_string();
        assert!(
            wrong.starts_with("modules/f.toml:2:10: invalid type"),
            "{wrong}"
        );
        assert!(parse("instances = -1").is_err());
    }
}
