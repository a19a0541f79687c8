//! The compile cache, as a node's operator meets it.

use testkit::{ModuleDir, RawClient, ServerProcess, increase_module, unique_queue};

/// A node restarted on the same compile cache loads its module from the
/// cache instead of compiling it, and serves as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_loads_its_module_from_the_cache() {
    let cache = ModuleDir::empty();
    let cache_dir = cache.path.to_string_lossy().into_owned();
    let queue = unique_queue("compile-cache");
    let args = ["--compile-cache", cache_dir.as_str()];
    let mut client = RawClient::connect().await;

    let mut first = ServerProcess::node(&queue, &increase_module(), &args).await;
    assert_eq!(client.request(&queue, b"1", None).await.data, b"2");
    first.terminate();
    assert!(first.wait().await.success());
    let log = first.log();
    assert!(log.contains("module=compiled in "), "{log}");

    let mut second = ServerProcess::node(&queue, &increase_module(), &args).await;
    assert_eq!(client.request(&queue, b"41", None).await.data, b"42");
    let log = second.log();
    assert!(
        log.contains("module=loaded from the compile cache in "),
        "{log}"
    );
    assert!(!log.contains("compiled in"), "{log}");
    second.terminate();
    assert!(second.wait().await.success());
}
