//! A hostile guest for the sandbox tests. It uses Rust's standard library
//! (so it imports WASI, unlike the real modules) to try everything a
//! compute function must not be able to do, and answers with a report,
//! one line per capability: `denied (...)` or `GRANTED (...)`.
//!
//! It also prints: a line to stdout and to stderr for every request, and
//! 100 KB for the request `flood`, to show the node logs guest output and
//! caps it. The request `sleep` sleeps for an hour in a host call
//! (`wasi:clocks`), where no CPU deadline can see it. The request
//! `scatter` looks for what an earlier instance wrote to its memory, then
//! writes every other page of 512 KiB, as an interpreter's heap would.

use std::{
    cell::UnsafeCell,
    io::Write as _,
    net::{TcpStream, ToSocketAddrs as _},
};

wit_bindgen::generate!({
    path: "../../wit",
    world: "compute-function",
});

struct Nosy;

impl Guest for Nosy {
    fn compute(request: Vec<u8>) -> Result<Vec<u8>, Failure> {
        println!("nosy: looking around (stdout)");
        eprintln!("nosy: looking around (stderr)");
        if request == b"sleep" {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            return Ok(b"woke up".to_vec());
        }
        if request == b"flood" {
            let line = [b'x'; 1000];
            let mut stdout = std::io::stdout();
            for _ in 0..100 {
                let _ = stdout.write_all(&line);
            }
            return Ok(b"flooded".to_vec());
        }
        if request == b"scatter" {
            return Ok(scatter().into_bytes());
        }
        let report = [
            ("read a file", probe(std::fs::read("/etc/passwd"))),
            ("list a directory", probe(std::fs::read_dir("/"))),
            ("write a file", probe(std::fs::write("/tmp/nosy", b"x"))),
            (
                "read the environment",
                none_is_denied(std::env::vars().count()),
            ),
            (
                "read its arguments",
                none_is_denied(std::env::args().count()),
            ),
            (
                "connect to the broker",
                probe(TcpStream::connect("127.0.0.1:5672")),
            ),
            (
                "resolve a host name",
                probe(("localhost", 80).to_socket_addrs()),
            ),
        ]
        .map(|(what, outcome)| format!("{what}: {outcome}\n"))
        .concat();
        Ok(report.into_bytes())
    }
}

fn probe<T, E: std::fmt::Display>(attempt: Result<T, E>) -> String {
    match attempt {
        Ok(_) => "GRANTED".to_owned(),
        Err(err) => format!("denied ({err})"),
    }
}

fn none_is_denied(count: usize) -> String {
    match count {
        0 => "denied (nothing there)".to_owned(),
        n => format!("GRANTED ({n} entries)"),
    }
}

export!(Nosy);

/// A host page: the unit in which the pool resets an instance's memory.
const PAGE: usize = 4096;
const SCRATCH_PAGES: usize = 128;
/// Aligned to a host page, so writing a 4 KiB chunk writes one page, not
/// parts of two, and every other page is a written region of its own.
/// Zeroed, so it costs the module no bytes.
#[repr(C, align(4096))]
struct Scratch(UnsafeCell<[u8; SCRATCH_PAGES * PAGE]>);
// SAFETY: an instance runs one call, on one thread.
unsafe impl Sync for Scratch {}
static SCRATCH: Scratch = Scratch(UnsafeCell::new([0; SCRATCH_PAGES * PAGE]));

/// Writes every other page of `SCRATCH`, counting first those of them
/// that are not as the module starts them (an earlier instance's writes):
/// more separate written regions than one scan of the pool's reset
/// reports.
fn scatter() -> String {
    // SAFETY: an instance runs one call, on one thread; nothing else
    // touches `SCRATCH`.
    let scratch = unsafe { &mut *SCRATCH.0.get() };
    let mut leftovers = 0;
    let mut written = 0;
    for page in scratch.chunks_mut(PAGE).step_by(2) {
        if page.iter().any(|byte| *byte != 0) {
            leftovers += 1;
        }
        page.fill(0xa5);
        written += 1;
    }
    format!("found {leftovers} pages written before; wrote {written}")
}
