//! `compute --modules DIR`: several functions in one node, each on its own
//! queue, added, replaced and removed while the node runs.

use compute_host::Center;
use std::time::Duration;
use testkit::{
    DirNode, Load, ModuleDir, QueueGuard, ServerProcess, amqp_url, built_module, center,
    compute_command, eventually,
};
use uuid::Uuid;

/// While a center calls `increase` without pause, a function is added,
/// another replaced and another removed (its queue deleted): each change
/// shows within seconds, and the calls to `increase` all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_come_and_go_while_another_is_called() {
    let dir = ModuleDir::empty();
    for name in ["increase", "double"] {
        std::fs::copy(built_module(name), dir.join(format!("{name}.wasm"))).unwrap();
    }
    let node = DirNode::start(&dir.path, ["increase", "double", "square"]).await;
    let increase = center(&node.queue("increase"), Duration::from_secs(30)).await;
    let double = center(&node.queue("double"), Duration::from_secs(30)).await;
    let square = center(&node.queue("square"), Duration::from_secs(30)).await;
    answers(&increase, "1", "2").await;
    answers(&double, "7", "14").await;

    // Calls to increase go on through every change below.
    let load = Load::steady(&increase, 1);

    // Added: a new file is a new function on its own queue.
    publish(&dir, "square", "square");
    answers(&square, "7", "49").await;
    // Replaced: double now triples.
    publish(&dir, "double", "triple");
    answers(&double, "7", "21").await;
    // Removed: its consumer goes away cleanly, and its queue with it.
    std::fs::remove_file(dir.join("square.wasm")).unwrap();
    queue_goes(&square).await;

    let tally = load
        .finish(Duration::from_secs(30))
        .await
        .expect("the calls to increase end")
        .increase_tally();
    println!("increase during the changes: {tally:?}");
    assert!(tally.replies > 0);
    tally.assert_all_answered();

    for center in [increase, double, square] {
        center.close().await;
    }
    node.stop().await;
}

/// A file that is not a usable module is not served (and its queue not
/// declared); once a usable module replaces it, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_module_is_served_once_it_is_mended() {
    let dir = ModuleDir::empty();
    std::fs::write(dir.join("mended.wasm"), b"not a module").unwrap();
    // The node has tried every file in the directory once it has started.
    let node = DirNode::start(&dir.path, ["mended"]).await;
    assert_eq!(
        node.serving,
        Vec::<String>::new(),
        "nothing serves the broken file"
    );
    let mended = center(&node.queue("mended"), Duration::from_secs(30)).await;
    assert_eq!(
        mended.consumer_count().await.unwrap(),
        None,
        "its queue is not declared"
    );

    publish(&dir, "mended", "double");
    answers(&mended, "4", "8").await;

    mended.close().await;
    node.stop().await;
}

/// A broken module mended in place, keeping the same modification time
/// (as `cp -p` or an archive would), is seen by its content and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_mended_with_the_same_mtime_is_served() {
    let dir = ModuleDir::empty();
    let path = dir.join("same.wasm");
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let write_with_old_mtime = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(an_hour_ago).unwrap();
    };
    write_with_old_mtime(b"not a module");
    let node = DirNode::start(&dir.path, ["same"]).await;
    assert_eq!(
        node.serving,
        Vec::<String>::new(),
        "nothing serves the broken file"
    );

    write_with_old_mtime(&std::fs::read(built_module("double")).unwrap());
    let same = center(&node.queue("same"), Duration::from_secs(30)).await;
    answers(&same, "4", "8").await;

    same.close().await;
    node.stop().await;
}

