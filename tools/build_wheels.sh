#!/usr/bin/env bash
# Portable wheels and the sdist, built on this machine with maturin and zig (the `ziglang` PyPI
# package links against an old glibc or against musl, so no manylinux container is needed):
#
#   bash tools/build_wheels.sh [--no-smoke] [KIND...]      (default: every kind)
#
# KIND is manylinux-x86_64, manylinux-aarch64, musllinux-x86_64, musllinux-aarch64 or sdist.
# Each wheel is abi3 (CPython >= 3.11), its extension stripped; `auditwheel show` must agree
# with a manylinux wheel's platform tag (a musllinux one is checked against auditwheel's
# musllinux policy directly: see check_musllinux), and the wheel and the sdist must carry
# LICENSE. The manylinux x86_64 wheel, the only one this host can run, is installed into a
# fresh virtual environment per CPython found here (3.11, 3.12, 3.13) and passes
# tools/wheel_smoke.py.
#
# Needs maturin, ziglang and auditwheel (requirements-dev.txt) and the Rust targets
# (`rustup target add aarch64-unknown-linux-gnu x86_64-unknown-linux-musl ...`), added here on
# demand. Wheels go to $WHEEL_DIR (default dist/wheels); objects to $CARGO_TARGET_DIR (default
# target/wheels), apart from target/release, which is built with the system C compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

smoke=1
if [ "${1:-}" = "--no-smoke" ]; then
    smoke=0
    shift
fi
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(manylinux-x86_64 manylinux-aarch64 musllinux-x86_64 musllinux-aarch64 sdist)

out="${WHEEL_DIR:-dist/wheels}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/wheels}"
mkdir -p "$out"
python="${PYTHON:-python3}"

step() { printf '\n=== %s\n' "$*"; }
fail() {
    echo "build_wheels.sh: $*" >&2
    exit 1
}

# kind -> Rust target, maturin --compatibility, the platform tag the wheel must carry.
describe() {
    case "$1" in
    manylinux-x86_64) echo "x86_64-unknown-linux-gnu manylinux_2_17 manylinux_2_17_x86_64" ;;
    manylinux-aarch64) echo "aarch64-unknown-linux-gnu manylinux_2_17 manylinux_2_17_aarch64" ;;
    musllinux-x86_64) echo "x86_64-unknown-linux-musl musllinux_1_2 musllinux_1_2_x86_64" ;;
    musllinux-aarch64) echo "aarch64-unknown-linux-musl musllinux_1_2 musllinux_1_2_aarch64" ;;
    *) fail "unknown kind '$1' (manylinux-x86_64, manylinux-aarch64, musllinux-x86_64, musllinux-aarch64, sdist)" ;;
    esac
}

# The wheel's dist-info and the sdist must hold the Apache-2.0 text (PEP 639 license-files).
check_license_in() {
    "$python" - "$1" <<'EOF'
import sys, tarfile, zipfile

archive = sys.argv[1]
if archive.endswith(".whl"):
    with zipfile.ZipFile(archive) as z:
        names = {n: z.read(n) for n in z.namelist() if n.rsplit("/", 1)[-1] == "LICENSE"}
else:
    with tarfile.open(archive) as t:
        names = {
            m.name: t.extractfile(m).read()  # type: ignore[union-attr]
            for m in t.getmembers()
            if m.isfile() and m.name.rsplit("/", 1)[-1] == "LICENSE"
        }
if not any(b"Apache License" in text and b"Version 2.0" in text for text in names.values()):
    sys.exit(f"{archive}: no Apache-2.0 LICENSE inside (found {sorted(names)})")
print(f"LICENSE: {', '.join(sorted(names))}")
EOF
}

check_manylinux() {
    local wheel=$1 tag=$2 report
    report=$(auditwheel show "$wheel")
    echo "$report"
    # auditwheel names the most compatible tag the wheel's symbols allow; it must be ours.
    echo "$report" | tr -s '\n ' '  ' | grep -q "consistent with the following platform tag: \"$tag\"" ||
        fail "auditwheel does not confirm $tag for $(basename "$wheel")"
}

