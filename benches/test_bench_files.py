"""File-to-file throughput: source in the page cache, output in the same scratch directory.

Groups: ``"file encrypt"``, ``"file decrypt"`` and ``"file ceiling"`` (plain copies, no crypto:
what the page cache and the disk allow). Size from ``E2EBACKUP_BENCH_FILE_MB`` (default 256).

Before every timed call (untimed) the previous output is deleted and ``os.sync()`` flushes all
dirty pages: without it, the writeback of earlier rounds and the block discards of truncated or
replaced outputs land in random later rounds and swamp the differences being measured.

``e2ebackup.encrypt_file(path, path)`` writes a temporary file, fsyncs it and renames it (atomic,
durable output), so it is shown next to peers both without and with a final fsync:

* ``e2ebackup encrypt_file``          paths: temporary file + fsync + rename (what users call)
* ``e2ebackup encrypt_file fileobj``  already-open file objects: no temporary file, no fsync
* ``cobblestone loop``                1 MiB ``readinto`` -> ``update_into`` -> ``write``
* ``cobblestone loop+fsync``          the same, plus ``fsync`` at the end (equal durability)
* ``pyAesCrypt``                      ``encryptFile``/``decryptFile`` (AES-256-CBC + HMAC, 64 KiB
                                      buffer, password key stretching included) on at most
                                      ``SLOW_PEER_BYTES`` (32 MiB), normalised to bytes/s
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import e2ebackup
import pyAesCrypt
import pytest
from conftest import FILE_BYTES, MIB, SLOW_PEER_BYTES, random_bytes, run
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from pytest_benchmark.fixture import BenchmarkFixture

LOOP_READ = MIB  # the cobblestone loop's read size
COPY_BLOCK = MIB  # the plain copy's block size (faster here than encrypt_file's 8 MiB)
PASSWORD = "e2ebackup benchmark password"
# Round budget, in units of TARGET_SECONDS: each call here also pays an untimed os.sync().
FILE_SECONDS = 3.0


@dataclass(frozen=True)
class Files:
    directory: Path
    plain: Path  # FILE_BYTES of random data
    encrypted: Path  # plain, encrypted by e2ebackup (same bytes as cobblestone would write)
    small_plain: Path  # SLOW_PEER_BYTES prefix of plain, for pyAesCrypt
    small_aes: Path  # small_plain encrypted by pyAesCrypt
    key: bytes

    def out(self, name: str) -> Path:
        return self.directory / name


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for off in range(0, size, 64 * MIB):
            f.write(random_bytes(min(64 * MIB, size - off)))


def _warm(path: Path) -> None:
    """Reads a file once so that it is in the page cache."""
    buf = bytearray(COPY_BLOCK)
    with path.open("rb", buffering=0) as f:
        while f.readinto(buf):
            pass


@pytest.fixture(scope="session")
def files() -> Iterator[Files]:
    directory = Path(
        tempfile.mkdtemp(prefix="e2ebackup-bench-", dir=os.environ.get("E2EBACKUP_BENCH_DIR"))
    )
    try:
        key = e2ebackup.generate_key()
        plain = directory / "plain.bin"
        _write_random(plain, FILE_BYTES)
        encrypted = directory / "plain.bin.e2e"
        e2ebackup.encrypt_file(plain, encrypted, key)
        small_plain = directory / "small.bin"
        with plain.open("rb") as f:
            small_plain.write_bytes(f.read(SLOW_PEER_BYTES))
        small_aes = directory / "small.bin.aes"
        pyAesCrypt.encryptFile(str(small_plain), str(small_aes), PASSWORD)
        for path in (plain, encrypted, small_plain, small_aes):
            _warm(path)
        yield Files(directory, plain, encrypted, small_plain, small_aes, key)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _fresh(dst: Path) -> Callable[[], None]:
    """Untimed setup before every call: remove the previous output and flush dirty pages, so
    each call writes a new file from the same clean writeback state (no old file to truncate or
    discard inside the timed region, no writeback of earlier rounds competing with it)."""

    def setup() -> None:
        dst.unlink(missing_ok=True)
        os.sync()

    return setup


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x = fa.read(COPY_BLOCK)
            if x != fb.read(COPY_BLOCK):
                return False
            if not x:
                return True


def _cobblestone_loop(
    make: Callable[[], Cobblestone256Encryptor | Cobblestone256Decryptor],
    src: Path,
    dst: Path,
    *,
    fsync: bool,
) -> None:
    """The obvious streaming loop a user writes around cobblestone, 1 MiB reads."""
    ctx = make()
    inbuf = bytearray(LOOP_READ)
    outbuf = bytearray(LOOP_READ + MIB)  # room for the header and the per-chunk tags
    with src.open("rb") as fin, dst.open("wb") as fout:
        while n := fin.readinto(inbuf):
            written = ctx.update_into(memoryview(inbuf)[:n], outbuf)
            fout.write(memoryview(outbuf)[:written])
        fout.write(ctx.finalize())
        if fsync:
            fout.flush()
            os.fsync(fout.fileno())


def _copy(src: Path, dst: Path, *, fsync: bool) -> None:
    buf = bytearray(COPY_BLOCK)
    with src.open("rb") as fin, dst.open("wb") as fout:
        while n := fin.readinto(buf):
            fout.write(memoryview(buf)[:n])
        if fsync:
            fout.flush()
            os.fsync(fout.fileno())


# --- encrypt -------------------------------------------------------------------------------------


def test_e2ebackup_encrypt_file(benchmark: BenchmarkFixture, files: Files) -> None:
    dst = files.out("e2e-enc.out")

    def fn() -> int:
        return e2ebackup.encrypt_file(files.plain, dst, files.key)

    run(
        benchmark,
        fn,
        group="file encrypt",
        case="e2ebackup encrypt_file",
        nbytes=FILE_BYTES,
        setup=_fresh(dst),
        seconds=FILE_SECONDS,
    )
    assert dst.stat().st_size == files.encrypted.stat().st_size
    e2ebackup.decrypt_file(dst, files.out("check"), files.key)
    assert _same_content(files.out("check"), files.plain)
    for path in (dst, files.out("check")):
        path.unlink()


def test_e2ebackup_encrypt_file_fileobj(benchmark: BenchmarkFixture, files: Files) -> None:
    dst = files.out("e2e-enc-fileobj.out")

    def fn() -> int:
        with files.plain.open("rb") as fin, dst.open("wb") as fout:
            return e2ebackup.encrypt_file(fin, fout, files.key)

    run(
        benchmark,
        fn,
        group="file encrypt",
        case="e2ebackup encrypt_file fileobj",
        nbytes=FILE_BYTES,
        setup=_fresh(dst),
        seconds=FILE_SECONDS,
        note="open file objects: no temporary file, no fsync",
    )
    assert e2ebackup.plaintext_length(dst.stat().st_size) == FILE_BYTES
    dst.unlink()


@pytest.mark.parametrize("fsync", [False, True], ids=["nofsync", "fsync"])
def test_cobblestone_loop_encrypt(benchmark: BenchmarkFixture, files: Files, fsync: bool) -> None:
    dst = files.out("cob-enc.out")

    def fn() -> None:
        _cobblestone_loop(
            lambda: Cobblestone256Encryptor(files.key, b""), files.plain, dst, fsync=fsync
        )

    run(
        benchmark,
        fn,
        group="file encrypt",
        case="cobblestone loop+fsync" if fsync else "cobblestone loop",
        nbytes=FILE_BYTES,
        setup=_fresh(dst),
        seconds=FILE_SECONDS,
    )
    e2ebackup.decrypt_file(dst, files.out("check"), files.key)
    assert _same_content(files.out("check"), files.plain)
    for path in (dst, files.out("check")):
        path.unlink()


def test_pyaescrypt_encrypt(benchmark: BenchmarkFixture, files: Files) -> None:
    dst = files.out("pyaes-enc.out")
    nbytes = files.small_plain.stat().st_size

    def fn() -> None:
        pyAesCrypt.encryptFile(str(files.small_plain), str(dst), PASSWORD)

    run(
        benchmark,
        fn,
        group="file encrypt",
        case="pyAesCrypt",
        nbytes=nbytes,
        setup=_fresh(dst),
        seconds=FILE_SECONDS,
        note=f"on {nbytes >> 20} MiB, normalised",
    )
    assert dst.stat().st_size > nbytes
    dst.unlink()


# --- decrypt -------------------------------------------------------------------------------------


def test_e2ebackup_decrypt_file(benchmark: BenchmarkFixture, files: Files) -> None:
    dst = files.out("e2e-dec.out")

    def fn() -> int:
        return e2ebackup.decrypt_file(files.encrypted, dst, files.key)

    run(
        benchmark,
        fn,
        group="file decrypt",
        case="e2ebackup decrypt_file",
        nbytes=FILE_BYTES,
        setup=_fresh(dst),
        seconds=FILE_SECONDS,
    )
    assert _same_content(dst, files.plain)
    dst.unlink()


def test_e2ebackup_decrypt_file_fileobj(benchmark: BenchmarkFixture, files: Files) -> None:
    dst = files.out("e2e-dec-fileobj.out")

    def fn() -> int:
        with files.encrypted.open("rb") as fin, dst.open("wb") as fout:
            return e2ebackup.decrypt_file(fin, fout, files.key)

    run(
        benchmark,
        fn,
        group="file decrypt",
        case="e2ebackup decrypt_file fileobj",
        nbytes=FILE_BYTES,
        setup=_fresh(dst),
        seconds=FILE_SECONDS,
        note="open file objects: no temporary file, no fsync",
    )
    assert _same_content(dst, files.plain)
    dst.unlink()


@pytest.mark.parametrize("fsync", [False, True], ids=["nofsync", "fsync"])
def test_cobblestone_loop_decrypt(benchmark: BenchmarkFixture, files: Files, fsync: bool) -> None:
    dst = files.out("cob-dec.out")

    def fn() -> None:
        _cobblestone_loop(
            lambda: Cobblestone256Decryptor(files.key, b""), files.encrypted, dst, fsync=fsync
        )

    run(
        benchmark,
        fn,
        group="file decrypt",
        case="cobblestone loop+fsync" if fsync else "cobblestone loop",
        nbytes=FILE_BYTES,
        setup=_fresh(dst),
        seconds=FILE_SECONDS,
    )
    assert _same_content(dst, files.plain)
    dst.unlink()


def test_pyaescrypt_decrypt(benchmark: BenchmarkFixture, files: Files) -> None:
    dst = files.out("pyaes-dec.out")
    nbytes = files.small_plain.stat().st_size

    def fn() -> None:
        pyAesCrypt.decryptFile(str(files.small_aes), str(dst), PASSWORD)

    run(
        benchmark,
        fn,
        group="file decrypt",
        case="pyAesCrypt",
        nbytes=nbytes,
        setup=_fresh(dst),
        seconds=FILE_SECONDS,
        note=f"on {nbytes >> 20} MiB, normalised",
    )
    assert _same_content(dst, files.small_plain)
    dst.unlink()


# --- ceiling: the same file copied without any crypto --------------------------------------------


@pytest.mark.parametrize("fsync", [False, True], ids=["nofsync", "fsync"])
def test_copy(benchmark: BenchmarkFixture, files: Files, fsync: bool) -> None:
    dst = files.out("copy.out")

    def fn() -> None:
        _copy(files.plain, dst, fsync=fsync)

    run(
        benchmark,
        fn,
        group="file ceiling",
        case="copy+fsync" if fsync else "copy",
        nbytes=FILE_BYTES,
        setup=_fresh(dst),
        seconds=FILE_SECONDS,
        note="1 MiB readinto/write, no crypto",
    )
    assert _same_content(dst, files.plain)
    dst.unlink()
