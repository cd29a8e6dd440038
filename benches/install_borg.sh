#!/usr/bin/env bash
# Installs borgbackup 1.4.5, the peer of benches/repo_vs_borg.py and benches/test_bench_repo.py,
# into the active Python environment. Not part of requirements-dev.txt: PyPI has no wheels of
# it for this platform, so it compiles from its sdist (C and Cython, about a minute), which CI
# must not pay for. Needs root for the Debian build dependencies. Falls back to Debian's own
# borgbackup package (whatever version it ships) if the build fails.
#
#   source .venv/bin/activate && bash benches/install_borg.sh
set -euo pipefail

BORG_VERSION="${BORG_VERSION:-1.4.5}"
python="${PYTHON:-python3}"

if command -v borg >/dev/null && borg --version | grep -qx "borg ${BORG_VERSION}"; then
    echo "borg ${BORG_VERSION} is already installed: $(command -v borg)"
    exit 0
fi

apt-get update -qq
apt-get install -y -qq libacl1-dev liblz4-dev libzstd-dev libxxhash-dev libssl-dev pkg-config
if "$python" -m pip install --quiet "borgbackup==${BORG_VERSION}"; then
    echo "installed borg ${BORG_VERSION} from its sdist into $("$python" -c 'import sys; print(sys.prefix)')"
else
    echo "building borgbackup ${BORG_VERSION} failed; installing Debian's borgbackup instead" >&2
    apt-get install -y -qq borgbackup
fi
borg --version
