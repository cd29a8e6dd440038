"""WhatsApp crypt15: interop both ways with wa-crypt-tools, the tamper matrix, keys, the CLI.

wa-crypt-tools (GPLv3, from PyPI) is only run, never copied: its console scripts as
subprocesses, and its key and header parsers plus pycryptodomex's AES-GCM (``decrypt_and_verify``,
strict, where wa-crypt-tools' own decrypt merely logs a bad tag) as an independent reader.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import e2ebackup
import pytest
from e2ebackup import whatsapp
from e2ebackup.errors import (
    InvalidArgument,
    InvalidTag,
    WhatsAppCorruptedError,
    WhatsAppFormatError,
    WhatsAppTruncatedError,
)
from e2ebackup.keys import format_hex_key

wct = pytest.importorskip("wa_crypt_tools")
from Cryptodome.Cipher import AES  # noqa: E402 - installed with wa-crypt-tools
from wa_crypt_tools.lib.db.dbfactory import DatabaseFactory  # type: ignore[import-untyped]  # noqa: E402
from wa_crypt_tools.lib.key.key15 import Key15  # type: ignore[import-untyped]  # noqa: E402

ROOT_HEX = "5c0b6c7e8e1d2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80912a3b"
ROOT = bytes.fromhex(ROOT_HEX)


def run_tool(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One of wa-crypt-tools' console scripts, as a subprocess."""
    r = subprocess.run(
        [sys.executable, "-m", f"wa_crypt_tools.{module}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r


def run_cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if k != whatsapp.KEY_ENV}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "e2ebackup", *args],
        input=stdin,
        capture_output=True,
        check=False,
        env=full_env,
    )


def make_database(path: Path, rows: int = 3000, seed: int = 1) -> bytes:
    """A small SQLite database with message-like rows."""
    rng = random.Random(seed)
    words = ["hi", "ok", "see", "you", "at", "the", "station", "tomorrow", "🙂", "lunch?"]
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE message(_id INTEGER PRIMARY KEY, key_id TEXT, ts INT, text TEXT)")
    con.executemany(
        "INSERT INTO message VALUES(?,?,?,?)",
        [
            (
                i,
                f"{rng.getrandbits(64):016X}",
                1_700_000_000 + i * 37,
                " ".join(rng.choices(words, k=12)),
            )
            for i in range(rows)
        ],
    )
    con.commit()
    con.close()
    return path.read_bytes()


@pytest.fixture(scope="module")
def tool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with wa-crypt-tools' key file for ROOT and a backup it wrote."""
    d = tmp_path_factory.mktemp("wct")
    run_tool("wacreatekey", "--hex", ROOT_HEX, cwd=d)
    assert (d / "encrypted_backup.key").stat().st_size == 59
    make_database(d / "msgstore.db")
    run_tool("waencrypt", "encrypted_backup.key", "msgstore.db", "msgstore.db.crypt15", cwd=d)
    return d


def strict_tool_decrypt(path: Path, root: bytes = ROOT) -> bytes:
    """wa-crypt-tools' header parser and key derivation, pycryptodomex's strict GCM, the MD5."""
    data = path.read_bytes()
    with path.open("rb") as f:
        reader = io.BufferedReader(f)
        db = DatabaseFactory.from_file(reader)
        header_len = reader.tell()
    iv = db.get_iv()
    body, tag, checksum = data[header_len:-32], data[-32:-16], data[-16:]
    assert hashlib.md5(data[:-16]).digest() == checksum
    cipher = AES.new(Key15(keyarray=root).get(), AES.MODE_GCM, iv)
    return zlib.decompress(cipher.decrypt_and_verify(body, tag))


# --- interop -------------------------------------------------------------------------------


def test_decrypts_what_wa_crypt_tools_writes(tool_dir: Path, tmp_path: Path) -> None:
    expected = (tool_dir / "msgstore.db").read_bytes()
    src = tool_dir / "msgstore.db.crypt15"
    # The key as the 59-byte key file, as the 64 digits, and as a file holding the digits.
    (tmp_path / "digits.txt").write_text(format_hex_key(ROOT) + "\n")
    for key in (
        tool_dir / "encrypted_backup.key",
        ROOT_HEX,
        format_hex_key(ROOT).upper(),
        tmp_path / "digits.txt",
        whatsapp.WhatsAppKey("crypt15", ROOT),
    ):
        out = tmp_path / "out.db"
        result = whatsapp.decrypt_crypt15(src, out, key)
        assert out.read_bytes() == expected
        assert (result.layout, result.payload, result.info.version) == (
            "single-file",
            "zlib",
            "crypt15",
        )
        assert out.stat().st_mode & 0o777 == 0o600
    # A readable database.
    con = sqlite3.connect(tmp_path / "out.db")
    assert con.execute("SELECT count(*) FROM message").fetchone() == (3000,)
    con.close()


