"""Recipient keys (X25519 + ML-KEM-768): identities, recipients, sealed files to recipients,
mixing with passwords and recovery keys, every field of a recipient slot tampered with, garbage
recipient strings, identity files, and the command line."""

from __future__ import annotations

import io
import pickle
import stat
import struct
from pathlib import Path

import pytest
from e2ebackup import sealed
from e2ebackup.errors import (
    CorruptKeySlot,
    InvalidArgument,
    InvalidTag,
    NoMatchingKeySlot,
    NotSealedFile,
    WrongPassword,
)
from e2ebackup.files import decrypt_file, encrypt_file
from e2ebackup.identity_file import load_identity, save_identity
from e2ebackup.keys import Argon2idParams, RecoveryKey
from e2ebackup.recipients import Identity, Recipient, bech32_decode, bech32_encode
from helpers import random_bytes
from reference import recipient as rr, sealed as sr
from repo_helpers import cli

FAST = Argon2idParams(memory_kib=256, iterations=1, parallelism=1)
SLOTS_AT = 30  # the slot area of a sealed file starts here (docs/FORMAT.md, Sealed files)


def seal(data: bytes, **credentials: object) -> bytes:
    out = io.BytesIO()
    sealed.seal_file(io.BytesIO(data), out, kdf=FAST, **credentials)  # type: ignore[arg-type]
    return out.getvalue()


def unseal(blob: bytes, **credentials: object) -> bytes:
    out = io.BytesIO()
    sealed.unseal_file(io.BytesIO(blob), out, **credentials)  # type: ignore[arg-type]
    return out.getvalue()


# -- keys ---------------------------------------------------------------------------------------


def test_identity_text_forms_round_trip_and_hide_the_secret() -> None:
    identity = Identity.generate()
    assert Identity.parse(identity.secret()) == identity
    assert Identity.parse(identity.secret().lower()) == identity
    assert Identity.parse(identity.reveal()) == identity
    assert identity.secret().startswith("E2EBACKUP-SECRET-KEY-1")
    assert identity != Identity.generate()
    for shown in (repr(identity), str(identity), f"{identity}"):
        assert identity.secret() not in shown
        assert identity.reveal() not in shown
        assert shown == "Identity(<hidden>)"
    with pytest.raises(TypeError):
        pickle.dumps(identity)
    recipient = identity.recipient
    assert str(recipient).startswith("e2ebackup1")
    assert Recipient.parse(str(recipient)) == recipient
    assert Recipient.parse(f"  {recipient}\n") == recipient
    assert len(recipient.public) == rr.PUBLIC_SIZE
    assert pickle.loads(pickle.dumps(str(recipient))) == str(recipient)


def test_keys_match_the_reference() -> None:
    seed = random_bytes(32)
    identity = Identity(seed)
    assert identity.recipient.public == rr.identity_keys(seed).public
    assert str(identity.recipient) == rr.recipient_text(rr.identity_keys(seed).public)
    assert identity.secret() == rr.identity_text(seed)


@pytest.mark.parametrize("n", [0, 1, 20, 32, 1216])
def test_bech32_matches_the_bip173_reference(n: int) -> None:
    data = random_bytes(n)
    text = bech32_encode("e2ebackup", data)
    assert text == rr.to_bech32("e2ebackup", data)
    assert bech32_decode(text) == ("e2ebackup", data)
    assert bech32_decode(text.upper()) == ("e2ebackup", data)


def _garbage_recipients() -> list[str]:
    good = str(Identity.generate().recipient)
    flipped = good[:-10] + ("q" if good[-10] != "q" else "p") + good[-9:]
    bad_mlkem = bech32_encode("e2ebackup", b"\xff" * rr.PUBLIC_SIZE)
    return [
        "",
        "   ",
        "e2ebackup1",
        "e2ebackup1qqqqqq",
        good[:-1],
        good + "q",
        flipped,  # one character mistyped: the checksum catches it
        good[:20] + good[20:].upper(),  # mixed case
        good.replace("e2ebackup1", "age1", 1),
        bech32_encode("age", Identity.generate().recipient.public),  # another HRP
        bech32_encode("e2ebackup", b"\x00" * 32),  # an X25519-only key: the wrong length
        bad_mlkem,  # ML-KEM coefficients out of range
        good.replace("q", "b", 1) if "q" in good else good.replace("p", "b", 1),  # not in alphabet
        "e2ebackup1" + "é" * 40,
    ]


