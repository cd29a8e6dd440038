"""OPAQUE interop with opaque-snake (an independent binding of opaque-ke, from PyPI): its client
against our server and ours against its server, in process and over the vault's HTTP API.

opaque-snake's suite is Ristretto255, TripleDh<Ristretto255, Sha512> and argon2 0.5's
``Argon2::default()`` as the KSF (Argon2id v1.3, m=19456 KiB, t=2, p=1, 16 zero bytes of salt),
so our side uses ``OPAQUE_KSF_INTEROP``: (19456, 2, 1).
"""

from __future__ import annotations

import httpx
import opaque_snake as osn
import pytest
from e2ebackup import _core
from e2ebackup.errors import VaultLoginFailed
from e2ebackup.keys import Argon2idParams
from e2ebackup.vault import protocol as p
from e2ebackup.vault.client import VaultClient
from servers.vault import PeerProcess, VaultProcess, peer_vault, vault  # noqa: F401

M, T, P = _core.OPAQUE_KSF_INTEROP
KSF = {"memory_kib": M, "iterations": T, "parallelism": P}


def test_interop_parameters_are_opaque_kes_argon2_defaults() -> None:
    assert _core.OPAQUE_KSF_INTEROP == (19456, 2, 1)


def test_our_client_with_their_server() -> None:
    server = osn.OpaqueServer()
    reg = _core.OpaqueClientRegistration(b"correct horse")
    response = server.create_registration_response(
        osn.RegistrationRequest.from_bytes(reg.request), "alice"
    )
    upload, export_key, server_key = reg.finish(b"correct horse", response.to_bytes(), **KSF)
    password_file = server.finish_registration(osn.RegistrationUpload.from_bytes(upload))

    login = _core.OpaqueClientLogin(b"correct horse")
    cred_response, state = server.create_credential_response(
        osn.CredentialRequest.from_bytes(login.request), "alice", password_file
    )
    fin, session_key, export2, server_key2 = login.finish(
        b"correct horse", cred_response.to_bytes(), **KSF
    )
    keys = server.finish_login(osn.CredentialFinalization.from_bytes(fin), state)
    assert keys.session_key == session_key
    assert export2 == export_key
    assert server_key2 == server_key

    bad = _core.OpaqueClientLogin(b"wrong")
    cred_response, _ = server.create_credential_response(
        osn.CredentialRequest.from_bytes(bad.request), "alice", password_file
    )
    with pytest.raises(VaultLoginFailed):
        bad.finish(b"wrong", cred_response.to_bytes(), **KSF)


def test_their_client_with_our_server() -> None:
    server = _core.OpaqueServer()
    client = osn.OpaqueClient()
    req, state = client.start_registration("correct horse")
    response = server.registration_response(req.to_bytes(), b"alice")
    result = client.finish_registration(
        osn.RegistrationResponse.from_bytes(response), state, "correct horse"
    )
    assert result.server_s_pk == server.public_key
    password_file = _core.opaque_registration_finish(result.upload.to_bytes())

    lreq, lstate = client.start_login("correct horse")
    cred_response, sealed = server.login_start(lreq.to_bytes(), b"alice", password_file, b"ctx")
    login = client.finish_login(
        osn.CredentialResponse.from_bytes(cred_response), lstate, "correct horse"
    )
    assert login.session_keys.export_key == result.export_key
    session_key = server.login_finish(sealed, b"ctx", login.finalization.to_bytes())
    assert session_key == login.session_keys.session_key

    # A wrong password fails on their client, against our dummy-free record.
    lreq, lstate = client.start_login("wrong")
    cred_response, _ = server.login_start(lreq.to_bytes(), b"alice", password_file, b"ctx")
    with pytest.raises(osn.OpaqueError):
        client.finish_login(osn.CredentialResponse.from_bytes(cred_response), lstate, "wrong")


def test_vault_client_against_the_peer_vault(peer_vault: PeerProcess) -> None:  # noqa: F811
    """VaultClient registers and unlocks over HTTP with opaque-snake's server behind the API."""
    data_key = _core.generate_key()
    with VaultClient(peer_vault.url, ksf=Argon2idParams(M, T, P)) as client:
        slot = client.register("correct horse", data_key)
        assert client.unlock(slot, "correct horse") == data_key
        with pytest.raises(VaultLoginFailed) as failed:
            client.unlock(slot, "wrong")
        assert failed.value.attempts_left == 9
        assert client.unlock(slot, "correct horse") == data_key


def test_peer_client_against_our_vault(vault: VaultProcess) -> None:  # noqa: F811
    """opaque-snake's client drives our vault's HTTP API: register, log in, get the key back."""
    http = httpx.Client(base_url=vault.url)
    client = osn.OpaqueClient()
    req, state = client.start_registration("correct horse")
    started = http.post("/v1/register/start", json={"request": p.b64(req.to_bytes())}).json()
    record_id = bytes.fromhex(started["record_id"])
    result = client.finish_registration(
        osn.RegistrationResponse.from_bytes(p.unb64(started["response"], "r")),
        state,
        "correct horse",
    )
    assert result.server_s_pk == vault.public_key()
    data_key = _core.generate_key()
    blob = _core.wrap_key(
        p.blob_key(result.export_key), data_key, p.blob_context(record_id, result.server_s_pk)
    )
    done = http.post(
        "/v1/register/finish",
        json={
            "record_id": record_id.hex(),
            "upload": p.b64(result.upload.to_bytes()),
            "blob": p.b64(blob),
        },
    )
    assert done.status_code == 201

    lreq, lstate = client.start_login("correct horse")
    started = http.post(
        "/v1/login/start", json={"record_id": record_id.hex(), "request": p.b64(lreq.to_bytes())}
    ).json()
    assert started["attempts_left"] == 9
    login = client.finish_login(
        osn.CredentialResponse.from_bytes(p.unb64(started["response"], "r")),
        lstate,
        "correct horse",
    )
    finished = http.post(
        "/v1/login/finish",
        json={
            "login_id": started["login_id"],
            "finalization": p.b64(login.finalization.to_bytes()),
        },
    ).json()
    assert finished["attempts_left"] == 10
    released = p.open_release(
        login.session_keys.session_key,
        bytes.fromhex(started["login_id"]),
        p.unb64(finished["sealed_blob"], "b"),
    )
    export_key = login.session_keys.export_key
    assert export_key is not None
    key = _core.unwrap_key(
        p.blob_key(export_key), released, p.blob_context(record_id, result.server_s_pk)
    )
    assert key == data_key

    # And our own client opens the same record, registered by theirs.
    from e2ebackup.keyring.vault_slot import VaultSlot

    slot = VaultSlot(vault.url, record_id, result.server_s_pk, Argon2idParams(M, T, P))
    with VaultClient(vault.url, result.server_s_pk) as ours:
        assert ours.unlock(slot, "correct horse") == data_key
