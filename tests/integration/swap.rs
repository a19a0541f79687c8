//! Live code swaps: replacing the module file of a running node.

use compute_host::{Center, Reply, node::live::Rejected, shared::sandbox::digest};
use std::{io::Write as _, time::Duration};
use testkit::{Load, ModuleDir, RunningNode, built_module, center, eventually, unique_queue};
use tokio::time::sleep;

/// How long a test waits for a node to notice a new file. Generous: debug
/// builds compile a module in about half a second.
const NOTICE: Duration = Duration::from_secs(20);

fn module_bytes(name: &str) -> Vec<u8> {
    std::fs::read(built_module(name)).unwrap()
}

/// Calls until a reply comes from module `digest`, or fails after
/// [`NOTICE`].
async fn wait_for_module(center: &Center, digest: &str) {
    let what = format!("module {digest} served");
    eventually(&what, NOTICE, || async {
        let reply = center.call("1").await.expect("calls succeed while waiting");
        (reply.origin.module.as_deref() == Some(digest)).then_some(())
    })
    .await;
}

/// Waits until the node has turned down the file version `problem`.
async fn wait_for_rejection(node: &RunningNode, problem: &Rejected) {
    let what = format!("{problem:?} rejected");
    eventually(&what, NOTICE, || async {
        (node.live.last_rejected().as_ref() == Some(problem)).then_some(())
    })
    .await;
}

/// Whether `reply` to n is n+1 from increase or 2n from double, the two
/// versions the swap tests switch between.
fn from_increase_or_double(n: i64, reply: &Reply) -> bool {
    let (increase, double) = (
        digest(&module_bytes("increase")),
        digest(&module_bytes("double")),
    );
    let module = reply.origin.module.as_deref();
    (module == Some(increase.as_str()) && reply.body == (n + 1).to_string().as_bytes())
        || (module == Some(double.as_str()) && reply.body == (2 * n).to_string().as_bytes())
}

/// With 64 calls in flight the whole time, the module is swapped 12 times
/// between increase and double: every reply is n+1 from increase or 2n
/// from double, with zero errors, timeouts or mismatches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_fail_no_request() {
    let dir = ModuleDir::with_working_copy(&built_module("increase"));
    let node = RunningNode::start_module(&unique_queue("swap-load"), &dir.working_copy()).await;
    let center = center(&node.queue, Duration::from_secs(30)).await;

    let load = Load::steady(&center, 64);

    let before = node.live.swaps();
    for name in ["double", "increase"].iter().cycle().take(12) {
        let bytes = module_bytes(name);
        let version = digest(&bytes);
        let served_before = load.so_far().answered_by(&version);
        dir.publish(&bytes);
        wait_for_module(&center, &version).await;
        // The load itself, not only the waiting call, reaches the new
        // version before the next swap.
        eventually("the load reaches the new version", NOTICE, || async {
            (load.so_far().answered_by(&version) > served_before).then_some(())
        })
        .await;
    }
    let calls = load.finish(NOTICE).await.expect("the load ends");

    assert_eq!(
        calls.failures(from_increase_or_double),
        Vec::<String>::new(),
        "errors, timeouts or mismatches during swaps"
    );
    assert_eq!(node.live.swaps() - before, 12, "the node swapped 12 times");
    let (increase, double) = (
        calls.answered_by(&digest(&module_bytes("increase"))),
        calls.answered_by(&digest(&module_bytes("double"))),
    );
    eprintln!(
        "{} calls: {increase} by increase, {double} by double, across 12 swaps",
        calls.calls.len()
    );

    center.close().await;
    node.stop().await;
}