@pytest.mark.parametrize("text", _garbage_recipients())
def test_garbage_recipient_strings_are_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument):
        Recipient.parse(text)


def test_an_identity_is_not_a_recipient_and_is_not_echoed() -> None:
    identity = Identity.generate()
    with pytest.raises(InvalidArgument) as caught:
        Recipient.parse(identity.secret())
    assert identity.secret().lower()[22:] not in str(caught.value).lower()
    with pytest.raises(InvalidArgument):
        Identity.parse(str(identity.recipient))
    with pytest.raises(InvalidArgument):
        Identity(b"short")


# -- sealing ------------------------------------------------------------------------------------


def test_round_trip_through_the_public_chooser(tmp_path: Path) -> None:
    identity = Identity.generate()
    data = random_bytes(300_000)
    (tmp_path / "in").write_bytes(data)
    encrypt_file(tmp_path / "in", tmp_path / "sealed", recipients=[str(identity.recipient)])
    decrypt_file(tmp_path / "sealed", tmp_path / "out", identity=identity)
    assert (tmp_path / "out").read_bytes() == data
    assert [s["kind"] for s in sealed.list_slots(tmp_path / "sealed")] == ["recipient"]
    with pytest.raises(InvalidArgument):
        encrypt_file(tmp_path / "in", tmp_path / "x", recipients=[])


def test_several_recipients_each_open_and_others_do_not() -> None:
    identities = [Identity.generate() for _ in range(3)]
    data = random_bytes(5000)
    blob = seal(data, recipients=[i.recipient for i in identities])
    for identity in identities:
        assert unseal(blob, identity=identity) == data
        assert rr.unseal(blob, identity._seed) == data  # the independent reader agrees
    with pytest.raises(NoMatchingKeySlot):
        unseal(blob, identity=Identity.generate())
    with pytest.raises(InvalidArgument):
        seal(data, recipients=[identities[0].recipient, identities[0].recipient])


def test_mixing_with_password_and_recovery_key() -> None:
    identity, recovery_key = Identity.generate(), RecoveryKey.generate()
    data = random_bytes(1000)
    blob = seal(data, password="pw", recovery_key=recovery_key, recipients=[identity.recipient])
    assert unseal(blob, identity=identity) == data
    assert unseal(blob, password="pw") == data
    assert unseal(blob, recovery_key=recovery_key) == data
    with pytest.raises(WrongPassword):
        unseal(blob, password="nope")
    # A password-only file has no recipient slot: an identity finds none.
    with pytest.raises(NoMatchingKeySlot):
        unseal(seal(data, password="pw"), identity=identity)


def test_a_writer_with_only_recipient_strings_can_seal_but_never_open() -> None:
    """Everything the writer holds is the recipient text: nothing it can build from it opens
    the file (no identity parses from it, no password or recovery-key slot exists), and the
    file holds no slot but the recipient's."""
    owner = Identity.generate()
    writer_holds = str(owner.recipient)
    data = random_bytes(2000)
    blob = seal(data, recipients=[writer_holds])
    assert unseal(blob, identity=owner) == data
    with pytest.raises(InvalidArgument):
        Identity.parse(writer_holds)
    with pytest.raises(NoMatchingKeySlot):
        unseal(blob, password=writer_holds)
    with pytest.raises(InvalidArgument):
        unseal(blob, recovery_key=writer_holds)
    with pytest.raises(NoMatchingKeySlot):
        unseal(blob, identity=Identity(Recipient.parse(writer_holds).public[:32]))
    header = sealed.read_header(io.BytesIO(blob))
    assert [s.kind for s in header.slots.slots] == [4]
    assert not header.slots.unknown


def test_rotation_keeps_the_identity_that_opened(tmp_path: Path) -> None:
    identity = Identity.generate()
    data = random_bytes(3000)
    path = tmp_path / "file.sealed"
    path.write_bytes(seal(data, recipients=[identity.recipient]))
    before = path.read_bytes()
    sealed.rotate(path, identity=identity)
    after = path.read_bytes()
    assert after[10:26] != before[10:26]  # a new container id (and data key)
    assert unseal(after, identity=identity) == data
    with pytest.raises(NoMatchingKeySlot):
        sealed.rotate(path, identity=Identity.generate())
    assert path.read_bytes() == after