def test_raw_payload_is_the_zlib_stream(tool_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "payload.zlib"
    result = whatsapp.decrypt_crypt15(tool_dir / "msgstore.db.crypt15", out, ROOT, decompress=False)
    assert result.payload == "raw"
    assert zlib.decompress(out.read_bytes()) == (tool_dir / "msgstore.db").read_bytes()


def test_wa_crypt_tools_decrypts_what_we_write(tool_dir: Path, tmp_path: Path) -> None:
    db = make_database(tmp_path / "msgstore.db", rows=5000, seed=2)
    ours = tmp_path / "ours.crypt15"
    info = whatsapp.encrypt_crypt15(tmp_path / "msgstore.db", ours, ROOT_HEX)
    assert info.version == "crypt15"
    assert info.file_size == ours.stat().st_size
    # Strictly, through wa-crypt-tools' parser and key derivation.
    assert strict_tool_decrypt(ours) == db
    # And with its command line, given its own key file and given the hex digits.
    for key_arg in (str(tool_dir / "encrypted_backup.key"), ROOT_HEX):
        out = tmp_path / "tool-out.db"
        r = run_tool("wadecrypt", key_arg, str(ours), str(out), cwd=tmp_path)
        assert "mismatch" not in r.stderr.lower()
        assert "[E]" not in r.stderr
        assert out.read_bytes() == db
    # Our encrypted_backup.key form is the tool's, byte for byte.
    key_file = whatsapp.key_file_bytes(whatsapp.load_key(ROOT_HEX))
    assert key_file == (tool_dir / "encrypted_backup.key").read_bytes()


def test_reference_copies_the_prefix_info(tool_dir: Path, tmp_path: Path) -> None:
    db = make_database(tmp_path / "m.db", rows=10)
    whatsapp.encrypt_crypt15(
        tmp_path / "m.db", tmp_path / "ref.crypt15", ROOT, jid_suffix="42", app_version="2.24.9.1"
    )
    ref = whatsapp.read_crypt15_info(tmp_path / "ref.crypt15")
    assert (ref.jid_suffix, ref.app_version) == ("42", "2.24.9.1")
    out = tmp_path / "copy.crypt15"
    info = whatsapp.encrypt_crypt15(
        tmp_path / "m.db", out, ROOT, reference=tmp_path / "ref.crypt15"
    )
    assert info.info_raw == ref.info_raw
    assert info.iv != ref.iv
    assert strict_tool_decrypt(out) == db
    with pytest.raises(InvalidArgument):
        whatsapp.encrypt_crypt15(tmp_path / "m.db", out, ROOT, reference=out, jid_suffix="1")


def test_crypt14_with_the_legacy_key_file(tool_dir: Path, tmp_path: Path) -> None:
    run_tool("wacreatekey", "-c14", cwd=tmp_path)
    make_database(tmp_path / "m.db", rows=100)
    run_tool("waencrypt", "--type", "14", "key", "m.db", "m.crypt14", cwd=tmp_path)
    key = whatsapp.load_key(tmp_path / "key")
    assert key.kind == "crypt14"
    result = whatsapp.decrypt_crypt15(tmp_path / "m.crypt14", tmp_path / "out.db", key)
    assert result.info.version == "crypt14"
    assert result.info.crypt14 is not None
    assert (tmp_path / "out.db").read_bytes() == (tmp_path / "m.db").read_bytes()
    # The wrong kind of key is explained, not just "wrong key".
    with pytest.raises(InvalidTag, match="crypt14"):
        whatsapp.decrypt_crypt15(tmp_path / "m.crypt14", tmp_path / "x.db", ROOT)
    with pytest.raises(InvalidTag, match="64-digit"):
        whatsapp.decrypt_crypt15(tool_dir / "msgstore.db.crypt15", tmp_path / "x.db", key)
    assert not (tmp_path / "x.db").exists()


def _multi_file(tmp_path: Path, zip_bytes: bytes) -> Path:
    """A multi-file backup built independently: the tool's prefix format, pycryptodomex's
    GCM, no MD5 trailer."""
    iv = bytes(range(16))
    prefix = b"\x08\x01\x1a\x12\x0a\x10" + iv  # key_type=1, c15_iv { IV }
    cipher = AES.new(Key15(keyarray=ROOT).get(), AES.MODE_GCM, iv)
    ct, tag = cipher.encrypt_and_digest(zip_bytes)
    path = tmp_path / "stickers.zip.crypt15"
    path.write_bytes(bytes([len(prefix)]) + prefix + ct + tag)
    return path


def test_multi_file_backups_have_no_checksum(tmp_path: Path) -> None:
    zip_bytes = b"PK\x03\x04" + os.urandom(50_000)
    src = _multi_file(tmp_path, zip_bytes)
    result = whatsapp.decrypt_crypt15(src, tmp_path / "out.zip", ROOT)
    assert (result.layout, result.payload) == ("multi-file", "zip")
    assert (tmp_path / "out.zip").read_bytes() == zip_bytes
    assert whatsapp.read_crypt15_info(src, check=True).checksum is False
    # Ours, read back by the same independent construction.
    (tmp_path / "in.zip").write_bytes(zip_bytes)
    ours = tmp_path / "ours.crypt15"
    info = whatsapp.encrypt_crypt15(tmp_path / "in.zip", ours, ROOT, multi_file=True)
    data = ours.read_bytes()
    cipher = AES.new(Key15(keyarray=ROOT).get(), AES.MODE_GCM, info.iv)
    body = data[info.header_length : -16]
    assert cipher.decrypt_and_verify(body, data[-16:]) == zip_bytes
    with pytest.raises(WhatsAppCorruptedError, match="multi-file backup and the key is wrong"):
        whatsapp.decrypt_crypt15(src, tmp_path / "x", bytes(32))
    assert not (tmp_path / "x").exists()


def test_unknown_prefix_fields_are_tolerated(tool_dir: Path, tmp_path: Path) -> None:
    data = (tool_dir / "msgstore.db.crypt15").read_bytes()
    info = whatsapp.read_crypt15_info(tool_dir / "msgstore.db.crypt15")
    start = info.header_length - 133  # wa-crypt-tools writes [0x85, 0x01]: 133 bytes
    prefix = data[start : info.header_length]
    prefix += b"\x30\x02"  # field 6 (a newer key type) = 2
    prefix += b"\xba\x01\x05later"  # field 23, bytes
    framed = bytes([len(prefix) & 0x7F | 0x80, len(prefix) >> 7]) + prefix
    body = framed + data[info.header_length : -16]
    path = tmp_path / "newer.crypt15"
    path.write_bytes(body + hashlib.md5(body).digest())
    result = whatsapp.decrypt_crypt15(path, tmp_path / "out.db", ROOT)
    assert (tmp_path / "out.db").read_bytes() == (tool_dir / "msgstore.db").read_bytes()
    assert result.info.key_type_v2 == 2
    assert result.info.unknown_fields == (23,)


# --- tamper matrix --------------------------------------------------------------------------


@pytest.fixture
def backup(tool_dir: Path, tmp_path: Path) -> tuple[Path, bytes, int]:
    data = (tool_dir / "msgstore.db.crypt15").read_bytes()
    header = whatsapp.read_crypt15_info(tool_dir / "msgstore.db.crypt15").header_length
    return tmp_path, data, header


def _attempt(folder: Path, data: bytes, key: Any = ROOT) -> None:
    src = folder / "in.crypt15"
    src.write_bytes(data)
    before = sorted(os.listdir(folder))
    try:
        whatsapp.decrypt_crypt15(src, folder / "out.db", key)
    finally:
        assert sorted(os.listdir(folder)) == before, "an output or temporary file was left"


def test_wrong_key_is_told_apart_and_leaves_nothing(backup: tuple[Path, bytes, int]) -> None:
    folder, data, _ = backup
    with pytest.raises(InvalidTag, match="wrong key") as info:
        _attempt(folder, data, bytes(32))
    assert not isinstance(info.value, WhatsAppCorruptedError)
    assert ROOT_HEX not in str(info.value)


@pytest.mark.parametrize(
    ("where", "what"),
    [("iv", "prefix IV"), ("first", "ciphertext"), ("middle", "ciphertext"), ("tag", "tag")],
)
def test_flipped_bits_are_corruption(
    backup: tuple[Path, bytes, int], where: str, what: str
) -> None:
    folder, data, header = backup
    pos = {"iv": header - 140, "first": header, "middle": len(data) // 2, "tag": len(data) - 20}
    pos["iv"] = data.index(b"\x1a\x12\x0a\x10") + 8  # inside the 16-byte IV
    bad = bytearray(data)
    bad[pos[where]] ^= 0x04
    with pytest.raises(WhatsAppCorruptedError, match="corrupted"):
        _attempt(folder, bytes(bad))


def test_bad_md5_is_corruption(backup: tuple[Path, bytes, int]) -> None:
    folder, data, _ = backup
    bad = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(WhatsAppCorruptedError, match="MD5 checksum does not match"):
        _attempt(folder, bad)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.99, -17, -1])
