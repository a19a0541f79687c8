#!/usr/bin/env bash
# Prints the path of a Python 3 that can `import pika` (for the tests that
# check that the classic Python examples interoperate with our node and
# center), installing pika into a virtualenv under the target dir if the
# system Python lacks it.
set -euo pipefail
cd "$(dirname "$0")/.."

if python3 -c "import pika" 2>/dev/null; then
    command -v python3
    exit 0
fi
venv="${CARGO_TARGET_DIR:-target}/python-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2 || {
        echo "cannot create a Python virtualenv; install python3-venv (sudo apt-get install python3-venv)" >&2
        exit 1
    }
fi
"$venv/bin/python" -c "import pika" 2>/dev/null || "$venv/bin/python" -m pip install --quiet pika >&2
# Absolute, since the tests run from their own package's directory.
echo "$(cd "$venv/bin" && pwd)/python"