def test_any_encapsulation_bytes_give_a_key_or_a_typed_error() -> None:
    """The binding never panics: every length, and random bytes of the right length (ML-KEM
    rejects implicitly: a key that the slot's commitment then refuses)."""
    identity = Identity.generate()
    for n in (0, 1, 31, 32, 1087, 1088, 1119, 1121, 4096):
        with pytest.raises(CorruptKeySlot):
            identity.decapsulate(random_bytes(n))
    for _ in range(20):
        assert len(identity.decapsulate(random_bytes(rr.ENC_SIZE))) == 32
    with pytest.raises(InvalidArgument):
        Recipient(random_bytes(rr.PUBLIC_SIZE - 1))
    with pytest.raises(InvalidArgument):
        Recipient.parse("e2ebackup1" + "q" * 100_000)


def test_a_recipient_added_to_a_password_file(tmp_path: Path) -> None:
    path = tmp_path / "file.sealed"
    data = random_bytes(2000)
    path.write_bytes(seal(data, password="pw"))
    first, second = Identity.generate(), Identity.generate()
    sealed.add_recipient(path, str(first.recipient), password="pw", label="laptop")
    sealed.add_recipient(path, second.recipient, identity=first)
    kinds = [(s["kind"], s["label"]) for s in sealed.list_slots(path)]
    assert kinds == [("password", ""), ("recipient", "laptop"), ("recipient", "")]
    for identity in (first, second):
        assert unseal(path.read_bytes(), identity=identity) == data
    with pytest.raises(NoMatchingKeySlot):
        sealed.add_recipient(path, Identity.generate().recipient, identity=Identity.generate())
    with pytest.raises(WrongPassword):
        sealed.add_recipient(path, Identity.generate().recipient, password="nope")


# -- tampering ----------------------------------------------------------------------------------


def _slot_span(blob: bytes) -> tuple[int, int]:
    """Offset and length of the first slot's body."""
    (length,) = struct.unpack(">H", blob[SLOTS_AT + 2 : SLOTS_AT + 4])
    return SLOTS_AT + 4, length


def _recheck(blob: bytearray) -> None:
    start, length = _slot_span(bytes(blob))
    body = bytes(blob[start : start + length])
    blob[start + length : start + length + 16] = sr.encode_slot(4, body)[-16:]


# Offsets inside a recipient slot body with an empty label: created (0..8), label length (8),
# enc = ct_M (9..1097) || ct_X (1097..1129), wrapped = salt || commitment || key || tag.
FIELDS = {
    "created": 3,
    "ml-kem ciphertext": 9 + 500,
    "x25519 share": 9 + 1088 + 7,
    "wrap salt": 1129 + 3,
    "commitment": 1129 + 24 + 5,
    "wrapped key": 1129 + 56 + 5,
    "tag": 1129 + 104 - 1,
}


@pytest.mark.parametrize("field", list(FIELDS))
def test_each_field_tampered_is_a_typed_error(field: str) -> None:
    identity = Identity.generate()
    blob = seal(b"secret", recipients=[identity.recipient])
    start, length = _slot_span(blob)
    assert length == 9 + rr.ENC_SIZE + 104
    edited = bytearray(blob)
    edited[start + FIELDS[field]] ^= 0x01
    # The check still says the old bytes: a damaged slot.
    with pytest.raises(CorruptKeySlot):
        unseal(bytes(edited), identity=identity)
    # Check recomputed (a deliberate edit): the commitment refuses it (a "wrong identity", by
    # design: the two cannot be told apart), or the tag does once the commitment matched.
    _recheck(edited)
    expected = CorruptKeySlot if field in ("wrapped key", "tag") else NoMatchingKeySlot
    with pytest.raises(expected):
        unseal(bytes(edited), identity=identity)
    with pytest.raises(getattr(sr, expected.__name__)):
        rr.unseal(bytes(edited), identity._seed)


