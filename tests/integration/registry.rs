//! The registry: versions deployed through a RabbitMQ stream to every node
//! that follows it, staged, pinned, promoted, rolled back, signed, and
//! kept through the stream's retention.

use crate::limits::stopped_sleeper;
use compute_host::{
    CallError, Center, CenterOptions,
    registry::{
        Retention,
        deploy::{self, Registry},
        message::{Action, Message, Role},
        signing::{DeployKey, Trust},
    },
    shared::sandbox::digest,
};
use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};
use testkit::{
    Load, ModuleDir, ServerProcess, amqp_url, built_module, center, compute_command, delete_queue,
    eventually, run_to_end, unique_queue,
};
use tokio::time::Instant;

/// The registries' retention: 2 MB in segments of 100 KB.
const RETENTION: Retention = Retention {
    max_bytes: 2_000_000,
    segment_bytes: 100_000,
};
/// A retention small enough that a test sees it drop messages soon: 400 KB
/// in segments of 20 KB, a few dozen modules.
const SMALL_RETENTION: Retention = Retention {
    max_bytes: 400_000,
    segment_bytes: 20_000,
};

/// One test's registry: a stream of its own, and queues under a prefix of
/// its own.
struct TestRegistry {
    stream: String,
    prefix: String,
}

impl TestRegistry {
    fn new(test: &str) -> Self {
        TestRegistry {
            stream: unique_queue(&format!("registry.{test}")),
            prefix: unique_queue(&format!("functions.{test}")),
        }
    }

    /// Starts `compute --registry` with `args`, and waits until it serves.
    async fn node(&self, args: &[&str]) -> ServerProcess {
        let mut command = compute_command();
        command
            .args(["--registry", &self.stream, "--queue-prefix", &self.prefix])
            .args(["--amqp-url", &amqp_url()])
            .args(args);
        ServerProcess::compute(&mut command).await
    }

    /// Runs `compute COMMAND ARGS...` against this registry.
    async fn compute(&self, command: &str, args: &[&str]) -> Output {
        self.compute_logging(command, args, "").await
    }

    /// Runs `compute COMMAND ARGS...` against this registry, logging as
    /// `RUST_LOG=log` says (nothing: the default).
    async fn compute_logging(&self, command: &str, args: &[&str], log: &str) -> Output {
        let max_bytes = RETENTION.max_bytes.to_string();
        let segment = RETENTION.segment_bytes.to_string();
        let mut run = compute_command();
        if !log.is_empty() {
            run.env("RUST_LOG", log);
        }
        run.arg(command)
            .args(args)
            .args(["--registry", &self.stream, "--amqp-url", &amqp_url()])
            .args(["--registry-max-bytes", &max_bytes])
            .args(["--registry-segment-bytes", &segment]);
        run_to_end(&mut run, Duration::from_secs(60)).await
    }

    /// Deploys `module` as function `increase`; panics unless every node
    /// reports serving it.
    async fn deploy(&self, module: &Path, extra: &[&str]) -> String {
        let path = module.to_string_lossy().into_owned();
        let mut args = vec![path.as_str(), "--function", "increase"];
        args.extend_from_slice(extra);
        let output = self.compute("deploy", &args).await;
        let text = text(&output);
        assert!(output.status.success(), "{text}");
        text
    }

    fn queue(&self) -> String {
        format!("{}.increase", self.prefix)
    }

    /// A deployer's connection to this registry, made with `retention`
    /// if the stream is new.
    async fn deployer(&self, retention: Retention) -> Registry {
        let tls = Default::default();
        Registry::connect(&amqp_url(), &tls, &self.stream, retention)
            .await
            .unwrap()
    }

