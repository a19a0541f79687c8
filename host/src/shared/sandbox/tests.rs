use super::*;
use crate::shared::wire::ErrorKind;
use std::{sync::Mutex, time::Duration};

fn increase() -> ComputeModule {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/increase.wasm");
    Sandbox::new(Limits::default())
        .unwrap()
        .load(&path)
        .unwrap()
}

#[tokio::test]
async fn runs_the_default_module() {
    let module = increase();
    assert_eq!(module.name(), "increase");
    assert_eq!(module.compute(b"41").await.unwrap(), b"42");
}

#[tokio::test]
async fn maps_guest_failures_to_error_kinds() {
    let module = increase();
    let err = module.compute(b"forty").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    let err = module
        .compute(i64::MAX.to_string().as_bytes())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ComputeFailed);
}

#[tokio::test]
async fn refuses_bodies_over_the_size_limit() {
    let sandbox = Sandbox::new(Limits {
        max_body: 4,
        ..Limits::default()
    })
    .unwrap();
    let module = sandbox
        .load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/increase.wasm"))
        .unwrap();
    let err = module.compute(b"123456").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(
        err.to_string(),
        "the request body is 6 bytes, more than the node's limit of 4 bytes (--max-body)"
    );
    let err = module.compute(b"9999").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the reply body is 5 bytes, more than the node's limit of 4 bytes (--max-body)"
    );
    assert_eq!(module.compute(b"998").await.unwrap(), b"999");
}

/// A request as large as `--max-body` allows reaches the guest, whose
/// memory grows to hold it, and is answered by the function itself.
#[tokio::test]
async fn a_request_of_the_largest_size_reaches_the_guest() {
    let module = increase();
    let mut body = vec![b' '; Limits::default().max_body];
    body[..2].copy_from_slice(b"41");
    assert_eq!(module.compute(&body).await.unwrap(), b"42");
    let err = module
        .compute(&vec![b'9'; Limits::default().max_body])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
}

#[tokio::test]
async fn stops_a_guest_that_never_returns() {
    let sandbox = Sandbox::new(Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    })
    .unwrap();
    let spin = sandbox
        .load_bytes("spin", &component("(loop $l (br $l)) unreachable"))
        .unwrap();
    let err = spin.compute(b"1").await.unwrap_err();
    assert!(matches!(err, ComputeError::Timeout(_)), "{err:?}");
}

/// Every Rust module in `modules/` loads and answers a request, whatever
/// functions there are (a new one needs no line here); the ones whose
/// results this test knows are checked by value. (The Python and
/// JavaScript ones, seconds each to compile, are served in
/// `tests/integration/languages.rs`, through a compile cache.)
#[tokio::test]
async fn every_built_module_computes_its_function() {
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules");
    let known = [
        ("increase", "8"),
        ("double", "14"),
        ("square", "49"),
        ("fib", "13"),
        ("triple", "21"),
        ("reverse", "7"),
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(&modules).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "wasm") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name.ends_with("-py") || name.ends_with("-js") {
            continue;
        }
        let module = sandbox.load(&path).unwrap();
        assert!(module.digest().starts_with("sha256:") && module.digest().len() == 71);
        let output = module
            .compute(b"7")
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        if let Some((_, expected)) = known.iter().find(|(known, _)| *known == name) {
            assert_eq!(output, expected.as_bytes(), "{name}");
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        known.len(),
        "a known module is missing from modules/"
    );
}

/// Modules built with Rust's std import WASI; the sandbox links it, with
/// an empty context made on first use.
#[tokio::test]
async fn serves_a_module_that_calls_wasi() {
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let module = sandbox
        .load_bytes("random", &wat::parse_str(CALLS_WASI_RANDOM).unwrap())
        .unwrap();
    assert_eq!(module.compute(b"1").await.unwrap(), b"");
}

