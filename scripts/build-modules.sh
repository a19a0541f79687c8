#!/usr/bin/env bash
# Builds every compute module in guest/examples/ and copies NAME.wasm into
# modules/, and the hostile test guest tests/nosy-guest into
# tests/fixtures/nosy.wasm: Rust only, and what the demo and a Rust user
# need (the built modules are committed too).
#
#   scripts/build-modules.sh [--python] [--javascript] [--all]
#
# The Python and JavaScript modules are built too when asked, or when
# their tools are installed already (by an earlier run asked to); each
# language skipped is named, with why.
set -euo pipefail
cd "$(dirname "$0")/.."

python=no javascript=no
for arg in "$@"; do
    case $arg in
        --python) python=yes ;;
        --javascript) javascript=yes ;;
        --all) python=yes javascript=yes ;;
        *)
            echo "usage: scripts/build-modules.sh [--python] [--javascript] [--all]" >&2
            exit 2
            ;;
    esac
done

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
# A new function is one new file in guest/examples/: its [[example]]
# block (a component is a library, which Cargo builds from an example only
# when it is declared) is added here rather than by hand, after the
# others, before [dependencies].
for source in guest/examples/*.rs; do
    name=$(basename "$source" .rs)
    if ! grep -qx "name = \"$name\"" guest/Cargo.toml; then
        awk -v name="$name" '
            /^\[dependencies\]/ && !added {
                printf "[[example]]\nname = \"%s\"\ncrate-type = [\"cdylib\"]\n\n", name
                added = 1
            }
            { print }
        ' guest/Cargo.toml >guest/Cargo.toml.new
        mv guest/Cargo.toml.new guest/Cargo.toml
        echo "build-modules: added [[example]] $name to guest/Cargo.toml" >&2
    fi
done
cargo build --quiet --locked -p guest --release --target wasm32-wasip2 --examples
built="${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/examples"
for source in guest/examples/*.rs; do
    name=$(basename "$source" .rs)
    cp "$built/$name.wasm" "modules/$name.wasm"
done

cargo build --quiet --locked -p nosy-guest --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/nosy_guest.wasm" tests/fixtures/nosy.wasm

# Compute functions in Python and JavaScript: every guest-py/NAME.py that
# defines the world's class and every guest-js/NAME.js that exports
# `compute` becomes modules/NAME-py.wasm or modules/NAME-js.wasm. They are
# tens of MB each and their tools' output is not byte-for-byte
# reproducible, so they are built here, never committed (.gitignore).
# Each gets its language directory's limits.toml beside it, NAME-py.toml
# or NAME-js.toml. The tools, at the versions pinned in guest-py/requirements.txt and
# guest-js/package-lock.json, go under the build directory; a module is
# rebuilt only when its language's sources or tools changed.
tools="${CARGO_TARGET_DIR:-target}/guest-tools"
python_tools="$tools/python"
node_tools="$tools/node"
[ -x "$python_tools/bin/componentize-py" ] && python=yes
[ -d "$node_tools/node_modules" ] && javascript=yes
if [ $python = no ] && [ $javascript = no ]; then
    echo "build-modules: skipped the Python and JavaScript modules (not asked; --all builds them, installing componentize-py and componentize-js, about 460 MB)" >&2
    exit 0
fi
mkdir -p "$tools/stamps"

# The limits every function of a language directory runs under: its
# limits.toml, copied beside each module built from it ($1: the language
# directory, $2: the module's name without .wasm).
place_limits() {
    if [ -f "$1/limits.toml" ]; then
        cp "$1/limits.toml" "modules/$2.toml"
    else
        rm -f "modules/$2.toml"
    fi
}

# Whether modules/$1 exists and was built from sources whose digest is
# $2 (the digest of the sources a module was built from is kept under
# $tools/stamps).
up_to_date() {
    [ -f "modules/$1" ] && [ "$(cat "$tools/stamps/$1" 2>/dev/null)" = "$2" ]
}

build_python() {
    if ! cmp -s guest-py/requirements.txt "$python_tools/requirements.txt"; then
        rm -rf "$python_tools"
        python3 -m venv "$python_tools" || {
            echo "build-modules: cannot create a Python virtualenv; install python3-venv" >&2
            exit 1
        }
        "$python_tools/bin/pip" install --quiet --requirement guest-py/requirements.txt
        cp guest-py/requirements.txt "$python_tools/requirements.txt"
    fi
    python_sources="$(cat guest-py/*.py wit/compute.wit guest-py/requirements.txt | sha256sum)"
    for source in guest-py/*.py; do
        name=$(basename "$source" .py)
        grep -q '^class WitWorld(' "$source" || continue
        place_limits guest-py "$name-py"
        up_to_date "$name-py.wasm" "$python_sources" && continue
        echo "build-modules: building modules/$name-py.wasm (componentize-py, about 15 s)" >&2
        "$python_tools/bin/componentize-py" --wit-path wit --world compute-function \
            componentize --python-path guest-py "$name" --output "modules/$name-py.wasm" >/dev/null
        echo "$python_sources" >"$tools/stamps/$name-py.wasm"
    done
}

build_javascript() {
    if ! cmp -s guest-js/package-lock.json "$node_tools/package-lock.json"; then
        rm -rf "$node_tools"
        mkdir -p "$node_tools"
        cp guest-js/package.json guest-js/package-lock.json "$node_tools/"
        (cd "$node_tools" && npm ci --silent --no-audit --no-fund)
    fi
    cp guest-js/build.mjs "$node_tools/build.mjs"
    javascript_sources="$(cat guest-js/*.js guest-js/build.mjs wit/compute.wit guest-js/package-lock.json | sha256sum)"
    for source in guest-js/*.js; do
        name=$(basename "$source" .js)
        grep -q '^export function compute(' "$source" || continue
        place_limits guest-js "$name-js"
        up_to_date "$name-js.wasm" "$javascript_sources" && continue
        echo "build-modules: building modules/$name-js.wasm (componentize-js, about 10 s)" >&2
        node "$node_tools/build.mjs" "$source" wit "modules/$name-js.wasm"
        echo "$javascript_sources" >"$tools/stamps/$name-js.wasm"
    done
}

if [ $python = yes ]; then
    build_python
else
    echo "build-modules: skipped the Python modules (not asked; --python builds them)" >&2
fi
if [ $javascript = yes ]; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "build-modules: cannot build the JavaScript modules: Node.js and npm are not on PATH" >&2
        exit 1
    fi
    build_javascript
else
    echo "build-modules: skipped the JavaScript modules (not asked; --javascript builds them)" >&2
fi