/// No broken replacement takes the node down or stops it serving: each is
/// turned down, the previous version keeps answering, and the next good
/// version is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_replacements_keep_the_old_version_serving() {
    let dir = ModuleDir::with_working_copy(&built_module("increase"));
    let node = RunningNode::start_module(&unique_queue("swap-broken"), &dir.working_copy()).await;
    let center = center(&node.queue, Duration::from_secs(30)).await;
    let increase = digest(&module_bytes("increase"));

    let good = module_bytes("increase");
    let broken: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage bytes",
            b"\x00\x61\x73\x6dthis is not webassembly at all".to_vec(),
        ),
        ("an empty file", Vec::new()),
        ("a truncated module", good[..good.len() / 2].to_vec()),
        (
            "a core module",
            wat::parse_str(r#"(module (func (export "compute")))"#).unwrap(),
        ),
        (
            "the wrong export name",
            fixture(&traps_when_called().replace("\"compute\"", "\"calculate\"")),
        ),
        ("the wrong signature", fixture(WRONG_SIGNATURE)),
        (
            "an import we do not provide",
            fixture(&traps_when_called().replacen("(component", IMPORTS_A_DATABASE, 1)),
        ),
    ];
    for (what, bytes) in &broken {
        dir.publish(bytes);
        wait_for_rejection(&node, &Rejected::Unusable(digest(bytes))).await;
        let reply = center
            .call("41")
            .await
            .unwrap_or_else(|err| panic!("after {what}: {err}"));
        assert_eq!(reply.body, b"42", "after {what}");
        assert_eq!(
            reply.origin.module.as_deref(),
            Some(increase.as_str()),
            "after {what}"
        );
    }

    std::fs::remove_file(dir.working_copy()).unwrap();
    wait_for_rejection(&node, &Rejected::Unreadable(std::io::ErrorKind::NotFound)).await;
    assert_eq!(
        center.call("41").await.unwrap().body,
        b"42",
        "after deleting the file"
    );

    let double = module_bytes("double");
    dir.publish(&double);
    wait_for_module(&center, &digest(&double)).await;
    assert_eq!(center.call("41").await.unwrap().body, b"82");

    center.close().await;
    node.stop().await;
}

/// A plain `cp` that writes the new module slowly, in small chunks with
/// pauses (one longer than the node's quiet period, mid-copy), never gets a
/// half-written file served: calls meanwhile are all answered by the old
/// version or, at the end, by the complete new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_copy_is_never_served_half_written() {
    let dir = ModuleDir::with_working_copy(&built_module("increase"));
    let node = RunningNode::start_module(&unique_queue("swap-slow-cp"), &dir.working_copy()).await;
    let center = center(&node.queue, Duration::from_secs(30)).await;

    let load = Load::steady(&center, 8);

    let double = module_bytes("double");
    let mut file = std::fs::File::create(dir.working_copy()).unwrap();
    // 1 KB chunks: the module is about 12 KB, so the long pause after the
    // sixth chunk falls in the middle of the copy.
    assert!(
        double.len() > 10 * 1024,
        "the module is too small for this test"
    );
    for (index, chunk) in double.chunks(1024).enumerate() {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        let pause = if index == 5 { 800 } else { 40 };
        sleep(Duration::from_millis(pause)).await;
    }
    drop(file);
    wait_for_module(&center, &digest(&double)).await;
    let calls = load.finish(NOTICE).await.expect("the load ends");

    assert_eq!(
        calls.failures(from_increase_or_double),
        Vec::<String>::new()
    );
    assert!(calls.answered_by(&digest(&module_bytes("increase"))) > 0);

    center.close().await;
    node.stop().await;
}

/// A component with the right `compute` export that traps when called,
/// from the fixture the host's unit tests share.
fn traps_when_called() -> String {
    include_str!("../fixtures/compute.wat").replace("(; BODY ;)", "unreachable")
}

/// `compute: func(n: s64) -> s64`: the right name, the wrong type.
const WRONG_SIGNATURE: &str = r#"
    (component
      (core module $m (func (export "compute") (param i64) (result i64) local.get 0))
      (core instance $i (instantiate $m))
      (func (export "compute") (param "n" s64) (result s64) (canon lift (core func $i "compute"))))
"#;

/// Prefixes a component with an import of an interface nobody provides.
const IMPORTS_A_DATABASE: &str = r#"(component
      (import "acme:db/query" (instance (export "get" (func (param "key" string) (result string)))))"#;

fn fixture(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap_or_else(|err| panic!("fixture does not parse: {err}\n{wat}"))
}
