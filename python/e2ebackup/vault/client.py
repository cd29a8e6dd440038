"""The vault's client: register a data key under a password, get it back, change or delete.

    client = VaultClient("https://vault.example", pinned_public_key)
    slot = client.register(password, data_key)      # a VaultSlot, to record in the container
    data_key = client.unlock(slot, password)        # one attempt; VaultLoginFailed says how
                                                    # many are left
    data_key, report = client.unlock_with_report(slot, password)
    print(report.describe())    # "3 failed attempts since your last unlock; 7 of 10 ..."

Guess accounting (docs/VAULT.md): every login that reaches the vault spends an attempt; a
verified login gives back only its own. After a verified login the vault tells the owner how
many logins failed since the last one; :meth:`VaultClient.unlock` logs that as a warning on the
``e2ebackup.vault.client`` logger (the command line shows it on stderr), and
:func:`watch_unlocks` collects the reports of the logins made inside it (by ``unseal_file``,
``Repository.open`` ...). Only the owner resets the count: :meth:`VaultClient.reset_count`, or
``watch_unlocks(reset_count=True)`` (``e2ebackup vault reset-count``). The client never retries
a login by itself: each try is the caller's.

The password never leaves this process, nor does anything that allows guessing it offline:
OPAQUE sends a blinded value, and the Argon2id KSF runs here. The data key is wrapped under a
key derived from OPAQUE's export key, which the vault never sees; the vault stores that blob and
releases it, encrypted under the login's session key, only after the login verified.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from e2ebackup import _core
from e2ebackup.errors import (
    InvalidArgument,
    KeyMismatch,
    VaultError,
    VaultKeyMismatch,
    VaultLocked,
    VaultLoginFailed,
    VaultProtocolError,
    VaultRecordGone,
    VaultUnauthorized,
    VaultUnavailable,
)
from e2ebackup.keyring.vault_slot import PUBLIC_KEY_SIZE, RECORD_ID_SIZE, VaultSlot
from e2ebackup.keys import Argon2idParams, Password
from e2ebackup.vault import protocol as p

__all__ = ["DEFAULT_KSF", "UnlockReport", "VaultClient", "watch_unlocks"]

# The KSF's cost at registration (recorded in the slot): RFC 9106's second recommendation, as
# for password slots. Logins pay it on the client; the vault pays nothing for it.
DEFAULT_KSF = Argon2idParams()
# Where a registration token comes from when none is given: vaults that admit registrations
# only by token (``vault serve --registration-token-file``) ask for it on every register call,
# including the ones ``key passwd`` and ``rotate`` make.
TOKEN_ENV = "E2EBACKUP_VAULT_TOKEN"  # noqa: S105 (the variable's name, not a token)
# A wrong password with this few attempts left gets a plainer warning.
FEW_ATTEMPTS = 3
# Counts a vault may report; anything else is not believed (the vault's bytes are untrusted).
_MAX_COUNT = 1_000_000
log = logging.getLogger("e2ebackup.vault.client")


@dataclass(frozen=True)
class UnlockReport:
    """What the vault tells the owner after a verified login; nothing secret. The counts are
    None from a vault that does not report them (one older than this accounting)."""

    attempts_left: int | None
    max_attempts: int | None = None
    failed_attempts: int | None = None
    unfinished_logins: int | None = None
    reset: bool = False

    @property
    def needs_attention(self) -> bool:
        """Failed or unfinished logins since the last unlock, or half the attempts gone."""
        if self.failed_attempts or self.unfinished_logins:
            return True
        left, most = self.attempts_left, self.max_attempts
        return left is not None and most is not None and left <= most // 2

    def describe(self) -> str:
        """For the owner: ``"3 failed attempts since your last unlock; 7 of 10 attempts left
        before the vault deletes the key ..."``."""
        parts = []
        if self.failed_attempts is not None:
            parts.append(
                f"{_plural(self.failed_attempts, 'failed attempt')} since your last unlock"
            )
        if self.unfinished_logins:
            unfinished = _plural(self.unfinished_logins, "unfinished login")
            parts.append(f"{unfinished} holding an attempt each")
        if self.attempts_left is not None and self.max_attempts is not None:
            left = f"{self.attempts_left} of {self.max_attempts} attempts left"
            parts.append(
                f"count reset: {left}" if self.reset else f"{left} before the vault deletes the key"
            )
        text = "the vault reports " + "; ".join(parts) if parts else "the vault reports nothing"
        if self.reset or not self.needs_attention:
            return text
        if self.failed_attempts or self.unfinished_logins:
            return (
                f"{text}. If those were not your own tries, someone who knows this vault record "
                "(the storage provider reads it from the vault slot) is guessing the password. "
                "Once you know, give the attempts back with `e2ebackup vault reset-count`."
            )
        return (
            f"{text}. Earlier failed attempts are still spent: if they were yours, give them "
            "back with `e2ebackup vault reset-count`."
        )


