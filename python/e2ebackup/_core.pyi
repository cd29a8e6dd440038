# Type stubs for the compiled module e2ebackup._core (checked by mypy.stubtest).
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, final

from typing_extensions import Buffer

__all__ = [
    "CHUNK_SIZE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_BLOB_SIZE",
    "OPAQUE_KSF_INTEROP",
    "RECIPIENT_ENCAPSULATION_SIZE",
    "RECIPIENT_PUBLIC_SIZE",
    "RECIPIENT_SEED_SIZE",
    "TAG_SIZE",
    "WRAPPED_KEY_SIZE",
    "BlobCodec",
    "ChunkOpener",
    "Chunker",
    "Decryptor",
    "Encryptor",
    "OpaqueClientLogin",
    "OpaqueClientRegistration",
    "OpaqueServer",
    "RecipientIdentity",
    "_encrypt_with_salt",
    "_recipient_encapsulate_deterministic",
    "argon2id",
    "ciphertext_length",
    "decrypt",
    "decrypt_into",
    "encrypt",
    "encrypt_into",
    "generate_key",
    "hkdf_sha256",
    "looks_compressed",
    "opaque_registration_finish",
    "plaintext_length",
    "recipient_check",
    "recipient_encapsulate",
    "scrypt",
    "unwrap_key",
    "whatsapp_decrypt",
    "whatsapp_encrypt",
    "whatsapp_parse_header",
    "wrap_key",
    "write_new_files",
]

CHUNK_SIZE: Final[int]
HEADER_SIZE: Final[int]
TAG_SIZE: Final[int]
KEY_SIZE: Final[int]
WRAPPED_KEY_SIZE: Final[int]
MAX_BLOB_SIZE: Final[int]

def generate_key() -> bytes: ...
def encrypt(
    key: Buffer,
    data: Buffer,
    *,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
) -> bytes: ...
def decrypt(
    key: Buffer,
    data: Buffer,
    *,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
) -> bytes: ...
def encrypt_into(
    key: Buffer,
    data: Buffer,
    out: Buffer,
    *,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
) -> int: ...
def decrypt_into(
    key: Buffer,
    data: Buffer,
    out: Buffer,
    *,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
) -> int: ...
def ciphertext_length(plaintext_length: int) -> int: ...
def plaintext_length(ciphertext_length: int) -> int: ...
def _encrypt_with_salt(
    key: Buffer,
    data: Buffer,
    salt: Buffer,
    *,
    context: Buffer | None = None,
    algorithm: str = "aes-256-gcm",
    threads: int | None = None,
) -> bytes: ...

@final
class Encryptor:
    def __new__(
        cls,
        key: Buffer,
        context: Buffer | None = None,
        *,
        algorithm: str = "aes-256-gcm",
        threads: int | None = None,
    ) -> Encryptor: ...
    @staticmethod
    def _with_salt(
        key: Buffer, salt: Buffer, context: Buffer | None = None, *, algorithm: str = "aes-256-gcm"
    ) -> Encryptor: ...
    @staticmethod
    def generate_key() -> bytes: ...
    def update(self, data: Buffer) -> bytes: ...
    def update_into(self, data: Buffer, buf: Buffer) -> int: ...
    def update_length(self, length: int) -> int: ...
    def finalize(self) -> bytes: ...

@final
class Decryptor:
    def __new__(
        cls,
        key: Buffer,
        context: Buffer | None = None,
        *,
        algorithm: str = "aes-256-gcm",
        threads: int | None = None,
    ) -> Decryptor: ...
    def update(self, data: Buffer) -> bytes: ...
    def update_into(self, data: Buffer, buf: Buffer) -> int: ...
    def update_length(self, length: int) -> int: ...
    def finalize(self) -> bytes: ...

@final
class ChunkOpener:
    def __new__(
        cls,
        key: Buffer,
        header: Buffer,
        context: Buffer | None = None,
        *,
        algorithm: str = "aes-256-gcm",
        threads: int | None = None,
    ) -> ChunkOpener: ...
    def open(self, first: int, ciphertext: Buffer, last: bool) -> bytes: ...

def argon2id(
    password: Buffer,
    salt: Buffer,
    *,
    memory_kib: int = 65536,
    iterations: int = 3,
    parallelism: int = 4,
    length: int = 32,
    secret: Buffer | None = None,
    associated_data: Buffer | None = None,
) -> bytes: ...
def scrypt(
    password: Buffer, salt: Buffer, *, log2_n: int = 17, r: int = 8, p: int = 1, length: int = 32
) -> bytes: ...
def hkdf_sha256(
    ikm: Buffer, *, info: Buffer, salt: Buffer | None = None, length: int = 32
) -> bytes: ...
def wrap_key(kek: Buffer, data_key: Buffer, context: Buffer) -> bytes: ...
def unwrap_key(kek: Buffer, wrapped: Buffer, context: Buffer) -> bytes: ...

@final
class Chunker:
    def __new__(
        cls,
        key: Buffer,
        *,
        min_size: int = 524288,
        avg_size: int = 1048576,
        max_size: int = 8388608,
    ) -> Chunker: ...
    def feed(self, data: Buffer) -> list[int]: ...
    def reset(self) -> None: ...

