//! What the sandbox may use and where it keeps compiled code: the
//! arguments a node shares with `compute call` and `compute deploy`.

use crate::shared::sandbox::{CacheError, CacheSettings, CompileCache, Limits};
use std::{path::PathBuf, time::Duration};

/// What one request may use in the guest: the node's limits, which
/// `compute call` applies too.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// CPU time one request may use in the guest, in seconds; past it the
    /// request gets a `timeout` error reply.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = super::parse_seconds)]
    pub guest_timeout: Duration,

    /// Wall-clock time one request may take in the guest, in seconds,
    /// including time blocked in host calls (a WASI sleep) that
    /// --guest-timeout does not count; past it the request gets a
    /// `timeout` error reply and its instance is dropped.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = super::parse_seconds)]
    pub guest_wall_timeout: Duration,

    /// Memory one request may use in the guest, in MiB; past it the request
    /// gets a `compute-failed` error reply.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub guest_memory: u32,

    /// The largest request body the node computes, and the largest reply it
    /// sends, in bytes; larger ones get a `too-large` error reply.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_body: usize,
}

/// Where compiled code is kept between runs: the node's setting, which
/// `compute call` shares.
#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    /// Keep compiled modules in DIR, so that a restart, a rollback or
    /// another node on this host loads them instead of compiling again
    /// [default: $XDG_CACHE_HOME/compute-node/compiled, or
    /// ~/.cache/compute-node/compiled].
    #[arg(long, value_name = "DIR")]
    pub compile_cache: Option<PathBuf>,

    /// Compile every module, keeping nothing on disk.
    #[arg(long, conflicts_with = "compile_cache")]
    pub no_compile_cache: bool,

    /// The most the compile cache holds, in MiB; the oldest entries are
    /// removed first.
    #[arg(long, value_name = "MIB", default_value_t = CacheSettings::DEFAULT_MAX_BYTES >> 20)]
    pub compile_cache_max: u64,
}

impl CacheArgs {
    /// The cache these arguments ask for, if any: none with
    /// `--no-compile-cache`, or when there is no home directory to keep
    /// one in and none is given.
    pub fn settings(&self) -> Option<CacheSettings> {
        if self.no_compile_cache {
            return None;
        }
        let dir = self
            .compile_cache
            .clone()
            .or_else(CacheSettings::default_dir)?;
        Some(CacheSettings {
            dir,
            max_bytes: self.compile_cache_max.saturating_mul(1 << 20),
            required: self.compile_cache.is_some(),
        })
    }

    /// The cache these arguments ask for, opened; `None` when none is
    /// asked for, or when the default one cannot be used (which is said).
    ///
    /// # Errors
    ///
    /// When a cache given with `--compile-cache` cannot be used.
    pub fn open(&self) -> Result<Option<CompileCache>, CacheError> {
        match self.settings() {
            Some(settings) => settings.open_if_usable(),
            None => Ok(None),
        }
    }
}

impl LimitArgs {
    /// The sandbox's limits these arguments describe.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: self.guest_timeout,
            wall_timeout: self.guest_wall_timeout,
            memory: (self.guest_memory as usize) << 20,
            max_body: self.max_body,
        }
    }
}