    async fn remove(self) {
        delete_queue(&self.queue()).await;
        delete_queue(&self.stream).await;
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Makes a deploy key pair at `key` and `key.pub` with `compute keygen`.
async fn keygen(key: &Path) {
    let made = compute_command()
        .arg("keygen")
        .arg(key)
        .output()
        .await
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
}

/// Waits until a call started at or after `since` has ended, then
/// checks that `digest` answered every call started since.
async fn assert_answered_by_since(load: &Load, digest: &str, since: Instant) {
    eventually("a call since", Duration::from_secs(10), || async {
        let calls = load.so_far();
        calls
            .calls
            .iter()
            .any(|call| call.started >= since)
            .then_some(())
    })
    .await;
    assert_eq!(load.so_far().versions_since(since), [digest]);
}

/// Three nodes follow a registry while a center calls without pause:
/// a deploy, a staged version tried with pinned calls then promoted, a
/// rollback, a broken version (refused by `compute deploy`, and, forced
/// in, rejected by every node), and a node restarted mid-rollout. No call
/// fails, every call is answered by a deployed version, and once a deploy
/// says it is done, no call is answered by the version before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_roll_out_to_every_node_without_a_failed_call() {
    let registry = TestRegistry::new("rollout");
    let (increase, double, square) = (
        built_module("increase"),
        built_module("double"),
        built_module("square"),
    );
    let digest_of = |path: &PathBuf| digest(&std::fs::read(path).unwrap());

    // Deployed before any node runs: the nodes read it from the stream.
    let output = registry.deploy(&increase, &[]).await;
    assert!(output.contains("no node follows the registry"), "{output}");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(registry.node(&["--allow-unsigned"]).await);
    }
    let caller = center(&registry.queue(), Duration::from_secs(10)).await;
    assert_eq!(caller.call("7").await.unwrap().body, b"8");
    let calls = Load::steady(&caller, 1);

    let output = registry.deploy(&double, &[]).await;
    assert!(output.contains("to 3/3 nodes in"), "{output}");
    let after_double = Instant::now();
    // The same deploy again changes nothing, succeeds, and says who
    // serves the version.
    let output = registry.deploy(&double, &[]).await;
    assert!(
        output.contains("is current already: nothing to publish; 3/3 nodes serve it"),
        "{output}"
    );

    let output = registry.deploy(&square, &["--stage"]).await;
    assert!(output.contains("to 3/3 nodes"), "{output}");
    // Every version, its whole digest and role, as a deployer pastes it.
    let versions = registry.compute("versions", &["increase"]).await;
    let listed = text(&versions);
    assert!(versions.status.success(), "{listed}");
    for (module, role) in [
        (&double, "current"),
        (&square, "staged"),
        (&increase, "previous"),
    ] {
        let line = listed
            .lines()
            .find(|line| line.starts_with(&digest_of(module)))
            .unwrap_or_else(|| panic!("no {role} version in\n{listed}"));
        // With when it was deployed, not "-".
        assert!(line.contains(role) && line.contains(" UTC"), "{line}");
    }
    // Pinned by the start of the digest, as `compute status` shows it.
    let short = |digest: String| digest[.."sha256:".len() + 12].to_owned();
    let pinned = Center::connect_with(
        &amqp_url(),
        CenterOptions {
            queue: registry.queue(),
            version: Some(short(digest_of(&square))),
            ..CenterOptions::default()
        },
    )
    .await
    .unwrap();
    for _ in 0..10 {
        assert_eq!(pinned.call("7").await.unwrap().body, b"49");
    }
    pinned.close().await;
    assert_answered_by_since(&calls, &digest_of(&double), after_double).await;

    let output = registry
        .compute("promote", &["increase", &short(digest_of(&square))])
        .await;
    assert!(output.status.success(), "{}", text(&output));
    let after_promote = Instant::now();
    let again = registry
        .compute("promote", &["increase", &digest_of(&square)])
        .await;
    assert!(
        again.status.success() && text(&again).contains("is current already"),
        "{}",
        text(&again)
    );
    assert_answered_by_since(&calls, &digest_of(&square), after_promote).await;

    let output = registry.compute("rollback", &["increase"]).await;
    assert!(output.status.success(), "{}", text(&output));
    let after_rollback = Instant::now();
    assert_answered_by_since(&calls, &digest_of(&double), after_rollback).await;

