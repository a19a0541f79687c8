//! A version a deployer is about to publish, checked first as every node
//! would check it: a module no node could compile, or a limits file no
//! node could parse, is refused here and never reaches the stream.

use super::{deploy, message::Message};
use crate::shared::sandbox::{
    self, CompileCache, FunctionLimits, Limits, LimitsError, LimitsFile, LoadError, Sandbox,
    SandboxError,
};
use std::path::Path;

/// A module file, checked, with its function's name and its limits.
pub struct Candidate {
    /// The function it is a version of.
    pub function: String,
    /// The module's bytes.
    pub bytes: Vec<u8>,
    /// Their digest, `sha256:<hex>`.
    pub digest: String,
    /// The text of its limits file (`NAME.toml` beside it), if it has one.
    pub limits: Option<String>,
}

/// Why a module file cannot be deployed. Nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum CandidateError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("the module's path has no file name: give --function")]
    Unnamed,
    #[error(transparent)]
    LimitsUnreadable(LimitsError),
    #[error("not a usable limits file; nothing was deployed")]
    Limits(#[source] LimitsError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("{path} is not a usable compute module; nothing was deployed")]
    Module {
        path: String,
        #[source]
        source: LoadError,
    },
}

impl Candidate {
    /// Reads the module at `path` (the version of `function`, or of the
    /// function its file stem names) and its limits file, and compiles it
    /// under the default limits, through `cache` when given (the nodes'
    /// cache on this host: a node then compiles nothing this did).
    ///
    /// # Errors
    ///
    /// When a file cannot be read, the limits file does not parse, or the
    /// module does not compile.
    pub fn check(
        path: &Path,
        function: Option<String>,
        cache: Option<CompileCache>,
    ) -> Result<Candidate, CandidateError> {
        let bytes = std::fs::read(path).map_err(|source| CandidateError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        let function = match function {
            Some(function) => function,
            None => path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .ok_or(CandidateError::Unnamed)?,
        };
        let limits = LimitsFile::read_beside(path).map_err(|source| {
            CandidateError::LimitsUnreadable(LimitsError::unreadable_beside(path, source))
        })?;
        FunctionLimits::of(limits.as_ref()).map_err(CandidateError::Limits)?;
        Sandbox::with_capacity(Limits::default(), 1)?
            .with_compile_cache(cache)
            .load_bytes(&function, &bytes)
            .map_err(|source| CandidateError::Module {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Candidate {
            digest: sandbox::digest(&bytes),
            function,
            bytes,
            limits: limits.map(|file| file.text),
        })
    }

    /// The message that publishes it: as the current version, or staged
    /// for pinned requests.
    pub fn publish(&self, stage: bool) -> Message {
        deploy::publish(&self.function, &self.digest, stage, self.limits.clone())
    }
}
