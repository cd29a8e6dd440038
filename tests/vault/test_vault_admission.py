"""How a vault is reached in production: over TLS with a certificate the client checks, and with
registrations admitted only by a registration token (logins need none: the password is what
they prove). Real vault processes, a real CA and certificate made for the test."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2ebackup.errors import VaultError, VaultUnauthorized, VaultUnavailable
from e2ebackup.keys import Argon2idParams
from e2ebackup.vault.client import VaultClient
from e2ebackup.vault.server import load_registration_token
from repo_helpers import make_tree, snapshot_of
from servers.vault import VaultProcess
from test_repo_vault import PASSWORD, e2eb

FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)
TOKEN = "admit-our-users-4f9c2b7e81d0"
DATA_KEY = bytes(range(32))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca_and_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it issued for 127.0.0.1: ``(cert, key, ca)`` PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("e2ebackup test CA"))
        .issuer_name(_name("e2ebackup test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "server.pem", directory / "server.key", directory / "ca.pem"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[1].chmod(0o600)
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths


def token_file(path: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


@pytest.fixture
def tls_vault(tmp_path: Path) -> Iterator[VaultProcess]:
    """A vault over HTTPS that registers only with TOKEN."""
    certs = tmp_path / "certs"
    certs.mkdir()
    tls = make_ca_and_certificate(certs)
    extra = ("--registration-token-file", str(token_file(tmp_path / "token")))
    server = VaultProcess(tmp_path / "vault", tls=tls, extra=extra).start()
    try:
        yield server
    finally:
        server.stop()


def ca_file(vault: VaultProcess) -> Path:
    assert vault.tls is not None
    return vault.tls[2]


def records(vault: VaultProcess) -> int:
    return int(vault.status()["records"])


def test_registration_needs_the_token_and_logins_do_not(tls_vault: VaultProcess) -> None:
    assert tls_vault.status()["registration"] == "token"
    ca = tls_vault.verify
    for token in ("", "admit-our-users-0000000000", TOKEN + "x", TOKEN[:-1]):
        c = VaultClient(tls_vault.url, ksf=FAST, verify=ca, registration_token=token)
        with c, pytest.raises(VaultUnauthorized, match="registration token"):
            c.register(PASSWORD, DATA_KEY)
    assert records(tls_vault) == 0
    with VaultClient(tls_vault.url, ksf=FAST, verify=ca, registration_token=TOKEN) as c:
        slot = c.register(PASSWORD, DATA_KEY)
    assert records(tls_vault) == 1
    # A new device has the password and the slot, not the token: logins are not gated by it.
    with VaultClient(slot.url, slot.server_public_key, ksf=FAST, verify=ca) as c:
        assert c.unlock(slot, PASSWORD) == DATA_KEY
    # The token never reaches the log.
    assert TOKEN not in tls_vault.log.read_text()


def test_the_token_comes_from_the_environment(
    tls_vault: VaultProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2EBACKUP_VAULT_TOKEN", TOKEN)
    with VaultClient(tls_vault.url, ksf=FAST, verify=tls_vault.verify) as c:
        slot = c.register(PASSWORD, DATA_KEY)
        assert c.unlock(slot, PASSWORD) == DATA_KEY


def test_the_certificate_is_checked(tls_vault: VaultProcess, tmp_path: Path) -> None:
    # The default trust store does not know the test CA; another CA does not vouch for it.
    c = VaultClient(tls_vault.url, ksf=FAST, registration_token=TOKEN)
    with c, pytest.raises(VaultUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        c.server_info()
    other = tmp_path / "other"
    other.mkdir()
    _, _, other_ca = make_ca_and_certificate(other)
    c = VaultClient(tls_vault.url, ksf=FAST, verify=str(other_ca))
    with c, pytest.raises(VaultUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        c.server_info()
    # A CA file given by path works like a context.
    with VaultClient(tls_vault.url, ksf=FAST, verify=str(ca_file(tls_vault))) as c:
        assert c.server_info()["registration"] == "token"


def test_cli_over_tls_with_a_token_then_a_new_device(
    tls_vault: VaultProcess, tmp_path: Path
) -> None:
    phone, new_phone = tmp_path / "phone", tmp_path / "new-phone"
    phone.mkdir()
    new_phone.mkdir()
    src = phone / "chats"
    make_tree(src, small_files=5, big=[1 << 20])
    repo = str(tmp_path / "repo")
    ca = {"SSL_CERT_FILE": str(ca_file(tls_vault))}
    refused = e2eb(phone, "init", "-r", repo, "--vault", tls_vault.url, "--recovery-key",
                   E2EBACKUP_PASSWORD=PASSWORD, **ca)  # fmt: skip
    assert refused.returncode == 1
    assert "registration token" in refused.stderr
    assert "--vault-token-file" in refused.stderr
    assert not os.path.exists(repo) or not os.listdir(repo)  # nothing half made
    token = token_file(tmp_path / "my-token")
    made = e2eb(phone, "init", "-r", repo, "--vault", tls_vault.url, "--recovery-key",
                "--vault-token-file", str(token), E2EBACKUP_PASSWORD=PASSWORD, **ca)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert e2eb(phone, "backup", "-r", repo, str(src), E2EBACKUP_PASSWORD=PASSWORD,
                **ca).returncode == 0  # fmt: skip
    # key passwd registers again: the token from the environment admits it.
    (tmp_path / "new-pw").write_text("another long passphrase")
    changed = e2eb(phone, "key", "passwd", "-r", repo, "--new-password-file",
                   str(tmp_path / "new-pw"), E2EBACKUP_PASSWORD=PASSWORD,
                   E2EBACKUP_VAULT_TOKEN=TOKEN, **ca)  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    # A new device: the password and the CA; no token.
    restored = e2eb(new_phone, "restore", "-r", repo, "latest", "--target",
                    str(new_phone / "out"), E2EBACKUP_PASSWORD="another long passphrase",
                    **ca)  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert snapshot_of(new_phone / "out" / "chats") == snapshot_of(src)
    # Without the CA, the device refuses to talk to the vault at all.
    blind = e2eb(new_phone, "snapshots", "-r", repo, E2EBACKUP_PASSWORD="another long passphrase")
    assert blind.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in blind.stderr


@pytest.mark.parametrize(
    ("token", "mode", "message"),
    [
        (TOKEN, 0o644, "readable by other users"),
        ("short-token", 0o600, "at least 16 characters"),
        ("two words but long enough", 0o600, "one word"),
    ],
)
def test_bad_token_files_are_refused(tmp_path: Path, token: str, mode: int, message: str) -> None:
    path = token_file(tmp_path / "token", token, mode)
    with pytest.raises(VaultError, match=message):
        load_registration_token(path)
    # The server refuses to start with it, saying why.
    proc = subprocess.run(
        [sys.executable, "-m", "e2ebackup", "vault", "serve", "--data-dir", str(tmp_path / "d"),
         "--port", "0", "--registration-token-file", str(path)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 1
    assert message in proc.stderr
    assert token not in proc.stderr


def test_missing_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VaultError, match="cannot read the registration token file"):
        load_registration_token(tmp_path / "absent")
