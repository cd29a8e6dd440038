"""KDFs against independent implementations, recovery keys, passwords, calibration."""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
from pathlib import Path

import pytest
from argon2.low_level import Type, hash_secret_raw
from e2ebackup import _core
from e2ebackup.errors import InvalidArgument, KdfLimitExceeded
from e2ebackup.keys import Argon2idParams, RecoveryKey, ScryptParams, calibrate, normalize_password
from helpers import runs_without_the_gil
from hypothesis import given, settings, strategies as st


@settings(max_examples=15, deadline=None)
@given(
    password=st.binary(max_size=64),
    salt=st.binary(min_size=16, max_size=64),
    m=st.integers(32, 2048),
    t=st.integers(1, 3),
    p=st.integers(1, 4),
)
def test_argon2id_equals_argon2_cffi(password: bytes, salt: bytes, m: int, t: int, p: int) -> None:
    m = max(m, 8 * p)
    ours = _core.argon2id(password, salt, memory_kib=m, iterations=t, parallelism=p)
    assert ours == hash_secret_raw(password, salt, t, m, p, 32, Type.ID)


def test_argon2id_default_parameters_equal_argon2_cffi() -> None:
    salt = os.urandom(16)
    assert Argon2idParams().derive(b"pw", salt) == hash_secret_raw(
        b"pw", salt, 3, 65536, 4, 32, Type.ID
    )


@settings(max_examples=15, deadline=None)
@given(password=st.binary(max_size=64), salt=st.binary(max_size=64), n=st.integers(1, 12))
def test_scrypt_equals_hashlib(password: bytes, salt: bytes, n: int) -> None:
    ours = _core.scrypt(password, salt, log2_n=n, r=8, p=1)
    assert ours == hashlib.scrypt(password, salt=salt, n=2**n, r=8, p=1, dklen=32)


def test_rfc_vectors() -> None:
    rfc9106 = _core.argon2id(
        b"\x01" * 32,
        b"\x02" * 16,
        memory_kib=32,
        iterations=3,
        parallelism=4,
        secret=b"\x03" * 8,
        associated_data=b"\x04" * 12,
    )
    assert rfc9106.hex() == "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
    rfc7914 = _core.scrypt(b"pleaseletmein", b"SodiumChloride", log2_n=14, r=8, p=1, length=64)
    assert rfc7914.hex().startswith(
        "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_kib": 64 * 1024 * 1024},
        {"iterations": 10**9},
        {"parallelism": 1000},
        {"memory_kib": -1},
        {"length": 4},
    ],
)
def test_argon2_limits(kwargs: dict[str, int]) -> None:
    with pytest.raises((KdfLimitExceeded, InvalidArgument)):
        _core.argon2id(b"pw", b"s" * 16, **kwargs)  # type: ignore[arg-type]


def test_scrypt_limits() -> None:
    with pytest.raises(KdfLimitExceeded, match="memory"):
        _core.scrypt(b"pw", b"s" * 16, log2_n=22, r=32)
    with pytest.raises(KdfLimitExceeded):
        _core.scrypt(b"pw", b"s" * 16, log2_n=40)


def test_two_derivations_run_in_parallel_without_the_gil() -> None:
    assert runs_without_the_gil(lambda: _core.argon2id(b"pw", b"s" * 16))


def test_recovery_keys_look_like_whatsapps_and_stay_hidden(tmp_path: Path) -> None:
    rk = RecoveryKey.generate()
    digits = rk.reveal()
    groups = digits.split()
    assert len(groups) == 16
    assert all(len(g) == 4 for g in groups)
    assert RecoveryKey.parse(digits.upper().replace(" ", "-")) == rk
    assert RecoveryKey.parse("\n".join(groups)) == rk
    assert RecoveryKey.generate() != rk
    for text in (repr(rk), str(rk), f"{rk}"):
        assert groups[0] not in text
        assert "hidden" in text
    with pytest.raises(InvalidArgument, match="found 60"):
        RecoveryKey.parse(digits[:-5])
    with pytest.raises(InvalidArgument, match="'z' at position 1"):
        RecoveryKey.parse("z" + digits[1:])
    assert "█" in rk.qr_terminal() or "▀" in rk.qr_terminal()
    rk.save_qr(tmp_path / "key.png")
    rk.save_qr(tmp_path / "key.svg")
    assert (tmp_path / "key.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "key.svg").read_bytes()
    with pytest.raises(InvalidArgument, match=r"\.png or \.svg"):
        rk.save_qr(tmp_path / "key.gif")


def test_a_qr_code_of_a_recovery_key_is_never_readable_by_others(tmp_path: Path) -> None:
    """The picture opens the data as the key does: 0600 whatever the umask, no temp left."""
    old_umask = os.umask(0o022)
    try:
        RecoveryKey.generate().save_qr(tmp_path / "key.png")
        RecoveryKey.generate().save_qr(tmp_path / "key.svg")
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.png", "key.svg"]
    for name in ("key.png", "key.svg"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_passwords_are_nfc_normalised() -> None:
    composed = unicodedata.normalize("NFC", "café")
    decomposed = unicodedata.normalize("NFD", "café")
    assert composed != decomposed
    assert normalize_password(composed) == normalize_password(decomposed)
    assert normalize_password(decomposed.encode()) == composed.encode()
    assert normalize_password(b"\xff\xfe") == b"\xff\xfe"
    with pytest.raises(InvalidArgument):
        normalize_password("")
    with pytest.raises(TypeError):
        normalize_password(123)  # type: ignore[arg-type]


def test_calibrate_never_goes_below_the_defaults() -> None:
    a = calibrate(0.001)
    assert isinstance(a, Argon2idParams)
    assert (a.memory_kib, a.iterations, a.parallelism) >= (65536, 3, 4)
    s = calibrate(0.001, kdf="scrypt")
    assert isinstance(s, ScryptParams)
    assert s.log2_n >= 17
    with pytest.raises(InvalidArgument):
        calibrate(0)
