"""tests/vectors/recipient_v1.json: recipient keys and recipient slots, made by
tools/make_recipient_vectors.py from the independent reference (tests/reference/recipient.py).
e2ebackup must derive the same keys, encapsulate the same bytes from the same randomness, open
every valid file to its plaintext and refuse every invalid one with the named error; the
reference must open what e2ebackup writes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2ebackup import _core, errors, sealed
from e2ebackup.keys import RecoveryKey
from e2ebackup.recipients import Identity, Recipient
from reference import recipient as rr

ROOT = Path(__file__).resolve().parents[2]
VECTORS: dict[str, Any] = json.loads(
    (ROOT / "tests" / "vectors" / "recipient_v1.json").read_text(encoding="utf-8")
)


def _open(blob: bytes, seed: str) -> bytes:
    out = io.BytesIO()
    sealed.unseal_file(io.BytesIO(blob), out, identity=Identity(bytes.fromhex(seed)))
    return out.getvalue()


@pytest.mark.parametrize("vector", VECTORS["keys"], ids=lambda v: v["seed"][:8])
def test_keys(vector: dict[str, Any]) -> None:
    identity = Identity(bytes.fromhex(vector["seed"]))
    assert identity.secret() == vector["identity"]
    assert Identity.parse(vector["identity"]) == identity
    assert identity.recipient.public.hex() == vector["recipient"]
    assert str(identity.recipient) == vector["recipient_text"]
    assert Recipient.parse(vector["recipient_text"]) == identity.recipient


@pytest.mark.parametrize("vector", VECTORS["encapsulations"], ids=lambda v: v["m"][:8])
def test_encapsulations(vector: dict[str, Any]) -> None:
    public, m, eph = (bytes.fromhex(vector[k]) for k in ("recipient", "m", "ephemeral"))
    enc, kek = _core._recipient_encapsulate_deterministic(public, m, eph)
    assert enc.hex() == vector["enc"]
    assert kek.hex() == vector["kek"]


@pytest.mark.parametrize("vector", VECTORS["files"], ids=lambda v: v["name"])
def test_valid_files(vector: dict[str, Any]) -> None:
    blob = bytes.fromhex(vector["file"])
    for case in vector["opens"]:
        if "plaintext" in case:
            assert _open(blob, case["identity"]).hex() == case["plaintext"]
        else:
            with pytest.raises(getattr(errors, case["error"])):
                _open(blob, case["identity"])
    for slot in vector["slots"]:
        if slot["kind"] == "recovery-key":
            out = io.BytesIO()
            key = RecoveryKey(bytes.fromhex(slot["recovery_key"]))
            sealed.unseal_file(io.BytesIO(blob), out, recovery_key=key)
            assert out.getvalue().hex() == vector["plaintext"]
        if slot["kind"] == "password":
            out = io.BytesIO()
            sealed.unseal_file(io.BytesIO(blob), out, password=slot["password"])
            assert out.getvalue().hex() == vector["plaintext"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_files(vector: dict[str, Any]) -> None:
    with pytest.raises(getattr(errors, vector["error"])):
        _open(bytes.fromhex(vector["file"]), vector["identity"])


def test_the_reference_opens_what_e2ebackup_writes() -> None:
    seeds = [bytes([i]) * 32 for i in (1, 2)]
    data = b"from e2ebackup to the reference\n" * 50
    out = io.BytesIO()
    recipients = [Identity(s).recipient for s in seeds]
    sealed.seal_file(io.BytesIO(data), out, recipients=recipients, algorithm="chacha20-poly1305")
    for s in seeds:
        assert rr.unseal(out.getvalue(), s) == data


def test_the_generator_reproduces_the_file() -> None:
    tool = ROOT / "tools" / "make_recipient_vectors.py"
    r = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