@final
class BlobCodec:
    def __new__(cls, id_key: Buffer, enc_key: Buffer, repo_id: Buffer) -> BlobCodec: ...
    def id(self, data: Buffer) -> bytes: ...
    def ids(self, blobs: Sequence[Buffer], *, threads: int | None = None) -> list[bytes]: ...
    def seal_many(
        self,
        kind: int,
        blobs: Sequence[Buffer],
        *,
        ids: Sequence[bytes] | None = None,
        compress: Sequence[bool] | None = None,
        threads: int | None = None,
    ) -> list[tuple[bytes, bytes]]: ...
    def open(self, kind: int, id: Buffer, sealed: Buffer) -> bytes: ...
    def open_many(
        self,
        kind: int,
        ids: Sequence[Buffer],
        spans: Sequence[tuple[int, int]],
        sealed: Buffer,
        *,
        limit: int = ...,
    ) -> list[bytes | None]: ...

def looks_compressed(data: Buffer) -> bool: ...

# Restore's small files (Linux only): complete files written into the folder open as ``folder``,
# each unnamed until whole, then linked at its name; per file True if placed, False if the name
# existed. Items: (name as bytes, blobs, mode, uid or -1, gid or -1, mtime_ns).
def write_new_files(
    folder: int, files: Sequence[tuple[bytes, Sequence[Buffer], int, int, int, int]]
) -> list[bool]: ...

# OPAQUE, for the key vault (e2ebackup.vault wraps these).
OPAQUE_KSF_INTEROP: Final[tuple[int, int, int]]

@final
class OpaqueServer:
    def __new__(cls, setup: Buffer | None = None) -> OpaqueServer: ...
    def setup_bytes(self) -> bytes: ...
    @property
    def public_key(self) -> bytes: ...
    def registration_response(self, request: Buffer, credential_id: Buffer) -> bytes: ...
    def login_start(
        self,
        request: Buffer,
        credential_id: Buffer,
        password_file: Buffer | None,
        context: Buffer,
    ) -> tuple[bytes, bytes]: ...
    def login_finish(self, state: Buffer, context: Buffer, finalization: Buffer) -> bytes: ...

def opaque_registration_finish(upload: Buffer) -> bytes: ...

@final
class OpaqueClientRegistration:
    def __new__(cls, password: Buffer) -> OpaqueClientRegistration: ...
    @property
    def request(self) -> bytes: ...
    def finish(
        self,
        password: Buffer,
        response: Buffer,
        *,
        memory_kib: int = 19456,
        iterations: int = 2,
        parallelism: int = 1,
    ) -> tuple[bytes, bytes, bytes]: ...

@final
class OpaqueClientLogin:
    def __new__(cls, password: Buffer) -> OpaqueClientLogin: ...
    @property
    def request(self) -> bytes: ...
    def finish(
        self,
        password: Buffer,
        response: Buffer,
        *,
        memory_kib: int = 19456,
        iterations: int = 2,
        parallelism: int = 1,
    ) -> tuple[bytes, bytes, bytes, bytes]: ...

# WhatsApp crypt15 (e2ebackup.whatsapp wraps these). Sources and sinks are file descriptors or
# objects with read(n) / write(b) and flush().
class _Source(Protocol):
    def read(self, size: int, /) -> bytes: ...

class _Sink(Protocol):
    def write(self, data: bytes, /) -> int | None: ...
    def flush(self) -> object: ...

def whatsapp_parse_header(data: Buffer, *, at_eof: bool = False) -> dict[str, Any] | None: ...
def whatsapp_decrypt(
    key: Buffer,
    key_kind: str,
    src: int | _Source,
    dst: int | _Sink,
    *,
    decompress: bool = True,
    progress: Callable[[int], object] | None = None,
) -> dict[str, Any]: ...
def whatsapp_encrypt(
    key: Buffer,
    src: int | _Source,
    dst: int | _Sink,
    *,
    info_raw: Buffer | None = None,
    info_fields: tuple[str | None, str | None, int | None, list[tuple[int, bool]]] | None = None,
    level: int = 2,
    multi_file: bool = False,
    iv: Buffer | None = None,
    progress: Callable[[int], object] | None = None,
) -> dict[str, Any]: ...

# Recipient keys (X25519 + ML-KEM-768): e2ebackup.recipients.
RECIPIENT_SEED_SIZE: Final[int]
RECIPIENT_PUBLIC_SIZE: Final[int]
RECIPIENT_ENCAPSULATION_SIZE: Final[int]

@final
class RecipientIdentity:
    def __new__(cls, seed: Buffer) -> RecipientIdentity: ...
    def public(self) -> bytes: ...
    def decapsulate(self, enc: Buffer) -> bytes: ...

def recipient_check(public: Buffer) -> None: ...
def recipient_encapsulate(public: Buffer) -> tuple[bytes, bytes]: ...
def _recipient_encapsulate_deterministic(
    public: Buffer, m: Buffer, ephemeral: Buffer
) -> tuple[bytes, bytes]: ...
