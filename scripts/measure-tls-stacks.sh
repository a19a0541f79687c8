#!/usr/bin/env bash
# The TLS stacks lapin can use, measured as this project chose between
# them: for a program that opens one connection with lapin (as the node
# does), the crates it builds, the time of a release build from a clean
# target, and the stripped binary's size. One stack at a time, each in its
# own target folder under a temporary directory; run it on an idle machine.
#
#   scripts/measure-tls-stacks.sh
set -euo pipefail
lapin_version=$(cargo metadata --format-version 1 --locked --manifest-path "$(dirname "$0")/../Cargo.toml" |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="lapin"))')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# name|lapin features|other dependencies
stacks=(
    'no TLS|"tokio"|'
    'rustls + ring + system CAs (ours)|"tokio", "rustls--ring", "rustls-native-certs"|rustls = { version = "0.23", default-features = false, features = ["ring", "std", "tls12"] }'
    "lapin's default: rustls + aws-lc-rs + platform verifier|\"tokio\", \"rustls\"|"
    'native-tls (OpenSSL)|"tokio", "native-tls"|'
)
printf '| stack | crates | release build | binary (stripped) |\n| --- | --- | --- | --- |\n'
for stack in "${stacks[@]}"; do
    IFS='|' read -r name features others <<<"$stack"
    dir="$work/probe"
    rm -rf "$dir"
    mkdir -p "$dir/src"
    cat >"$dir/Cargo.toml" <<TOML
[package]
name = "probe"
version = "0.1.0"
edition = "2024"

[dependencies]
lapin = { version = "=$lapin_version", default-features = false, features = [$features] }
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
$others

[profile.release]
strip = true
TOML
    cat >"$dir/src/main.rs" <<'RUST'
#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).unwrap_or_else(|| "amqp://127.0.0.1:5672/%2f".into());
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await;
    println!("{}", connection.is_ok());
}
RUST
    (cd "$dir" && cargo fetch -q)
    crates=$(cd "$dir" && cargo tree -e normal,build --prefix none 2>/dev/null | sed 's/ (\*)$//' | sort -u | wc -l)
    start=$(date +%s.%N)
    (cd "$dir" && CARGO_TARGET_DIR="$dir/target" cargo build -q --release)
    took=$(echo "$(date +%s.%N) - $start" | bc)
    size=$(stat -c %s "$dir/target/release/probe")
    printf '| %s | %s | %.0f s | %.1f MB |\n' "$name" "$crates" "$took" "$(echo "$size / 1000000" | bc -l)"
done