    // A broken module never leaves the deployer...
    let scratch = ModuleDir::empty();
    let broken = scratch.join("broken.wasm");
    let mut bytes = std::fs::read(&increase).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&broken, &bytes).unwrap();
    let output = registry
        .compute(
            "deploy",
            &[&broken.to_string_lossy(), "--function", "increase"],
        )
        .await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("nothing was deployed"),
        "{}",
        text(&output)
    );
    // ...and, forced into the stream, every node rejects it.
    let forced = registry.deployer(RETENTION).await;
    let mut reports = forced.reports().await.unwrap();
    let following = forced.nodes(Duration::from_millis(500)).await.unwrap();
    assert_eq!(following.len(), 3);
    let state = forced.read(&Trust::Anyone).await.unwrap();
    let broken_digest = digest(&bytes);
    let message = deploy::publish("increase", &broken_digest, false, None);
    forced
        .append(&state, vec![(message, bytes)], None)
        .await
        .unwrap();
    let rollout = deploy::collect(
        &mut reports,
        &following,
        "increase",
        &broken_digest,
        Instant::now(),
        Duration::from_secs(30),
    )
    .await;
    forced.close().await;
    assert_eq!(rollout.reports.len(), 3, "{rollout:?}");
    assert!(
        rollout
            .reports
            .iter()
            .all(|report| report.outcome == "rejected"),
        "{rollout:?}"
    );

    // A node restarted while a version rolls out serves it when back.
    let mut restarted = nodes.remove(0);
    restarted.kill().await;
    let output = registry.deploy(&square, &[]).await;
    assert!(output.contains("to 2/2 nodes"), "{output}");
    let after_square = Instant::now();
    nodes.push(registry.node(&["--allow-unsigned"]).await);
    let status = registry.compute("status", &["--json"]).await;
    let status = text(&status);
    assert_eq!(status.lines().count(), 3, "{status}");
    assert!(
        status
            .lines()
            .all(|line| line.contains(&format!("\"current\":\"{}\"", digest_of(&square)))),
        "{status}"
    );

    assert_answered_by_since(&calls, &digest_of(&square), after_square).await;
    let calls = calls
        .finish(Duration::from_secs(10))
        .await
        .expect("the calls end");
    caller.close().await;
    let deployed = [digest_of(&increase), digest_of(&double), digest_of(&square)];
    let failures = calls.failures(|_, reply| {
        deployed
            .iter()
            .any(|digest| reply.origin.module.as_deref() == Some(digest.as_str()))
    });
    assert_eq!(failures, Vec::<String>::new(), "failed or undeployed");
    assert!(calls.calls.len() > 50, "{} calls", calls.calls.len());
    drop(nodes);
    registry.remove().await;
}

/// Nodes started before any deploy created the registry say that they
/// wait for it, and answer status requests meanwhile: the first deploy
/// counts them, waits for them and reports 2/2, where it used to say that
/// no node follows the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_before_the_registry_count_in_the_first_deploy() {
    let registry = TestRegistry::new("before");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let node = registry.node(&["--allow-unsigned"]).await;
        assert!(
            node.log()
                .contains("waiting for the registry: no stream of that name exists yet"),
            "{}",
            node.log()
        );
        assert!(!node.log().contains("NOT_FOUND"), "{}", node.log());
        nodes.push(node);
    }
    let output = registry.deploy(&built_module("increase"), &[]).await;
    assert!(output.contains("to 2/2 nodes in"), "{output}");
    let caller = center(&registry.queue(), Duration::from_secs(10)).await;
    assert_eq!(caller.call("7").await.unwrap().body, b"8");
    caller.close().await;
    drop(nodes);
    registry.remove().await;
}