/// A guest that misbehaves gets an error for its request, never more:
/// memory past the cap, a trap and unbounded recursion each end as
/// `compute-failed` with the reason, and the sandbox keeps working.
#[tokio::test]
async fn hostile_guests_fail_their_own_request_only() {
    let sandbox = Sandbox::new(Limits {
        memory: 4 << 20,
        ..Limits::default()
    })
    .unwrap();
    let hostile = |body: &str| sandbox.load_bytes("hostile", &component(body)).unwrap();
    let cases = [
        (
            "grows its memory",
            "(drop (memory.grow (i32.const 1000))) unreachable",
            "more than the node's limit of 4194304 bytes (--guest-memory)",
        ),
        ("traps", "unreachable", "unreachable"),
        (
            "recurses forever",
            "(call 0 (local.get 0) (local.get 1))",
            "call stack exhausted",
        ),
    ];
    for (what, body, reason) in cases {
        let err = hostile(body).compute(b"1").await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ComputeFailed,
            "a guest that {what}: {err}"
        );
        assert!(
            err.to_string().contains(reason),
            "a guest that {what}: {err}"
        );
    }
    let module = sandbox
        .load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/increase.wasm"))
        .unwrap();
    assert_eq!(module.compute(b"1").await.unwrap(), b"2");
}

/// A module's limits file (`NAME.toml` beside `NAME.wasm`) narrows the
/// node's limits for that module, and a request past them is told which
/// limit it met; one that asks for more than the node allows, or says
/// what no limit means, is not loaded.
#[tokio::test]
async fn a_limits_file_beside_a_module_narrows_its_limits() {
    let dir = TempDir::new("limits");
    std::fs::create_dir_all(&dir.0).unwrap();
    let module = dir.0.join("grower.wasm");
    std::fs::write(
        &module,
        component("(drop (memory.grow (i32.const 40))) unreachable"),
    )
    .unwrap();
    let limits_file = dir.0.join("grower.toml");
    std::fs::write(&limits_file, "memory = 2\ntimeout = 0.1\n").unwrap();
    let sandbox = Sandbox::new(Limits::default()).unwrap();

    let grower = sandbox.load(&module).unwrap();
    assert_eq!(grower.limits().memory, 2 << 20);
    assert_eq!(grower.limits().timeout, Duration::from_millis(100));
    let err = grower.compute(b"1").await.unwrap_err().to_string();
    assert!(
        err.contains("more than its own limit of 2097152 bytes (memory in its limits file)"),
        "{err}"
    );
    // Without the file, the same module grows within the node's 64 MiB.
    std::fs::remove_file(&limits_file).unwrap();
    let err = sandbox
        .load(&module)
        .unwrap()
        .compute(b"1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");

    for refused in ["memory = 65", "memroy = 2"] {
        std::fs::write(&limits_file, refused).unwrap();
        let err = sandbox.load(&module).err().expect(refused);
        assert!(matches!(err, LoadError::Limits(_)), "{refused}: {err}");
    }

    // A module whose memory starts at 3 MiB could never run under a limit
    // of 2 MiB: refused when it is loaded, not at every request.
    let big = component_with_memory("unreachable", 48);
    std::fs::write(&module, big).unwrap();
    std::fs::write(&limits_file, "memory = 2").unwrap();
    let err = sandbox.load(&module).err().expect("too small to start");
    assert_eq!(
        err.to_string(),
        "the module needs 3145728 bytes of memory to start, more than its own memory limit of 2097152 bytes"
    );
}

/// A fresh instance never sees what an earlier one wrote, even when the
/// writes are scattered over more separate pages than one scan of the
/// pool's reset reports, which it resets in place rather than gives back
/// to the kernel.
#[tokio::test]
async fn an_instance_never_sees_what_an_earlier_one_wrote() {
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let nosy = sandbox
        .load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/nosy.wasm"))
        .unwrap();
    // One call at a time, so each instance takes the slot the last one
    // left.
    for call in 0..20 {
        let report = nosy.compute(b"scatter").await.unwrap();
        assert_eq!(
            String::from_utf8(report).unwrap(),
            "found 0 pages written before; wrote 64",
            "call {call}"
        );
    }
}

