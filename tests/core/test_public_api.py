"""The public API as a new user meets it: help() on every public name, open() typed per mode,
pathlib paths everywhere, and InvalidTag caught by code written for cryptography's Cobblestone."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import cryptography.exceptions
import e2ebackup
import pytest
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from e2ebackup import EncryptedReader, EncryptedWriter, errors
from e2ebackup.repo import backup, restore
from repo_helpers import new_repo


def documentation(obj: object) -> str:
    return inspect.getdoc(obj) or ""


@pytest.mark.parametrize("name", e2ebackup.__all__)
def test_help_is_useful_on_every_public_name(name: str) -> None:
    obj = getattr(e2ebackup, name)
    if isinstance(obj, int):
        # Constants carry int's docstring; the package's own says what each one is.
        assert f"``{name}``" in documentation(e2ebackup)
        return
    doc = documentation(obj)
    assert len(doc) >= 40, f"{name}: {doc!r}"
    if not isinstance(obj, types.ModuleType):
        assert doc != documentation(type(obj)), name


@pytest.mark.parametrize("cls", [e2ebackup.Encryptor, e2ebackup.Decryptor])
@pytest.mark.parametrize("method", ["update", "update_into", "update_length", "finalize"])
def test_streaming_methods_are_documented(cls: type, method: str) -> None:
    assert len(documentation(getattr(cls, method))) >= 40


@pytest.mark.parametrize(
    ("function", "parameters"),
    [
        (e2ebackup.encrypt, ["key", "data", "context", "algorithm", "threads"]),
        (e2ebackup.decrypt, ["key", "data", "context", "algorithm", "threads"]),
        (e2ebackup.encrypt_into, ["key", "data", "out", "context", "algorithm", "threads"]),
        (e2ebackup.decrypt_into, ["key", "data", "out", "context", "algorithm", "threads"]),
        (e2ebackup.Encryptor.update_into, ["self", "data", "buf"]),
        (e2ebackup.open, ["file", "mode", "key", "context", "algorithm", "threads"]),
    ],
)
def test_signatures_are_visible_to_help(function: object, parameters: list[str]) -> None:
    assert list(inspect.signature(function).parameters) == parameters  # type: ignore[arg-type]


def test_one_shot_docs_name_the_errors_and_sizes() -> None:
    assert "InvalidTag" in documentation(e2ebackup.decrypt)
    assert "ciphertext_length" in documentation(e2ebackup.encrypt_into)
    assert "plaintext_length" in documentation(e2ebackup.decrypt_into)
    assert "InvalidTag" in documentation(e2ebackup.Decryptor.finalize)


def test_open_is_typed_per_mode(tmp_path: Path) -> None:
    returns = [o.__annotations__["return"] for o in typing.get_overloads(e2ebackup.open)]
    assert returns == ["EncryptedReader", "EncryptedWriter"]
    key = e2ebackup.generate_key()
    # mypy --strict checks these annotations against the overloads.
    writer: EncryptedWriter = e2ebackup.open(tmp_path / "f.e2e", "wb", key=key)
    with writer:
        writer.write(b"typed")
    reader: EncryptedReader = e2ebackup.open(tmp_path / "f.e2e", "rb", key=key)
    with reader:
        assert reader.read() == b"typed"
    default: EncryptedReader = e2ebackup.open(tmp_path / "f.e2e", key=key)
    default.close()


def test_pathlib_paths_are_accepted_everywhere(tmp_path: Path) -> None:
    key = e2ebackup.generate_key()
    source = tmp_path / "source"
    source.mkdir()
    (source / "data.bin").write_bytes(os.urandom(50_000))
    encrypted, decrypted = tmp_path / "data.e2e", tmp_path / "data.out"
    e2ebackup.encrypt_file(source / "data.bin", encrypted, key)
    e2ebackup.decrypt_file(encrypted, decrypted, key)
    assert decrypted.read_bytes() == (source / "data.bin").read_bytes()
    with e2ebackup.open(tmp_path / "x.e2e", "xb", key=key) as f:
        f.write(b"exclusive")
    with pytest.raises(FileExistsError):
        e2ebackup.open(tmp_path / "x.e2e", "xb", key=key)

    repo = new_repo(tmp_path / "repo")
    backup(repo, [source])
    restore(repo, "latest", tmp_path / "restored")
    (restored,) = (tmp_path / "restored").rglob("data.bin")
    assert restored.read_bytes() == (source / "data.bin").read_bytes()


def test_invalid_tag_is_caught_by_cobblestone_code() -> None:
    """Code written for Cobblestone, switched to e2ebackup, unchanged otherwise."""
    key = e2ebackup.generate_key()
    encryptor = Cobblestone256Encryptor(key, b"app")
    message = bytearray(encryptor.update(b"x" * 100_000) + encryptor.finalize())
    message[5000] ^= 0x01

    def restore_database(ciphertext: bytes) -> str:
        try:
            e2ebackup.decrypt(key, ciphertext, context=b"app")
        except cryptography.exceptions.InvalidTag:
            return "tampered"
        return "restored"

    assert restore_database(bytes(message)) == "tampered"

    decryptor = e2ebackup.Decryptor(key, b"app")
    with pytest.raises(cryptography.exceptions.InvalidTag) as caught:
        decryptor.update(bytes(message))
    assert isinstance(caught.value, errors.InvalidTag)
    assert isinstance(caught.value, errors.E2EBackupError)
    # And the other way round: Cobblestone's own error is not mistaken for ours.
    cobblestone = Cobblestone256Decryptor(key, b"app")
    with pytest.raises(cryptography.exceptions.InvalidTag) as theirs:
        cobblestone.update(bytes(message))
    assert not isinstance(theirs.value, errors.E2EBackupError)


def test_already_finalized_is_caught_by_cobblestone_code() -> None:
    """A context used after finalize() raises what Cobblestone code already catches."""
    key = e2ebackup.generate_key()
    encryptor = e2ebackup.Encryptor(key, b"app")
    message = encryptor.update(b"x" * 1000) + encryptor.finalize()
    decryptor = e2ebackup.Decryptor(key, b"app")
    assert decryptor.update(message) + decryptor.finalize() == b"x" * 1000
    for finished in (encryptor, decryptor):
        with pytest.raises(cryptography.exceptions.AlreadyFinalized) as caught:
            finished.update(b"more")
        assert isinstance(caught.value, errors.AlreadyFinalized)
        assert isinstance(caught.value, errors.E2EBackupError)
    # Cobblestone raises the same class in the same place.
    cobblestone = Cobblestone256Encryptor(key, b"app")
    cobblestone.finalize()
    with pytest.raises(cryptography.exceptions.AlreadyFinalized):
        cobblestone.update(b"more")


def test_invalid_tag_without_cryptography_installed() -> None:
    """cryptography is optional: without it InvalidTag is still one E2EBackupError."""
    code = """
import sys
sys.modules["cryptography"] = None  # import cryptography now raises ImportError
import e2ebackup
from e2ebackup.errors import E2EBackupError, InvalidTag
assert InvalidTag.__mro__[1:] == (E2EBackupError, Exception, BaseException, object)
key = e2ebackup.generate_key()
try:
    e2ebackup.decrypt(key, bytes(e2ebackup.ciphertext_length(0)))
except E2EBackupError as e:
    assert type(e) is InvalidTag
else:
    raise AssertionError("decrypted garbage")
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