/// `compute remove` stops every node serving the function, and the last
/// one to stop deletes its queue: a call made after fails at once with
/// `no-route`, as for a function that never existed, instead of waiting
/// for its timeout in a queue nobody consumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_function_fails_its_calls_at_once() {
    let registry = TestRegistry::new("remove");
    registry.deploy(&built_module("increase"), &[]).await;
    let nodes = [
        registry.node(&["--allow-unsigned"]).await,
        registry.node(&["--allow-unsigned"]).await,
    ];
    let caller = center(&registry.queue(), Duration::from_secs(30)).await;
    assert_eq!(caller.call("7").await.unwrap().body, b"8");

    let output = registry.compute("remove", &["increase"]).await;
    assert!(output.status.success(), "{}", text(&output));
    eventually("the queue is deleted", Duration::from_secs(30), || async {
        caller
            .consumer_count()
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let started = Instant::now();
    let call = caller.call("7").await;
    let took = started.elapsed();
    assert!(matches!(call, Err(CallError::NoRoute(_))), "{call:?}");
    println!("a call to the removed function failed in {took:?}");
    caller.close().await;
    drop(nodes);
    registry.remove().await;
}

/// A node that trusts a key serves only what that key signed: an
/// unsigned deploy and one signed by another key are rejected by it and
/// reported, and the signed version keeps serving. A node given
/// `--registry` and no key refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_versions_signed_by_a_trusted_key_are_served() {
    let registry = TestRegistry::new("signed");
    let keys = ModuleDir::empty();
    let (ours, theirs) = (keys.join("deployer"), keys.join("stranger"));
    keygen(&ours).await;
    keygen(&theirs).await;
    let ours_arg = ours.to_string_lossy().into_owned();
    let trusted = format!("{ours_arg}.pub");

    let refused = compute_command()
        .args(["--registry", &registry.stream, "--amqp-url", &amqp_url()])
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused).contains("--trusted-key"),
        "{}",
        text(&refused)
    );

    registry
        .deploy(&built_module("increase"), &["--sign-key", &ours_arg])
        .await;
    let node = registry.node(&["--trusted-key", &trusted]).await;
    let caller = center(&registry.queue(), Duration::from_secs(10)).await;
    assert_eq!(caller.call("7").await.unwrap().body, b"8");

    let double = built_module("double");
    let double = double.to_string_lossy().into_owned();
    let theirs = theirs.to_string_lossy().into_owned();
    for (what, extra) in [
        ("unsigned", vec![]),
        ("signed by a stranger", vec!["--sign-key", theirs.as_str()]),
    ] {
        let mut args = vec![double.as_str(), "--function", "increase"];
        args.extend(extra);
        let output = registry.compute("deploy", &args).await;
        assert_eq!(output.status.code(), Some(1), "{what}: {}", text(&output));
        assert!(
            text(&output).contains("rejected: it is"),
            "{what}: {}",
            text(&output)
        );
        assert_eq!(caller.call("7").await.unwrap().body, b"8", "{what}");
    }
    registry
        .deploy(&built_module("double"), &["--sign-key", &ours_arg])
        .await;
    assert_eq!(caller.call("7").await.unwrap().body, b"14");

    caller.close().await;
    drop(node);
    registry.remove().await;
}

/// However many versions of another function are deployed after it, the
/// stream's retention never drops a version in use: a node started after
/// the stream dropped its first messages still serves both functions'
/// current versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_drops_a_version_in_use() {
    let registry = TestRegistry::new("retention");
    let deployer = registry.deployer(SMALL_RETENTION).await;
    let increase = std::fs::read(built_module("increase")).unwrap();
    let state = deployer.read(&Trust::Anyone).await.unwrap();
    let message = deploy::publish("increase", &digest(&increase), false, None);
    deployer
        .append(&state, vec![(message, increase.clone())], None)
        .await
        .unwrap();

    // Versions of `busy`, each the `double` module with a different
    // custom section: twice the stream's retention in all.
    let double = std::fs::read(built_module("double")).unwrap();
    let versions = (2 * SMALL_RETENTION.max_bytes as usize) / double.len();
    let mut last = String::new();
    for version in 0..versions {
        let bytes = with_custom_section(&double, &format!("version {version}"));
        last = digest(&bytes);
        let state = deployer.read(&Trust::Anyone).await.unwrap();
        let message = deploy::publish("busy", &last, false, None);
        deployer
            .append(&state, vec![(message, bytes)], None)
            .await
            .unwrap();
    }
    let first_offset = first_offset(&registry.stream).await;
    assert!(first_offset > 0, "the stream dropped nothing");
    deployer.close().await;

    let node = registry.node(&["--allow-unsigned"]).await;
    let increase_caller = center(&registry.queue(), Duration::from_secs(10)).await;
    assert_eq!(increase_caller.call("7").await.unwrap().body, b"8");
    let busy_caller = center(
        &format!("{}.busy", registry.prefix),
        Duration::from_secs(10),
    )
    .await;
    let reply = busy_caller.call("7").await.unwrap();
    assert_eq!(reply.body, b"14");
    assert_eq!(reply.origin.module.as_deref(), Some(last.as_str()));
    println!("{versions} versions deployed; the stream now starts at offset {first_offset}");

    increase_caller.close().await;
    busy_caller.close().await;
    drop(node);
    delete_queue(&format!("{}.busy", registry.prefix)).await;
    registry.remove().await;
}