@dataclass
class _Watch:
    reset: bool
    reports: list[UnlockReport] = field(default_factory=list)


_watching: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar(
    "e2ebackup_vault_watch", default=None
)


@contextlib.contextmanager
def watch_unlocks(*, reset_count: bool = False) -> Iterator[list[UnlockReport]]:
    """Collects the :class:`UnlockReport` of every verified vault login made inside the block
    (in this thread), such as the one ``sealed.unseal_file`` or ``Repository.open`` makes.
    With ``reset_count``, those logins also give back every attempt no other login holds
    (what ``e2ebackup vault reset-count`` does; only a verified login can)."""
    watch = _Watch(reset_count)
    token = _watching.set(watch)
    try:
        yield watch.reports
    finally:
        _watching.reset(token)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, allow_insecure_http: bool) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"a vault URL is https://HOST[:PORT][/PATH], not {url!r}")
    if parts.scheme == "http" and not (allow_insecure_http or _is_loopback(parts.hostname)):
        raise InvalidArgument(
            "the vault must be reached over https (plain http only on 127.0.0.1 or localhost): "
            "an eavesdropper would learn record ids and could spend their attempts"
        )
    return url.rstrip("/")


class VaultClient:
    """One vault, reached at ``url``; ``pinned_public_key`` is the vault's OPAQUE key (32
    bytes, or 64 hex digits). Without a pin, :meth:`register` trusts the key the vault shows
    on first use and records it in the slot; :meth:`unlock` always uses the slot's pin.
    ``registration_token`` (default: ``$E2EBACKUP_VAULT_TOKEN``) is sent with registrations,
    for a vault that admits them only by token; TLS certificates are checked against
    ``verify`` (an :class:`ssl.SSLContext`, a CA file, or the default trust store)."""

    def __init__(
        self,
        url: str,
        pinned_public_key: bytes | str | None = None,
        *,
        ksf: Argon2idParams = DEFAULT_KSF,
        timeout: float = 60.0,
        allow_insecure_http: bool = False,
        verify: Any = True,
        registration_token: str | None = None,
    ) -> None:
        import httpx

        self.url = _check_url(url, allow_insecure_http)
        if isinstance(pinned_public_key, str):
            try:
                pinned_public_key = bytes.fromhex(pinned_public_key)
            except ValueError:
                raise InvalidArgument("the vault public key must be 64 hex digits") from None
        if pinned_public_key is not None and len(pinned_public_key) != PUBLIC_KEY_SIZE:
            raise InvalidArgument(f"the vault public key is {PUBLIC_KEY_SIZE} bytes")
        self.pinned_public_key = pinned_public_key
        self.ksf = ksf
        if registration_token is None:
            registration_token = os.environ.get(TOKEN_ENV) or None
        self._registration_headers = (
            {"Authorization": f"Bearer {registration_token}"} if registration_token else {}
        )
        if isinstance(verify, str):
            import ssl

            verify = ssl.create_default_context(cafile=verify)
        self._httpx = httpx
        self._http = httpx.Client(base_url=self.url, timeout=timeout, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        try:
            response = self._http.request(method, path, json=body, headers=headers)
        except self._httpx.HTTPError as e:
            raise VaultUnavailable(f"cannot reach the vault at {self.url}: {e}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 500 or not isinstance(data, dict):
            raise VaultUnavailable(f"the vault at {self.url} answered {response.status_code}")
        if response.status_code < 300:
            return data
        message = str(data.get("message", "refused"))
        code = data.get("error")
        if code == "record_gone":
            raise VaultRecordGone(message)
        if code == "locked":
            raise VaultLocked(message)
        if code == "login_failed":
            raise VaultLoginFailed(message, _count(data, "attempts_left"))
        if code == "unauthorized":
            raise VaultUnauthorized(f"{message} (give it with --vault-token-file or ${TOKEN_ENV})")
        raise VaultProtocolError(f"the vault refused the request: {message}")

    def server_info(self) -> dict[str, Any]:
        """``GET /v1/status``: service, protocol, suite, public key, attempt limit."""
        info: dict[str, Any] = self._call("GET", "/v1/status")
        if info.get("service") != p.SERVICE or info.get("protocol") != p.PROTOCOL:
            raise VaultProtocolError(f"{self.url} is not an e2ebackup vault (protocol 1)")
        return info

    # -- the protocol ---------------------------------------------------------------------------

    def register(self, password: str | bytes | Password, data_key: bytes) -> VaultSlot:
        """Registers ``password`` with the vault and stores ``data_key`` there, wrapped under
        the export key. Returns what the container records."""
        if len(data_key) != 32:
            raise InvalidArgument("a data key is 32 bytes")
        secret = Password(password).secret
        pinned = self.pinned_public_key
        if pinned is None:
            pinned = bytes.fromhex(str(self.server_info()["public_key"]))
        registration = _core.OpaqueClientRegistration(secret)
        started = self._call(
            "POST",
            "/v1/register/start",
            {"request": p.b64(registration.request)},
            self._registration_headers,
        )
        record_id = p.unhex(started.get("record_id"), "record_id", RECORD_ID_SIZE)
        response = p.unb64(started.get("response"), "response")
        k = self.ksf
        upload, export_key, server_key = registration.finish(
            secret,
            response,
            memory_kib=k.memory_kib,
            iterations=k.iterations,
            parallelism=k.parallelism,
        )
        if server_key != pinned:
            raise VaultKeyMismatch(
                f"the server at {self.url} is not the pinned vault (its key is {server_key.hex()})"
            )
        blob = _core.wrap_key(p.blob_key(export_key), data_key, p.blob_context(record_id, pinned))
        self._call(
            "POST",
            "/v1/register/finish",
            {"record_id": record_id.hex(), "upload": p.b64(upload), "blob": p.b64(blob)},
            self._registration_headers,
        )
        return VaultSlot(self.url, record_id, pinned, k)

    def _login(
        self, slot: VaultSlot, password: str | bytes | Password, action: str
    ) -> tuple[bytes, bytes | None, UnlockReport]:
        """One login: ``(export_key, blob, report)``. It spends one attempt, which the vault
        gives back if it verifies. Never retried: a failure is the caller's to handle."""
        secret = Password(password).secret
        login = _core.OpaqueClientLogin(secret)
        started = self._call(
            "POST",
            "/v1/login/start",
            {"record_id": slot.record_id.hex(), "request": p.b64(login.request)},
        )
        login_id = p.unhex(started.get("login_id"), "login_id", p.LOGIN_ID_SIZE)
        response = p.unb64(started.get("response"), "response")
        attempts_left = _count(started, "attempts_left")
        k = slot.ksf
        try:
            finalization, session_key, export_key, server_key = login.finish(
                secret,
                response,
                memory_kib=k.memory_kib,
                iterations=k.iterations,
                parallelism=k.parallelism,
            )
        except VaultLoginFailed:
            self._abort(login_id)
            raise VaultLoginFailed(_wrong(attempts_left), attempts_left) from None
        if server_key != slot.server_public_key:  # OPAQUE already binds it; belt and braces
            self._abort(login_id)
            raise VaultKeyMismatch(f"the server at {slot.url} is not the pinned vault")
        finished = self._call(
            "POST",
            "/v1/login/finish",
            {"login_id": login_id.hex(), "finalization": p.b64(finalization), "action": action},
        )
        report = UnlockReport(
            _count(finished, "attempts_left"),
            _count(finished, "max_attempts"),
            _count(finished, "failed_attempts"),
            _count(finished, "unfinished_logins"),
            reset=action == "reset",
        )
        sealed = finished.get("sealed_blob")
        if sealed is None:
            return export_key, None, report
        blob = p.open_release(session_key, login_id, p.unb64(sealed, "sealed_blob"))
        return export_key, blob, report

    def _abort(self, login_id: bytes) -> None:
        # Ends the pending login at once (the vault would expire it anyway).
        with contextlib.suppress(VaultError):
            self._call("POST", "/v1/login/abort", {"login_id": login_id.hex()})

    def unlock(self, slot: VaultSlot, password: str | bytes | Password) -> bytes:
        """The data key. Each call spends one attempt; a verified one gives back its own.
        :class:`VaultLoginFailed` (with ``attempts_left``) for a wrong password,
        :class:`VaultRecordGone` once the vault deleted the key. Failed logins since the last
        unlock are logged as a warning (see :meth:`unlock_with_report`)."""
        return self.unlock_with_report(slot, password)[0]

    def unlock_with_report(
        self, slot: VaultSlot, password: str | bytes | Password, *, reset_count: bool = False
    ) -> tuple[bytes, UnlockReport]:
        """The data key and what the vault reports: failed attempts since the last unlock,
        attempts left. With ``reset_count`` (or inside ``watch_unlocks(reset_count=True)``)
        the login also gives back every attempt no other login holds."""
        watch = _watching.get()
        reset = reset_count or (watch is not None and watch.reset)
        export_key, blob, report = self._login(slot, password, "reset" if reset else "release")
        if blob is None:
            raise VaultProtocolError("the vault verified the login but sent no key")
        try:
            data_key = _core.unwrap_key(
                p.blob_key(export_key),
                blob,
                p.blob_context(slot.record_id, slot.server_public_key),
            )
        except KeyMismatch:
            raise VaultProtocolError("the key the vault released does not open") from None
        if watch is not None:
            watch.reports.append(report)
        if report.needs_attention and not reset:
            log.warning("%s", report.describe())
        return data_key, report

    def reset_count(self, slot: VaultSlot, password: str | bytes | Password) -> UnlockReport:
        """A verified login that gives back every attempt no other login holds. The caller
        should then check the released key against its container (the command line does)."""
        return self.unlock_with_report(slot, password, reset_count=True)[1]

    def delete(self, slot: VaultSlot, password: str | bytes | Password) -> None:
        """Deletes the record (a login with the password proves the right to)."""
        self._login(slot, password, "delete")

    def change_password(
        self, slot: VaultSlot, old: str | bytes | Password, new: str | bytes | Password
    ) -> VaultSlot:
        """Registers the data key under ``new`` (a new record) and returns its slot; the caller
        records it, then calls :meth:`delete` on the old slot with ``old``."""
        data_key = self.unlock(slot, old)
        return self.register(new, data_key)


def _count(data: dict[str, Any], name: str) -> int | None:
    """A count the vault sent, if it is one (``True`` is no count)."""
    value = data.get(name)
    if type(value) is not int or not 0 <= value <= _MAX_COUNT:
        return None
    return value


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _wrong(attempts_left: int | None) -> str:
    if attempts_left is None:
        return "wrong password"
    if attempts_left == 0:
        return "wrong password: that was the last attempt; the vault deletes the key"
    text = (
        f"wrong password: {_plural(attempts_left, 'attempt')} left before the vault deletes the key"
    )
    if attempts_left <= FEW_ATTEMPTS:
        text += "; check the password before trying again, or use the recovery key"
    return text


def client_for(slot: VaultSlot) -> VaultClient:
    """A client for the vault a slot names, pinned to the slot's public key."""
    return VaultClient(slot.url, slot.server_public_key, ksf=slot.ksf)


def unlock_slot(slot: VaultSlot, password: str | bytes | Password) -> bytes:
    """One login at the slot's vault: the data key it holds."""
    with client_for(slot) as client:
        return client.unlock(slot, password)