# auditwheel tells musl from glibc by the host's libc when an extension names no libc in its
# file name (abi3 ones don't), so on a glibc host it judges a musl wheel by glibc rules and
# fails. The musllinux policy is applied here instead, from auditwheel's own policy file: only
# whitelisted libraries needed, no versioned (glibc) symbols, the right machine.
check_musllinux() {
    "$python" - "$1" "$2" <<'EOF'
import io, json, pathlib, sys, zipfile

import auditwheel
from elftools.elf.elffile import ELFFile

wheel, tag = sys.argv[1], sys.argv[2]
policy_name, arch = "_".join(tag.split("_")[:3]), "_".join(tag.split("_")[3:])
policies = pathlib.Path(auditwheel.__file__).parent / "policy" / "musllinux-policy.json"
(policy,) = [p for p in json.loads(policies.read_text()) if p["name"] == policy_name]
machine = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}[arch]
with zipfile.ZipFile(wheel) as z:
    (name,) = [n for n in z.namelist() if n.endswith(".so")]
    elf = ELFFile(io.BytesIO(z.read(name)))
    if elf["e_machine"] != machine:
        sys.exit(f"{name}: {elf['e_machine']}, not {machine}")
    needed = sorted(
        t.needed
        for t in elf.get_section_by_name(".dynamic").iter_tags()
        if t.entry.d_tag == "DT_NEEDED"
    )
    extra = set(needed) - set(policy["lib_whitelist"])
    if extra:
        sys.exit(f"{name} needs {sorted(extra)}, outside the {policy_name} whitelist")
    if elf.get_section_by_name(".gnu.version_r") is not None:
        sys.exit(f"{name} needs versioned (glibc) symbols")
print(f"{tag}: {name} ({machine}) needs only {needed}, as the {policy_name} policy allows")
EOF
}

# The shipped extension must carry no symbol table or debug sections.
check_stripped() {
    local wheel=$1 tmp
    tmp=$(mktemp -d)
    "$python" -m zipfile -e "$wheel" "$tmp"
    local so
    so=$(find "$tmp" -name '_core*.so' | head -n 1)
    [ -n "$so" ] || fail "$wheel: no extension module inside"
    if readelf -S --wide "$so" | grep -qE '\.symtab|\.debug_'; then
        fail "$wheel: the extension is not stripped"
    fi
    echo "stripped: $(basename "$so"), $(stat -c %s "$so") bytes"
    rm -rf "$tmp"
}

build_wheel() {
    local kind=$1 target compat tag
    read -r target compat tag <<<"$(describe "$kind")"
    step "$kind: $target, $compat"
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    local staging
    staging=$(mktemp -d)
    local started=$SECONDS
    maturin build --release --locked --strip --zig --target "$target" --compatibility "$compat" \
        --out "$staging"
    echo "built in $((SECONDS - started)) s"
    local wheel
    wheel=$(find "$staging" -name '*.whl')
    [ "$(echo "$wheel" | wc -l)" = 1 ] || fail "expected one wheel in $staging"
    # name-version-python-abi-platforms.whl; platforms may be compound (manylinux2014_x.manylinux_2_17_x).
    local python_tag abi_tag platforms
    IFS=- read -r _ _ python_tag abi_tag platforms <<<"$(basename "$wheel" .whl)"
    [ "$python_tag-$abi_tag" = cp311-abi3 ] && [[ ".$platforms." == *".$tag."* ]] ||
        fail "$(basename "$wheel"): expected a cp311-abi3 $tag wheel"
    case "$tag" in
    manylinux*) check_manylinux "$wheel" "$tag" ;;
    musllinux*) check_musllinux "$wheel" "$tag" ;;
    esac
    check_stripped "$wheel"
    check_license_in "$wheel"
    rm -f "$out"/e2ebackup-*"$tag".whl
    mv "$wheel" "$out/"
    rm -rf "$staging"
    if [ "$kind" = manylinux-x86_64 ] && [ "$smoke" = 1 ]; then
        smoke_test "$out/$(basename "$wheel")"
    fi
}

# A fresh virtual environment per CPython on this machine, the wheel installed from the file
# (its dependencies from the package index), then tools/wheel_smoke.py outside the checkout.
smoke_test() {
    local wheel=$1 interpreters=() found=0
    for version in 3.11 3.12 3.13; do
        # On PATH, else a pyenv install whose shim is not selected (as on the CI machines).
        for candidate in "python$version" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/"python$version"; do
            if "$candidate" -c '' 2>/dev/null; then
                interpreters+=("$candidate")
                break
            fi
        done
    done
    for interpreter in "${interpreters[@]}"; do
        step "smoke test: $(basename "$wheel") on $("$interpreter" --version)"
        local venv
        venv=$(mktemp -d)
        "$interpreter" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
        (cd "$venv" && "$venv/bin/python" "$root/tools/wheel_smoke.py" "$wheel")
        rm -rf "$venv"
        found=1
    done
    [ "$found" = 1 ] || fail "no CPython 3.11+ found for the smoke test"
}

build_sdist() {
    step "sdist"
    local staging
    staging=$(mktemp -d)
    maturin sdist --out "$staging"
    local sdist
    sdist=$(find "$staging" -name '*.tar.gz')
    check_license_in "$sdist"
    mv "$sdist" "$out/"
    rm -rf "$staging"
}

for kind in "${kinds[@]}"; do
    [ "$kind" = sdist ] || describe "$kind" >/dev/null # exits on an unknown kind, before any build
done
for kind in "${kinds[@]}"; do
    if [ "$kind" = sdist ]; then
        build_sdist
    else
        build_wheel "$kind"
    fi
done
step "done"
ls -l "$out"