/// A version deployed with its limits file (`NAME.toml` beside the
/// module) runs under those limits on every node, a node started later
/// included; deploying the same module with another limits file changes
/// only its limits; a limits file no node could use is refused by
/// `compute deploy`, and nothing is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_limits_file_applies_on_every_node() {
    let registry = TestRegistry::new("limits");
    let dir = ModuleDir::empty();
    let module = dir.join("nosy.wasm");
    std::fs::copy(testkit::nosy_module(), &module).unwrap();
    dir.limit("nosy", "wall-timeout = 0.5");
    registry.deploy(&module, &[]).await;
    let first = registry.node(&["--allow-unsigned"]).await;
    let caller = center(&registry.queue(), Duration::from_secs(30)).await;
    let sleeper_stopped_within = |limit: &'static str| {
        let caller = &caller;
        async move {
            let message = stopped_sleeper(caller).await;
            assert!(message.contains(&format!("within {limit}")), "{message}");
        }
    };

    sleeper_stopped_within("500ms").await;

    dir.limit("nosy", "wall-timeout = 0.25");
    let output = registry.deploy(&module, &[]).await;
    assert!(output.contains("to 1/1 nodes in"), "{output}");
    sleeper_stopped_within("250ms").await;

    dir.limit("nosy", "wall-timout = 1");
    let path = module.to_string_lossy().into_owned();
    let output = registry
        .compute("deploy", &[&path, "--function", "increase"])
        .await;
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("unknown field `wall-timout`"), "{said}");
    assert!(said.contains("nothing was deployed"), "{said}");

    // Only the node started now serves: it read the limits from the stream.
    drop(first);
    let _late = registry.node(&["--allow-unsigned"]).await;
    sleeper_stopped_within("250ms").await;

    caller.close().await;
    registry.remove().await;
}

/// `compute deploy` checks a module through the compile cache the nodes
/// on its host use: deployed again, it is loaded from there, not compiled
/// again (a Python module took 9.7 s at every deploy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_compiles_through_the_compile_cache() {
    let registry = TestRegistry::new("deploy-cache");
    let cache = ModuleDir::empty();
    let module = built_module("square").to_string_lossy().into_owned();
    let cache_dir = cache.path.to_string_lossy().into_owned();
    let args = [module.as_str(), "--compile-cache", cache_dir.as_str()];
    let mut said = Vec::new();
    for _ in 0..2 {
        let output = registry
            .compute_logging("deploy", &args, "compute_host=debug")
            .await;
        assert!(output.status.success(), "{}", text(&output));
        said.push(text(&output));
    }
    assert!(said[0].contains("compiled in"), "{}", said[0]);
    assert!(
        said[1].contains("loaded from the compile cache in"),
        "{}",
        said[1]
    );
    registry.remove().await;
}