/// The module directory replaced by two renames (gone for a moment, then
/// a new directory in its place): the running function goes on serving,
/// and the new directory's functions are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_replaced_by_two_renames_stops_nothing() {
    let base = ModuleDir::empty();
    let (live, next, old) = (base.join("live"), base.join("next"), base.join("old"));
    for dir in [&live, &next] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(built_module("increase"), dir.join("increase.wasm")).unwrap();
    }
    std::fs::copy(built_module("square"), next.join("square.wasm")).unwrap();
    let node = DirNode::start(&live, ["increase", "square"]).await;
    let increase = center(&node.queue("increase"), Duration::from_secs(30)).await;
    let square = center(&node.queue("square"), Duration::from_secs(30)).await;
    answers(&increase, "1", "2").await;

    std::fs::rename(&live, &old).unwrap();
    answers(&increase, "2", "3").await;
    std::fs::rename(&next, &live).unwrap();
    answers(&square, "7", "49").await;
    answers(&increase, "3", "4").await;
    assert!(node.is_running(), "the node stopped");

    for center in [increase, square] {
        center.close().await;
    }
    node.stop().await;
}

/// Writes the built module `module` as `dir/name.wasm` the safe way.
fn publish(dir: &ModuleDir, name: &str, module: &str) {
    dir.publish_as(name, &std::fs::read(built_module(module)).unwrap());
}

/// Calls `input` until the reply is `output` (for at most 10 s): a new or
/// replaced function takes a moment to be noticed.
async fn answers(center: &Center, input: &str, output: &str) {
    let what = format!("{input} gives {output}");
    eventually(&what, Duration::from_secs(10), || async {
        let reply = center.call(input).await;
        matches!(&reply, Ok(reply) if reply.body == output.as_bytes()).then_some(())
    })
    .await;
}

/// Waits until the center's queue is gone, deleted by the node that
/// stopped consuming it (for at most 10 s).
async fn queue_goes(center: &Center) {
    eventually(
        "the removed function's queue is deleted",
        Duration::from_secs(10),
        || async { (center.consumer_count().await.unwrap().is_none()).then_some(()) },
    )
    .await;
}

/// A node serving twenty functions holds one connection to the broker and
/// one epoch thread, and every function answers on its own queue, each
/// with its own name in the reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_functions_share_one_connection_and_one_engine() {
    const FUNCTIONS: usize = 20;
    let dir = ModuleDir::empty();
    for i in 0..FUNCTIONS {
        std::fs::copy(built_module("increase"), dir.join(format!("f{i}.wasm"))).unwrap();
    }
    let prefix = format!("test.many.{}", Uuid::new_v4());
    let _queues = QueueGuard::new((0..FUNCTIONS).map(|i| format!("{prefix}.f{i}")));
    let mut command = compute_command();
    command
        .args(["--queue-prefix", &prefix, "--amqp-url", &amqp_url()])
        .arg("--modules")
        .arg(&dir.path);
    let node = ServerProcess::compute(&mut command).await;

    for i in 0..FUNCTIONS {
        let center = center(&format!("{prefix}.f{i}"), Duration::from_secs(10)).await;
        let reply = center.call("41").await.expect("every function answers");
        assert_eq!(reply.body, b"42");
        assert_eq!(
            reply.origin.function.as_deref(),
            Some(format!("f{i}").as_str())
        );
        center.close().await;
    }
    let threads = std::fs::read_dir(format!("/proc/{}/task", node.pid())).unwrap();
    let epoch_tickers = threads
        .flatten()
        .filter(|thread| {
            std::fs::read_to_string(thread.path().join("comm"))
                .is_ok_and(|name| name.trim() == "epoch-ticker")
        })
        .count();
    assert_eq!(epoch_tickers, 1, "{}", node.log());
    assert_eq!(broker_connections(node.pid()), 1, "{}", node.log());

    drop(node);
}

/// How many TCP connections process `pid` has open to the broker's port.
fn broker_connections(pid: u32) -> usize {
    let port = amqp_url()
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse::<u16>().ok())
        .unwrap_or(5672);
    let sockets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(inode)) = (fields.get(2), fields.get(9)) else {
                continue;
            };
            let remote_port = remote
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if remote_port == Some(port) && sockets.iter().any(|socket| socket == inode) {
                count += 1;
            }
        }
    }
    count
}