/// A guest built with std that tries every capability is denied each,
/// and what it prints lands in the node's log, capped per request.
#[tokio::test]
async fn a_nosy_guest_gets_nothing_and_its_output_is_logged_capped() {
    let log = CapturedLog::default();
    let _default = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .finish(),
    );
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let nosy = sandbox
        .load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/nosy.wasm"))
        .unwrap();

    let report = String::from_utf8(nosy.compute(b"look").await.unwrap()).unwrap();
    assert_eq!(report.lines().count(), 7, "{report}");
    assert!(
        report.lines().all(|line| line.contains(": denied (")),
        "{report}"
    );
    assert!(
        log.text()
            .contains("guest output: nosy: looking around (stdout)")
    );
    assert!(log.text().contains("nosy: looking around (stderr)"));

    assert_eq!(nosy.compute(b"flood").await.unwrap(), b"flooded");
    let flood = log.text();
    let flood = flood.lines().last().unwrap();
    assert!(flood.contains("dropped_bytes="), "{flood}");
    assert!(
        flood.len() < GUEST_OUTPUT_CAP + 200,
        "{} bytes",
        flood.len()
    );
}

#[test]
fn rejects_bytes_that_are_not_a_component() {
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let message = |bytes: &[u8]| sandbox.load_bytes("x", bytes).err().unwrap().to_string();
    assert_eq!(message(b""), "the file is empty");
    assert!(message(b"oops").starts_with("not a WebAssembly file"));
    let core = wat::parse_str("(module)").unwrap();
    assert!(message(&core).starts_with("a core WebAssembly module, not a component"));
    let truncated =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/increase.wasm"))
            .unwrap();
    assert!(sandbox.load_bytes("x", &truncated[..1000]).is_err());
}

/// A component that calls `wasi:random` and returns an empty body.
/// The result (tag, pointer, length) is written at offset 16.
const CALLS_WASI_RANDOM: &str = r#"
        (component
          (import "wasi:random/random@0.2.0" (instance $random (export "get-random-u64" (func (result u64)))))
          (core func $get (canon lower (func $random "get-random-u64")))
          (core module $m
            (import "wasi" "get" (func $get (result i64)))
            (memory (export "memory") 1)
            (func (export "compute") (param i32 i32) (result i32)
              call $get
              drop
              (i32.store8 (i32.const 16) (i32.const 0))
              (i32.store (i32.const 20) (i32.const 0))
              (i32.store (i32.const 24) (i32.const 0))
              i32.const 16)
            (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 64))
          (core instance $i (instantiate $m (with "wasi" (instance (export "get" (func $get))))))
          (type $failure (variant (case "bad-request" string) (case "compute-failed" string)))
          (export $f "failure" (type $failure))
          (func (export "compute") (param "request" (list u8)) (result (result (list u8) (error $f)))
            (canon lift (core func $i "compute") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))
    "#;

/// Log lines written by the test's subscriber.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;

    fn make_writer(&'a self) -> CapturedLog {
        self.clone()
    }
}

/// A compute component whose core function is `body`, from the
/// fixture the integration tests share.
fn component(body: &str) -> Vec<u8> {
    component_with_memory(body, 1)
}

/// The same, its memory starting at `pages` of 64 KiB.
fn component_with_memory(body: &str, pages: u32) -> Vec<u8> {
    let template = include_str!("../../../../tests/fixtures/compute.wat");
    let memory = "(memory (export \"memory\") 1)";
    assert!(template.contains(memory), "the fixture's memory changed");
    let text = template
        .replace("(; BODY ;)", body)
        .replace(memory, &format!("(memory (export \"memory\") {pages})"));
    wat::parse_str(text).unwrap()
}

/// A core function body that answers with the request itself; `n` makes
/// each one a different module.
fn echo(n: u32) -> String {
    format!(
        "(drop (i32.const {n}))
         (i32.store8 (i32.const 0) (i32.const 0))
         (i32.store offset=4 (i32.const 0) (local.get 0))
         (i32.store offset=8 (i32.const 0) (local.get 1))
         (i32.const 0)"
    )
}

