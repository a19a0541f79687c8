//! A 32 KiB stack for the modules instead of the default 1 MiB. The
//! functions need little stack, and a module's memory is then one 64 KiB
//! page: the node zeroes every page an instance touched before reusing it,
//! so each page saved is saved at every request.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo::rustc-link-arg=-zstack-size=32768");
    }
}
