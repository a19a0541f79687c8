//! The compile cache, as a node meets it across restarts.

use compute_host::{NodeConfig, shared::sandbox::CacheSettings};
use testkit::{ModuleDir, RawClient, RunningNode, increase_module, unique_queue};

/// A node restarted on the same compile cache loads its module from the
/// cache instead of compiling it, and serves as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_loads_its_module_from_the_cache() {
    let cache = ModuleDir::empty();
    let queue = unique_queue("compile-cache");
    let config = || NodeConfig {
        compile_cache: Some(CacheSettings {
            dir: cache.path.clone(),
            max_bytes: CacheSettings::DEFAULT_MAX_BYTES,
            required: true,
        }),
        ..NodeConfig::module(increase_module(), &queue)
    };
    let mut client = RawClient::connect().await;

    let first = RunningNode::start_with(config()).await;
    assert_eq!(client.request(&queue, b"1", None).await.data, b"2");
    let loaded = first.live.current().loaded();
    assert!(
        !loaded.from_cache,
        "a new cache has nothing to load: {loaded}"
    );
    first.stop().await;

    let second = RunningNode::start_with(config()).await;
    assert_eq!(client.request(&queue, b"41", None).await.data, b"42");
    let loaded = second.live.current().loaded();
    assert!(loaded.from_cache, "the restarted node {loaded}");
    second.stop().await;
}