def test_truncations_are_typed_errors() -> None:
    identity = Identity.generate()
    blob = seal(b"secret" * 100, recipients=[identity.recipient])
    start, length = _slot_span(blob)
    for cut in (1, 29, SLOTS_AT + 2, start + 100, start + length):
        with pytest.raises(NotSealedFile):
            unseal(blob[:cut], identity=identity)
    # The slot body one byte shorter, every length field fixed: the body does not parse.
    body = blob[start : start + length - 1]
    slot = sr.encode_slot(4, body)
    area = bytes([1]) + slot
    short = blob[:26] + struct.pack(">I", len(area)) + area + blob[start + length + 16 :]
    with pytest.raises(CorruptKeySlot):
        unseal(short, identity=identity)
    # The payload cut: the slots open, then the payload fails.
    with pytest.raises(InvalidTag):
        unseal(blob[:-1], identity=identity)


def _slots(blob: bytes) -> tuple[list[bytes], bytes]:
    """The encoded slots of a sealed file and its payload."""
    f = sr.parse(blob)
    encoded = [struct.pack(">BH", s.kind, len(s.body)) + s.body + s.check for s in f.slots]
    return encoded, f.payload


def test_a_slot_copied_from_another_file_does_not_open() -> None:
    identity = Identity.generate()
    mine = seal(b"mine", password="pw")
    other = seal(b"other", recipients=[identity.recipient])
    copied = sr.assemble(mine[:26], _slots(mine)[0] + _slots(other)[0], _slots(mine)[1])
    # The slot opens only in the container it was made for (its context binds the id).
    with pytest.raises(NoMatchingKeySlot):
        unseal(copied, identity=identity)
    assert unseal(copied, password="pw") == b"mine"


def test_a_slot_planted_for_the_identity_gives_a_typed_failure_not_its_data() -> None:
    """Anyone can make a slot the identity opens (recipients are public): one planted before
    the genuine slot opens to the planter's data key, under which the payload does not
    authenticate. Availability, as with deleting the file; never the planter's plaintext."""
    identity = Identity.generate()
    genuine = seal(b"genuine", password="pw", recipients=[identity.recipient])
    planted = seal(b"planted", recipients=[identity.recipient])
    slots, payload = _slots(genuine)
    header = sr.parse(genuine)
    # The planter cannot make a slot for this container's id with this file's key, so it
    # makes one for this id with its own key: re-encapsulated, re-wrapped, same public layout.
    spec = rr.RecipientSlot(
        identity.recipient.public, random_bytes(32), random_bytes(32), random_bytes(24), 0
    )
    forged = rr.make_slot(spec, header.container_id, random_bytes(32))
    edited = sr.assemble(genuine[:26], [forged, *slots], payload)
    with pytest.raises(InvalidTag):
        unseal(edited, identity=identity)
    assert unseal(edited, password="pw") == b"genuine"
    assert unseal(planted, identity=identity) == b"planted"  # sealing proves no sender


def test_low_order_x25519_share_is_a_damaged_slot() -> None:
    identity = Identity.generate()
    blob = bytearray(seal(b"x", recipients=[identity.recipient]))
    start, _ = _slot_span(bytes(blob))
    share = start + 9 + 1088
    blob[share : share + 32] = bytes(32)
    _recheck(blob)
    with pytest.raises(CorruptKeySlot):
        unseal(bytes(blob), identity=identity)


# -- identity files -----------------------------------------------------------------------------