def test_truncation_says_so(backup: tuple[Path, bytes, int], keep: float) -> None:
    folder, data, _ = backup
    cut = int(len(data) * keep) if keep > 0 else len(data) + int(keep)
    with pytest.raises(WhatsAppTruncatedError, match="truncated"):
        _attempt(folder, data[:cut])


def test_truncated_header_and_garbage(backup: tuple[Path, bytes, int]) -> None:
    folder, data, _ = backup
    with pytest.raises(WhatsAppTruncatedError, match="header"):
        _attempt(folder, data[:60])
    for junk in (b"", b"SQLite format 3\x00" + bytes(2000), os.urandom(5000)[:1] + b"\xff" * 999):
        with pytest.raises(WhatsAppFormatError, match=r"not a WhatsApp|empty"):
            _attempt(folder, junk)
    # An e2ebackup file is not a WhatsApp backup either.
    with pytest.raises(WhatsAppFormatError):
        _attempt(folder, e2ebackup.encrypt(e2ebackup.generate_key(), b"x" * 100))


def test_file_objects_in_and_out(tool_dir: Path) -> None:
    src = io.BytesIO((tool_dir / "msgstore.db.crypt15").read_bytes())
    out = io.BytesIO()
    whatsapp.decrypt_crypt15(src, out, ROOT)
    assert out.getvalue() == (tool_dir / "msgstore.db").read_bytes()
    # On failure a file object destination receives nothing.
    out = io.BytesIO()
    with pytest.raises(InvalidTag):
        whatsapp.decrypt_crypt15(
            io.BytesIO((tool_dir / "msgstore.db.crypt15").read_bytes()), out, bytes(32)
        )
    assert out.getvalue() == b""
    enc = io.BytesIO()
    whatsapp.encrypt_crypt15(io.BytesIO(b"SQLite format 3\x00" + bytes(5000)), enc, ROOT)
    back = io.BytesIO()
    whatsapp.decrypt_crypt15(io.BytesIO(enc.getvalue()), back, ROOT)
    assert back.getvalue() == b"SQLite format 3\x00" + bytes(5000)


