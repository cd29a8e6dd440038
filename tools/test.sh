#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: Rust format/lint/tests, the extension built into
# ./.venv, Python lint and type checks (mypy --strict, stubtest), pytest, and a benchmark smoke
# run. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "python environment (.venv)"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r requirements-dev.txt

step "cargo fmt"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --release --all-targets --locked -- -D warnings
step "cargo test"
cargo test --release --locked -p e2ebackup-core
step "fuzz targets: corpus replay (stable), then a short run of each (docs/FUZZING.md)"
bash tools/fuzz.sh replay
if command -v cargo-fuzz >/dev/null; then
    bash tools/fuzz.sh smoke 15
else
    echo "cargo-fuzz is not installed (cargo install --locked cargo-fuzz): smoke run skipped"
fi

step "build and install the extension"
maturin develop --release --locked

step "ruff"
ruff check .
ruff format --check .
step "mypy --strict"
mypy
# benches/ has its own conftest.py, so it is checked as a separate tree.
mypy benches
step "stubtest"
python -m mypy.stubtest e2ebackup._core

step "pytest"
python -m pytest -p no:cacheprovider

step "benchmark smoke run"
python benches/report.py --smoke