/// `bytes` (a component) with a custom section named `compute-test`
/// holding `text` appended: the same function, another digest.
fn with_custom_section(bytes: &[u8], text: &str) -> Vec<u8> {
    let name = b"compute-test";
    let mut payload = leb128(name.len());
    payload.extend_from_slice(name);
    payload.extend_from_slice(text.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    out.extend(leb128(payload.len()));
    out.extend(payload);
    out
}

fn leb128(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The offset of the first message the stream still holds.
async fn first_offset(stream: &str) -> i64 {
    use futures_util::StreamExt as _;
    use lapin::{options::BasicQosOptions, types::AMQPValue};
    let connection = compute_host::shared::amqp::connect(&amqp_url())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = compute_host::registry::consume_from_first(&channel, stream)
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the stream delivers")
        .unwrap()
        .unwrap();
    let first = match delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-stream-offset").cloned())
    {
        Some(AMQPValue::LongLongInt(offset)) => offset,
        other => panic!("no stream offset: {other:?}"),
    };
    let _ = connection.close(200, "OK".into()).await;
    first
}

/// No copy of a signed message moves a node. With the deployer's key
/// trusted, a registry deploys `increase`, then `double` as `increase`:
/// - the first version's `publish`, copied to the end of the stream, is
///   refused as replayed, and the node keeps serving `double`;
/// - the same message copied into another registry signed by the same key
///   is refused as signed for another registry;
/// - a node started after the copies replays the stream from its start
///   and ends serving what the first node serves, saying in one line
///   that it skipped a message;
/// - a deployer that lost a race for a number (it read the registry
///   before another deployed) is refused by the node, and its roll-out
///   reports the refusal; nothing of it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_replayed_or_copied_message_moves_a_node() {
    let registry = TestRegistry::new("replay");
    let staging = TestRegistry::new("replay-staging");
    let keys = ModuleDir::empty();
    let key = keys.join("deployer");
    keygen(&key).await;
    let key_arg = key.to_string_lossy().into_owned();
    let trusted = format!("{key_arg}.pub");
    let signed = ["--sign-key", key_arg.as_str()];

    let increase = built_module("increase");
    registry.deploy(&increase, &signed).await;
    registry.deploy(&built_module("double"), &signed).await;
    staging.deploy(&built_module("triple"), &signed).await;
    let trusting = ["--trusted-key", trusted.as_str()];
    let node = registry.node(&trusting).await;
    let staging_node = staging.node(&trusting).await;
    let caller = center(&registry.queue(), Duration::from_secs(10)).await;
    let staging_caller = center(&staging.queue(), Duration::from_secs(10)).await;
    assert_eq!(caller.call("7").await.unwrap().body, b"14");

    let first = digest(&std::fs::read(&increase).unwrap());
    let old_publish = stream_messages(&registry.stream)
        .await
        .into_iter()
        .find(|(properties, _)| header(properties, "x-module-digest") == Some(first.clone()))
        .expect("the stream holds the first version's publish");
    append_raw(&registry.stream, std::slice::from_ref(&old_publish)).await;
    let replayed = "compute_registry_messages_refused_total{cause=\"replayed\"} 1";
    testkit::wait_for_metric(node.metrics_addr(), replayed).await;
    assert_eq!(caller.call("7").await.unwrap().body, b"14");

    append_raw(&staging.stream, std::slice::from_ref(&old_publish)).await;
    let elsewhere = "compute_registry_messages_refused_total{cause=\"other-registry\"} 1";
    testkit::wait_for_metric(staging_node.metrics_addr(), elsewhere).await;
    assert_eq!(staging_caller.call("7").await.unwrap().body, b"21");

    let late = registry.node(&["--trusted-key", &trusted]).await;
    assert!(
        late.log().contains("skipped registry messages") && late.log().contains("replayed 1"),
        "{}",
        late.log()
    );
    drop(node);
    assert_eq!(caller.call("7").await.unwrap().body, b"14", "the late node");

    // A deployer that read the registry before another one deployed
    // takes the number the other one took.
    let stale = registry.deployer(RETENTION).await;
    let key = DeployKey::read(&key).unwrap();
    let stale_state = stale.read(&Trust::Keys(vec![key.public()])).await.unwrap();
    registry.deploy(&built_module("triple"), &signed).await;
    assert_eq!(caller.call("7").await.unwrap().body, b"21");
    let square = std::fs::read(built_module("square")).unwrap();
    let square_digest = digest(&square);
    let nodes = stale.nodes(Duration::from_millis(500)).await.unwrap();
    assert_eq!(nodes.len(), 1);
    let mut reports = stale.reports().await.unwrap();
    let since = Instant::now();
    stale
        .append(
            &stale_state,
            vec![(
                deploy::publish("increase", &square_digest, false, None),
                square,
            )],
            Some(&key),
        )
        .await
        .unwrap();
    let rollout = deploy::collect(
        &mut reports,
        &nodes,
        "increase",
        &square_digest,
        since,
        Duration::from_secs(10),
    )
    .await;
    assert!(!rollout.succeeded(), "{rollout:?}");
    let reason = rollout.reports[0].reason.clone().unwrap_or_default();
    assert!(reason.starts_with("replayed: sequence"), "{reason}");
    assert_eq!(caller.call("7").await.unwrap().body, b"21");

    // A writer without a key numbers a message with the last number there
    // is: deployers read the registry through the nodes' key, so they go
    // on numbering from what the nodes applied.
    let forged = Message {
        action: Action::Publish,
        registry: registry.stream.clone(),
        sequence: u64::MAX,
        function: "increase".into(),
        digest: square_digest.clone(),
        role: Some(Role::Current),
        limits: None,
        signature: None,
        deployed: None,
    };
    let square = std::fs::read(built_module("square")).unwrap();
    append_raw(&registry.stream, &[(forged.properties("forged"), square)]).await;
    registry.deploy(&built_module("double"), &signed).await;
    assert_eq!(caller.call("7").await.unwrap().body, b"14");

    stale.close().await;
    caller.close().await;
    staging_caller.close().await;
    drop((late, staging_node));
    registry.remove().await;
    staging.remove().await;
}

/// A writer without a key floods the stream with junk: the node keeps
/// serving, logs a few lines rather than one per message, counts them all
/// in its metrics, and a node started after the flood says in one line
/// how many it skipped while reading the stream's history, and counts
/// them all too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_in_the_registry_is_counted_not_logged_line_by_line() {
    const JUNK: usize = 2000;
    let registry = TestRegistry::new("junk");
    registry.deploy(&built_module("increase"), &[]).await;
    let node = registry.node(&["--allow-unsigned"]).await;
    let junk = (lapin::BasicProperties::default(), b"junk".to_vec());
    append_raw(&registry.stream, &vec![junk; JUNK]).await;
    let counted = format!("compute_registry_messages_refused_total{{cause=\"unreadable\"}} {JUNK}");
    testkit::wait_for_metric(node.metrics_addr(), &counted).await;
    let warnings = node.log().matches("ignoring a registry message").count();
    assert!((1..=3).contains(&warnings), "{warnings}:\n{}", node.log());

    // The late node takes the stream's history as read once the stream
    // pauses; on a loaded machine a pause can come before the end, and
    // the rest is then read live: counted all the same, and logged as
    // few lines.
    let late = registry.node(&["--allow-unsigned"]).await;
    testkit::wait_for_metric(late.metrics_addr(), &counted).await;
    let log = late.log();
    let history = log.matches("skipped registry messages").count();
    let live = log.matches("ignoring a registry message").count();
    assert!(history <= 1 && (1..=3).contains(&(history + live)), "{log}");
    let caller = center(&registry.queue(), Duration::from_secs(10)).await;
    assert_eq!(caller.call("7").await.unwrap().body, b"8");

    caller.close().await;
    drop((node, late));
    registry.remove().await;
}