def test_identity_file_is_0600_and_never_replaced(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "me.key"
    save_identity(identity, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity(path) == identity
    assert f"# recipient: {identity.recipient}" in path.read_text()
    with pytest.raises(FileExistsError):
        save_identity(Identity.generate(), path)
    assert load_identity(path) == identity


def test_sealed_identity_file_needs_its_password(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "me.key.sealed"
    save_identity(identity, path, password="pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert identity.secret() not in path.read_bytes().decode("latin-1")
    assert load_identity(path, password="pw") == identity
    with pytest.raises(InvalidArgument):
        load_identity(path)
    with pytest.raises(WrongPassword):
        load_identity(path, password="nope")


@pytest.mark.parametrize(
    "content",
    [b"", b"# only a comment\n", b"\xff\xfe", b"E2EBACKUP-SECRET-KEY-1QQQQ\n", b"x\ny\n"],
)
def test_malformed_identity_files_are_invalid_argument(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "id").write_bytes(content)
    with pytest.raises(InvalidArgument):
        load_identity(tmp_path / "id")


# -- command line -------------------------------------------------------------------------------


def test_cli_keygen_encrypt_decrypt(tmp_path: Path) -> None:
    r = cli(tmp_path, "keygen", "--identity", "-o", str(tmp_path / "id"))
    assert r.returncode == 0, r.stderr
    recipient = r.stdout.strip()
    assert recipient.startswith("e2ebackup1")
    assert stat.S_IMODE((tmp_path / "id").stat().st_mode) == 0o600
    assert cli(tmp_path, "keygen", "--identity", "-o", str(tmp_path / "id")).returncode != 0
    other = cli(tmp_path, "keygen", "--identity", "-o", str(tmp_path / "other")).stdout.strip()
    (tmp_path / "recipients").write_text(f"# the team\n{other}\n\n")
    data = random_bytes(40_000)
    (tmp_path / "in").write_bytes(data)
    # No password is asked (E2EBACKUP_PASSWORD is unset and standard input is not a terminal).
    r = cli(
        tmp_path,
        "encrypt",
        "-q",
        "-r",
        recipient,
        "-R",
        str(tmp_path / "recipients"),
        str(tmp_path / "in"),
        str(tmp_path / "sealed"),
        E2EBACKUP_PASSWORD="",
    )
    assert r.returncode == 0, r.stderr
    kinds = [s["kind"] for s in sealed.list_slots(tmp_path / "sealed")]
    assert kinds == ["recipient", "recipient"]
    for name in ("id", "other"):
        out = tmp_path / f"out-{name}"
        r = cli(
            tmp_path,
            "decrypt",
            "-q",
            "-i",
            str(tmp_path / name),
            str(tmp_path / "sealed"),
            str(out),
        )
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == data
    stranger = tmp_path / "stranger"
    save_identity(Identity.generate(), stranger)
    r = cli(
        tmp_path, "decrypt", "-i", str(stranger), str(tmp_path / "sealed"), str(tmp_path / "nope")
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "identity" in r.stderr
    assert not (tmp_path / "nope").exists()
    r = cli(
        tmp_path, "encrypt", "-r", "e2ebackup1garbage", str(tmp_path / "in"), str(tmp_path / "x")
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_cli_keygen_to_standard_output_and_qr(tmp_path: Path) -> None:
    r = cli(tmp_path, "keygen", "--identity", "--qr", str(tmp_path / "id.png"))
    assert r.returncode == 0, r.stderr
    identity = Identity.parse(r.stdout.strip())
    assert f"Public key: {identity.recipient}" in r.stderr
    assert identity.reveal() in r.stderr  # the paper copy the QR code holds
    assert stat.S_IMODE((tmp_path / "id.png").stat().st_mode) == 0o600
    assert (tmp_path / "id.png").read_bytes().startswith(b"\x89PNG")
    r = cli(tmp_path, "keygen", "--identity", "--seal")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr


def test_cli_mixed_and_sealed_identity(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("identity password\n")
    r = cli(
        tmp_path,
        "keygen",
        "--identity",
        "--seal",
        "--password-file",
        str(tmp_path / "pw"),
        "-o",
        str(tmp_path / "id"),
    )
    assert r.returncode == 0, r.stderr
    recipient = r.stdout.strip()
    assert (tmp_path / "id").read_bytes().startswith(b"E2EBSEAL")
    data = random_bytes(1000)
    (tmp_path / "in").write_bytes(data)
    # With a password given as well, the file gets a password slot beside the recipient's.
    r = cli(
        tmp_path,
        "encrypt",
        "-q",
        "--recipient",
        recipient,
        str(tmp_path / "in"),
        str(tmp_path / "sealed"),
    )
    assert r.returncode == 0, r.stderr
    kinds = sorted(str(s["kind"]) for s in sealed.list_slots(tmp_path / "sealed"))
    assert kinds == ["password", "recipient"]
    r = cli(
        tmp_path,
        "decrypt",
        "-q",
        "-i",
        str(tmp_path / "id"),
        "--password-file",
        str(tmp_path / "pw"),
        str(tmp_path / "sealed"),
        str(tmp_path / "out"),
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == data
    r = cli(tmp_path, "decrypt", "-q", str(tmp_path / "sealed"), str(tmp_path / "out2"))
    assert r.returncode == 0, r.stderr  # the password slot (E2EBACKUP_PASSWORD=pw)
