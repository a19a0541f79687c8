//! `compute deploy | promote | rollback | remove | status | keygen`: the
//! registry's commands.

use super::{broker::BrokerArgs, sandbox::CacheArgs};
use crate::registry::{
    self, Retention,
    candidate::Candidate,
    deploy::{self, Registry, Rollout},
    message::Role,
    report::NodeStatus,
    signing::{self, DeployKey, Trust},
};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::{path::PathBuf, process::ExitCode, time::Duration};
use tokio::time::Instant;

/// A registry command.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Publish a new version of a function to every node following the
    /// registry, with its limits file (`NAME.toml` beside the module) if
    /// it has one, and wait for each to report.
    Deploy {
        /// The module (a WebAssembly component).
        path: PathBuf,
        /// The function's name; the file stem by default.
        #[arg(long, value_name = "NAME")]
        function: Option<String>,
        /// Only for requests that pin it (`center --pin`) until
        /// `compute promote`.
        #[arg(long)]
        stage: bool,
        #[command(flatten)]
        rollout: RolloutArgs,
        /// Where the module's check keeps its compiled code: the nodes'
        /// cache on this host, so a deploy compiles nothing they compiled,
        /// and they compile nothing it did.
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Make an earlier version of a function current on every node.
    Promote {
        function: String,
        /// The version: its digest, or the start of it (as `compute
        /// status` shows it) if only one version starts so.
        digest: String,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Make a function's previous current version current again.
    Rollback {
        function: String,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Stop serving a function on every node.
    Remove {
        function: String,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// A function's versions in the registry: whole digests, roles,
    /// sizes, limits, and when each was deployed.
    Versions {
        /// The function's name.
        function: String,
        #[command(flatten)]
        registry: RegistryArgs,
        /// A public key the nodes trust (repeatable): the registry is read
        /// as they read it. Default: every message.
        #[arg(long, value_name = "FILE")]
        trusted_key: Vec<PathBuf>,
        /// One JSON object per version.
        #[arg(long)]
        json: bool,
    },
    /// What every node following the registry serves.
    Status {
        #[command(flatten)]
        registry: RegistryArgs,
        /// One JSON object per node.
        #[arg(long)]
        json: bool,
    },
    /// Make a key pair for signing deploys: the secret key in FILE, the
    /// public key (for `--trusted-key`) in FILE.pub.
    Keygen { file: PathBuf },
}

/// Where the registry is.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// The registry stream.
    #[arg(long, value_name = "NAME", default_value = registry::DEFAULT_STREAM)]
    pub registry: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The stream's retention, in bytes, when this command creates it.
    #[arg(long, value_name = "BYTES", default_value_t = Retention::default().max_bytes)]
    pub registry_max_bytes: u64,
    /// The size of one segment of the stream, in bytes, when this
    /// command creates it.
    #[arg(long, value_name = "BYTES", default_value_t = Retention::default().segment_bytes)]
    pub registry_segment_bytes: u64,
    /// The longest wait for nodes to answer a status request, in seconds:
    /// once one has answered, the wait ends when answers stop coming.
    #[arg(long, value_name = "SECS", default_value = "0.5", value_parser = super::parse_seconds)]
    pub discover: Duration,
}

/// How a change is rolled out.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The secret key to sign with (see `compute keygen`).
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// A public key the nodes trust (repeatable): the registry is read as
    /// they read it, so the next sequence numbers come from their
    /// messages only, never from one a writer without a key put there.
    /// Default: the public key of --sign-key; without it, every message.
    #[arg(long, value_name = "FILE")]
    pub trusted_key: Vec<PathBuf>,
    /// How long to wait for every node's report, in seconds.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = super::parse_seconds)]
    pub wait: Duration,
    /// One JSON object per report, then one for the summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs a registry command. Exit code 1 when a node rejected the change
/// or did not report.
pub async fn run(command: RegistryCommand) -> anyhow::Result<ExitCode> {
    match command {
        RegistryCommand::Keygen { file } => {
            let public = signing::keygen(&file)?;
            println!(
                "secret key: {} (keep it private); public key: {} (give it to nodes: --trusted-key)",
                file.display(),
                public.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        RegistryCommand::Status { registry, json } => status(&registry, json).await,
        RegistryCommand::Versions {
            function,
            registry,
            trusted_key,
            json,
        } => versions(&registry, &function, &trusted_key, json).await,
        RegistryCommand::Deploy {
            path,
            function,
            stage,
            rollout,
            cache,
        } => {
            let candidate = Candidate::check(&path, function, cache.open()?)?;
            let message = candidate.publish(stage);
            let role = message.role.unwrap_or(Role::Current);
            let Candidate {
                function,
                bytes,
                digest,
                ..
            } = candidate;
            roll_out(&rollout, &function, |_| {
                Ok((digest, role, vec![(message, bytes)]))
            })
            .await
        }
        RegistryCommand::Promote {
            function,
            digest,
            rollout,
        } => {
            roll_out(&rollout, &function, |state| {
                let digest = deploy::held_version(state, &function, &digest)?;
                let message = deploy::promote(&function, &digest);
                Ok((digest, Role::Current, vec![(message, Vec::new())]))
            })
            .await
        }
        RegistryCommand::Rollback { function, rollout } => {
            roll_out(&rollout, &function, |state| {
                let target = deploy::rollback_target(state, &function)?;
                let message = deploy::promote(&function, &target);
                Ok((target, Role::Current, vec![(message, Vec::new())]))
            })
            .await
        }
        RegistryCommand::Remove { function, rollout } => {
            let (key, trust) = (sign_key(&rollout)?, trust(&rollout)?);
            let registry = rollout.registry.connect().await?;
            let removed = registry.remove(&function, &trust, key.as_ref()).await;
            registry.close().await;
            removed?;
            println!("removed {function}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl RegistryArgs {
    /// Connects to the registry, creating its stream with the retention
    /// given if there is none.
    async fn connect(&self) -> Result<Registry, deploy::DeployError> {
        let retention = Retention {
            max_bytes: self.registry_max_bytes,
            segment_bytes: self.registry_segment_bytes,
        };
        let (urls, tls) = (self.broker.urls(), self.broker.tls());
        Registry::connect(&urls, &tls, &self.registry, retention).await
    }
}

fn sign_key(args: &RolloutArgs) -> anyhow::Result<Option<DeployKey>> {
    args.sign_key
        .as_deref()
        .map(DeployKey::read)
        .transpose()
        .context("cannot read the signing key")
}

/// Whose messages count when the registry is read: the keys given, else
/// the signing key's own, else anyone's.
fn trust(args: &RolloutArgs) -> anyhow::Result<Trust> {
    if let Some(trust) = trusted_keys(&args.trusted_key)? {
        return Ok(trust);
    }
    Ok(match sign_key(args)? {
        Some(key) => Trust::Keys(vec![key.public()]),
        None => Trust::Anyone,
    })
}

/// The keys in `files`, if any are given.
fn trusted_keys(files: &[PathBuf]) -> anyhow::Result<Option<Trust>> {
    if files.is_empty() {
        return Ok(None);
    }
    Trust::keys(files)
        .map(Some)
        .context("cannot read a trusted key")
}

/// What a rollout appends, planned from what the registry holds: the
/// version the nodes are to report on, the role it is to have, and the
/// messages.
type Plan = (String, Role, Vec<(registry::message::Message, Vec<u8>)>);

/// Finds the nodes, reads the registry once, appends what `plan` makes of
/// it, and waits for every node to report on `function` at the planned
/// version. A plan the registry holds already (deploying the current
/// version again, say) appends nothing: the nodes' status says who
/// serves it, so applying the same change twice succeeds.
async fn roll_out(
    args: &RolloutArgs,
    function: &str,
    plan: impl FnOnce(&registry::state::State) -> Result<Plan, deploy::DeployError>,
) -> anyhow::Result<ExitCode> {
    let key = sign_key(args)?;
    let registry = args.registry.connect().await?;
    let mut reports = registry.reports().await?;
    // One after the other: while the stream is read (tens of MB with
    // Python modules) the answers would queue behind it on the
    // connection, and a late one ends up uncounted.
    let nodes = registry.nodes(args.registry.discover).await?;
    let state = registry.read(&trust(args)?).await?;
    let (digest, role, messages) = plan(&state)?;
    let digest = digest.as_str();
    let rollout = if deploy::holds_already(&state, function, digest, role, &messages) {
        deploy::unchanged(&nodes, function, digest, role)
    } else {
        registry.append(&state, messages, key.as_ref()).await?;
        let appended = Instant::now();
        deploy::collect(&mut reports, &nodes, function, digest, appended, args.wait).await
    };
    registry.close().await;
    print_rollout(&rollout, &nodes, digest, args.json);
    Ok(if rollout.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_rollout(rollout: &Rollout, nodes: &[NodeStatus], digest: &str, json: bool) {
    let serving = rollout
        .reports
        .iter()
        .filter(|report| report.outcome == "serving")
        .count();
    if json {
        print_json_lines(&rollout.reports);
        for node in &rollout.silent {
            println!(
                "{}",
                serde_json::json!({"node": node.node, "host": node.host, "outcome": "silent"})
            );
        }
        println!(
            "{}",
            serde_json::json!({
                "digest": digest,
                "serving": serving,
                "nodes": nodes.len(),
                "ms": rollout.took.as_millis() as u64,
                "unchanged": rollout.unchanged.is_some(),
            })
        );
        return;
    }
    for report in &rollout.reports {
        match &report.reason {
            None => println!(
                "{} ({})  {} {}",
                report.node, report.host, report.outcome, report.digest
            ),
            Some(reason) => println!("{} ({})  rejected: {reason}", report.node, report.host),
        }
    }
    for node in &rollout.silent {
        println!("{} ({})  did not report", node.node, node.host);
    }
    if let Some(role) = rollout.unchanged {
        println!(
            "{digest} is {} already: nothing to publish; {serving}/{} nodes serve it",
            role.as_str(),
            nodes.len()
        );
    } else if nodes.is_empty() {
        println!("published {digest}; no node follows the registry");
    } else {
        println!(
            "deployed {digest} to {serving}/{} nodes in {} ms",
            nodes.len(),
            rollout.took.as_millis()
        );
    }
}

async fn versions(
    args: &RegistryArgs,
    function: &str,
    keys: &[PathBuf],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let trust = trusted_keys(keys)?.unwrap_or(Trust::Anyone);
    let (urls, tls) = (args.broker.urls(), args.broker.tls());
    let registry = Registry::open_existing(&urls, &tls, &args.registry).await?;
    let state = registry.read(&trust).await;
    registry.close().await;
    let Some(versions) = registry::versions::of(&state?, function) else {
        anyhow::bail!("the registry holds no function {function}");
    };
    if json {
        print_json_lines(&versions);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<71}  {:<8}  {:>9}  {:<23}  LIMITS",
        "VERSION", "ROLE", "BYTES", "DEPLOYED"
    );
    for version in &versions {
        let limits = version
            .limits
            .as_deref()
            .map(|text| text.lines().collect::<Vec<_>>().join("; "))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<71}  {:<8}  {:>9}  {:<23}  {limits}",
            version.digest,
            version.role,
            version.bytes,
            version
                .deployed
                .map_or_else(|| "-".to_owned(), registry::versions::utc),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(args: &RegistryArgs, json: bool) -> anyhow::Result<ExitCode> {
    // Only reads: a registry named wrong is an error, not a new stream.
    let (urls, tls) = (args.broker.urls(), args.broker.tls());
    let registry = Registry::open_existing(&urls, &tls, &args.registry).await?;
    let nodes = registry.nodes(args.discover).await?;
    registry.close().await;
    if json {
        print_json_lines(&nodes);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<14} {:>8}  {:<12} {:<20} {:<20} {:>9} {:>9}",
        "NODE", "HOST", "UPTIME", "FUNCTION", "CURRENT", "STAGED", "IN-FLIGHT", "SERVED"
    );
    let short = |digest: &str| digest.chars().take(19).collect::<String>();
    for node in &nodes {
        for function in &node.functions {
            println!(
                "{:<22} {:<14} {:>7}s  {:<12} {:<20} {:<20} {:>9} {:>9}",
                node.node,
                node.host,
                node.uptime_s,
                function.name,
                short(&function.current),
                function
                    .staged
                    .as_deref()
                    .map(short)
                    .unwrap_or_else(|| "-".into()),
                function.in_flight,
                function.served,
            );
        }
        if node.functions.is_empty() {
            println!(
                "{:<22} {:<14} {:>7}s  (no functions)",
                node.node, node.host, node.uptime_s
            );
        }
    }
    println!("{} node(s)", nodes.len());
    Ok(ExitCode::SUCCESS)
}

/// Prints each of `items` as one line of JSON.
fn print_json_lines(items: &[impl serde::Serialize]) {
    for item in items {
        println!("{}", serde_json::to_string(item).unwrap_or_default());
    }
}