/// Every metric that the alerting rules and the Grafana dashboard in
/// `deploy/` read is one a node serves: a node following a registry,
/// once it has answered a call and refused a registry message (so that
/// every metric has a sample to show), serves them all. A renamed metric
/// cannot silently blind an alert or a panel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_and_the_dashboard_read_metrics_a_node_serves() {
    let registry = TestRegistry::new("deploy-files");
    registry.deploy(&built_module("increase"), &[]).await;
    let node = registry.node(&["--allow-unsigned"]).await;
    let junk = (lapin::BasicProperties::default(), b"junk".to_vec());
    append_raw(&registry.stream, &[junk]).await;
    let address = node.metrics_addr();
    testkit::wait_for_metric(
        address,
        "compute_registry_messages_refused_total{cause=\"unreadable\"} 1",
    )
    .await;
    let caller = center(&registry.queue(), Duration::from_secs(10)).await;
    assert_eq!(caller.call("7").await.unwrap().body, b"8");
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut read = Vec::new();
    for file in ["prometheus/rules.yml", "grafana/compute.json"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        read.extend(
            // Recording rules' names (`function:compute_…:rate5m`) are
            // one word, and not a metric a node serves.
            text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|word| word.starts_with("compute_") && !word.contains(':'))
                .map(|word| (file, word.to_owned())),
        );
    }
    assert!(read.len() >= 10, "{read:?}");
    // The node counts a request and its time once it has acked it, which
    // may come after the caller has its reply: its metrics are read until
    // every family the files read has a sample, or 10 s have passed.
    let unserved = |served: &str| -> Vec<String> {
        let families: Vec<&str> = served
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .collect();
        read.iter()
            .filter(|(_, metric)| {
                let family = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| metric.strip_suffix(suffix))
                    .unwrap_or(metric);
                !families.contains(&family)
            })
            .map(|(file, metric)| format!("{file} reads {metric}"))
            .collect()
    };
    let limit = Duration::from_secs(10);
    let mut served = String::new();
    let all = tokio::time::timeout(limit, async {
        loop {
            served = testkit::scrape(address).await;
            if unserved(&served).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "metrics no node serves: {:?}; it serves\n{served}",
        unserved(&served)
    );
    caller.close().await;
    drop(node);
    registry.remove().await;
}

/// A registry message as it sits in the stream.
type RawMessage = (lapin::BasicProperties, Vec<u8>);

/// Every message of `stream`, from its first: a marker is written, and
/// the stream read up to it.
async fn stream_messages(stream: &str) -> Vec<RawMessage> {
    use futures_util::StreamExt as _;
    let marker = uuid::Uuid::new_v4().to_string();
    let sync = Message::sync().properties(&marker);
    append_raw(stream, &[(sync, Vec::new())]).await;
    let connection = compute_host::shared::amqp::connect(&amqp_url())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(64, lapin::options::BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = compute_host::registry::consume_from_first(&channel, stream)
        .await
        .unwrap();
    let mut messages = Vec::new();
    let read = async {
        while let Some(Ok(delivery)) = consumer.next().await {
            let _ = delivery
                .acker
                .ack(lapin::options::BasicAckOptions::default())
                .await;
            if delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str())
                == Some(&marker)
            {
                break;
            }
            messages.push((delivery.properties, delivery.data));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the stream is read to its marker");
    let _ = connection.close(200, "OK".into()).await;
    messages
}

/// Writes `messages` to the end of `stream` as they are: what anyone
/// allowed to write there could do, with no key.
async fn append_raw(stream: &str, messages: &[RawMessage]) {
    let connection = compute_host::shared::amqp::connect(&amqp_url())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (properties, body) in messages {
        channel
            .basic_publish(
                "".into(),
                stream.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                properties.clone(),
            )
            .await
            .unwrap();
    }
    assert!(
        channel.wait_for_confirms().await.unwrap().is_empty(),
        "the broker took every message"
    );
    let _ = connection.close(200, "OK".into()).await;
}

/// The text of header `name` of a message, if it has one.
fn header(properties: &lapin::BasicProperties, name: &str) -> Option<String> {
    compute_host::shared::wire::header_text(properties, name)
}

/// `compute status` only reads: a registry named wrong is an error that
/// says so, and neither the stream nor its exchanges appear on the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_registry_that_does_not_exist_creates_nothing() {
    let registry = TestRegistry::new("typo");
    let output = registry.compute("status", &[]).await;
    let said = text(&output);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("there is no registry"), "{said}");

    let connection = compute_host::shared::amqp::connect(&amqp_url())
        .await
        .unwrap();
    let passive_queue = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let stream = connection.create_channel().await.unwrap();
    let looked = stream
        .queue_declare(
            registry.stream.as_str().into(),
            passive_queue,
            Default::default(),
        )
        .await;
    assert!(looked.is_err(), "the stream was created");
    let passive_exchange = lapin::options::ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let exchanges = connection.create_channel().await.unwrap();
    let events = compute_host::registry::events_exchange(&registry.stream);
    let looked = exchanges
        .exchange_declare(
            events.as_str().into(),
            lapin::ExchangeKind::Fanout,
            passive_exchange,
            Default::default(),
        )
        .await;
    assert!(looked.is_err(), "the events exchange was created");
    let _ = connection.close(200, "OK".into()).await;
}