def test_exceptions_from_callbacks_propagate(tool_dir: Path, tmp_path: Path) -> None:
    def boom(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        whatsapp.decrypt_crypt15(
            tool_dir / "msgstore.db.crypt15", tmp_path / "o.db", ROOT, progress=boom
        )
    assert os.listdir(tmp_path) == []


# --- keys -----------------------------------------------------------------------------------


def test_keys_parse_in_every_form_and_never_show(tool_dir: Path) -> None:
    from_file = whatsapp.load_key(tool_dir / "encrypted_backup.key")
    assert from_file == whatsapp.parse_key(ROOT_HEX) == whatsapp.parse_key(ROOT)
    assert whatsapp.parse_key(ROOT_HEX.encode() + b"\n") == from_file
    assert from_file.hex() == ROOT_HEX
    for text in (repr(from_file), str(from_file)):
        assert ROOT_HEX not in text
        assert ROOT_HEX[:16] not in text
    with pytest.raises(InvalidArgument) as err:
        whatsapp.load_key(ROOT_HEX[:-1])  # a typo: neither a file nor 64 digits
    assert ROOT_HEX[:-1] not in str(err.value)
    with pytest.raises(WhatsAppFormatError, match="not a WhatsApp key file"):
        whatsapp.parse_key(bytes(range(200, 240)))
    truncated = (tool_dir / "encrypted_backup.key").read_bytes()[:-1]
    with pytest.raises(WhatsAppFormatError, match="Java byte array"):
        whatsapp.parse_key(truncated)


# --- command line ---------------------------------------------------------------------------


def test_cli_decrypt_with_key_file_env_and_stdin(tool_dir: Path, tmp_path: Path) -> None:
    src, expected = str(tool_dir / "msgstore.db.crypt15"), (tool_dir / "msgstore.db").read_bytes()
    key_file = str(tool_dir / "encrypted_backup.key")
    cases = [
        ([key_file], b"", {}),
        (["-"], b"", {whatsapp.KEY_ENV: format_hex_key(ROOT)}),
        (["-"], ROOT_HEX.encode() + b"\n", {}),
        (["-"], (tool_dir / "encrypted_backup.key").read_bytes(), {}),
    ]
    for i, (key_args, stdin, env) in enumerate(cases):
        out = tmp_path / f"out{i}.db"
        r = run_cli("whatsapp", "decrypt", *key_args, src, str(out), stdin=stdin, env=env)
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == expected
        assert ROOT_HEX.encode() not in r.stderr + r.stdout
    r = run_cli("whatsapp", "decrypt", key_file, src, str(tmp_path / "out0.db"))
    assert r.returncode == 3
    assert b"--force" in r.stderr


def test_cli_failures_exit_1_and_leave_nothing(tool_dir: Path, tmp_path: Path) -> None:
    src = str(tool_dir / "msgstore.db.crypt15")
    (tmp_path / "other.key").write_text("00" * 32)
    (tmp_path / "junk").write_bytes(b"hello, this is not a backup" * 10)
    r = run_cli("whatsapp", "decrypt", str(tmp_path / "other.key"), src, str(tmp_path / "o.db"))
    assert r.returncode == 1
    assert b"wrong key" in r.stderr
    r = run_cli(
        "whatsapp",
        "decrypt",
        str(tmp_path / "other.key"),
        str(tmp_path / "junk"),
        str(tmp_path / "o.db"),
    )
    assert r.returncode == 1
    assert b"not a WhatsApp" in r.stderr
    r = run_cli("whatsapp", "decrypt", "-", src, str(tmp_path / "o.db"), stdin=b"12 34")
    assert r.returncode == 2
    assert b"64 hex digits" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["junk", "other.key"]


def test_cli_encrypt_info_and_import(tool_dir: Path, tmp_path: Path) -> None:
    key_file = str(tool_dir / "encrypted_backup.key")
    db = make_database(tmp_path / "m.db", rows=200)
    out = tmp_path / "m.db.crypt15"
    r = run_cli(
        "whatsapp", "encrypt", key_file, str(tmp_path / "m.db"), str(out), "--jid-suffix", "07"
    )
    assert r.returncode == 0, r.stderr
    assert strict_tool_decrypt(out) == db
    r = run_cli("whatsapp", "info", "--check", str(out))
    assert r.returncode == 0
    assert b"phone ends in:  07" in r.stdout
    assert b"checksum:       ok" in r.stdout
    r = run_cli("whatsapp", "info", "--json", str(out))

    shown = json.loads(r.stdout)
    assert shown["version"] == "crypt15"
    assert shown["jid_suffix"] == "07"
    assert ROOT_HEX not in r.stdout.decode()
    # import: WhatsApp backup -> e2ebackup file, then the ordinary e2ebackup decrypt.
    assert run_cli("keygen", "-o", str(tmp_path / "e2e.key")).returncode == 0
    r = run_cli(
        "whatsapp",
        "import",
        key_file,
        str(out),
        str(tmp_path / "m.e2e"),
        "-k",
        str(tmp_path / "e2e.key"),
    )
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "decrypt",
        "-k",
        str(tmp_path / "e2e.key"),
        str(tmp_path / "m.e2e"),
        str(tmp_path / "back.db"),
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.db").read_bytes() == db
    # A failed import leaves nothing.
    (tmp_path / "wrong.key").write_text("11" * 32)
    r = run_cli(
        "whatsapp",
        "import",
        str(tmp_path / "wrong.key"),
        str(out),
        str(tmp_path / "x.e2e"),
        "-k",
        str(tmp_path / "e2e.key"),
    )
    assert r.returncode == 1
    assert not (tmp_path / "x.e2e").exists()