/// A private directory for one test, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("compute-cache-{test}-{}", uuid::Uuid::new_v4()));
        TempDir(path)
    }

    /// The cache's entries and their total size.
    fn entries(&self) -> (Vec<std::path::PathBuf>, u64) {
        let entries: Vec<_> = std::fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "compiled"))
            .collect();
        let total = entries
            .iter()
            .map(|path| std::fs::metadata(path).unwrap().len())
            .sum();
        (entries, total)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A module loaded twice through one cache is compiled once; an entry
/// with one bit changed, or written under another cache's key, is not
/// loaded: the module is compiled again and still answers.
#[tokio::test]
async fn the_compile_cache_loads_only_its_own_sound_entries() {
    let dir = TempDir::new("sound");
    let cached = |dir: &TempDir| {
        let cache = CompileCache::open(&dir.0, CacheSettings::DEFAULT_MAX_BYTES).unwrap();
        Sandbox::new(Limits::default())
            .unwrap()
            .with_compile_cache(cache)
    };
    let bytes = component(&echo(0));
    let digest = digest(&bytes);
    let sandbox = cached(&dir);
    let cache = sandbox.cache.clone().unwrap();
    assert!(cache.get(&sandbox.engine, &digest).is_none());
    sandbox.load_bytes("echo", &bytes).unwrap();
    assert!(cache.get(&sandbox.engine, &digest).is_some());

    // One bit flipped in the compiled code.
    let (entries, _) = dir.entries();
    let mut entry = std::fs::read(&entries[0]).unwrap();
    let last = entry.len() - 1;
    entry[last] ^= 1;
    std::fs::write(&entries[0], &entry).unwrap();
    assert!(cache.get(&sandbox.engine, &digest).is_none());
    assert!(!entries[0].exists(), "the damaged entry is removed");
    let module = sandbox.load_bytes("echo", &bytes).unwrap();
    assert_eq!(module.compute(b"hi").await.unwrap(), b"hi");

    // A sound entry from another cache (another key), copied in.
    let other = TempDir::new("other");
    cached(&other).load_bytes("echo", &bytes).unwrap();
    let (foreign, _) = other.entries();
    std::fs::copy(&foreign[0], &entries[0]).unwrap();
    assert!(cache.get(&sandbox.engine, &digest).is_none());
    let module = sandbox.load_bytes("echo", &bytes).unwrap();
    assert_eq!(module.compute(b"hi").await.unwrap(), b"hi");
}

/// However many modules are compiled, the cache keeps within its bound,
/// dropping the oldest entries first.
#[test]
fn the_compile_cache_stays_within_its_bound() {
    let dir = TempDir::new("bound");
    let unbounded = CompileCache::open(&dir.0, u64::MAX).unwrap();
    let sandbox = Sandbox::new(Limits::default())
        .unwrap()
        .with_compile_cache(unbounded);
    let modules: Vec<Vec<u8>> = (0..4).map(|n| component(&echo(n))).collect();
    sandbox.load_bytes("first", &modules[0]).unwrap();
    let (_, one_entry) = dir.entries();

    // Room for two entries and a half.
    let bound = one_entry * 5 / 2;
    let bounded = CompileCache::open(&dir.0, bound).unwrap();
    let sandbox = Sandbox::new(Limits::default())
        .unwrap()
        .with_compile_cache(bounded);
    for (n, module) in modules.iter().enumerate().skip(1) {
        // Distinct modification times, so "oldest" is well defined.
        std::thread::sleep(std::time::Duration::from_millis(20));
        sandbox.load_bytes(&format!("m{n}"), module).unwrap();
        let (_, total) = dir.entries();
        assert!(total <= bound, "{total} bytes kept, bound {bound}");
    }
    let (entries, _) = dir.entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let newest = digest(&modules[3]);
    let newest = newest.strip_prefix("sha256:").unwrap();
    assert!(
        entries
            .iter()
            .any(|path| path.to_string_lossy().contains(newest)),
        "{entries:?}"
    );
}
