//! C2SP chunked-encryption v1 (<https://c2sp.org/chunked-encryption>), as used by e2ebackup.
//!
//! A message is `salt (24) || commitment (32) || chunk_0 || ... || chunk_n`. Every chunk but the
//! last carries exactly [`CHUNK_SIZE`] plaintext bytes; the last carries fewer (possibly none),
//! which is what makes truncation at a chunk boundary detectable. Each chunk is sealed on its own
//! (nonce = base nonce XOR counter, empty AAD), so chunks can be processed in parallel and read
//! in any order. `docs/FORMAT.md` is the normative description.

mod keys;
mod layout;
mod stream;

pub use keys::{Algorithm, MessageKeys};
pub use layout::{ciphertext_len, plaintext_len, run_plaintext_len};
pub use stream::{Decryptor, Encryptor, Stream};

use crate::error::{Error, Result};
use crate::rand;

/// Plaintext bytes in every chunk but the last.
pub const CHUNK_SIZE: usize = 16 * 1024;
/// AEAD tag appended to every chunk.
pub const TAG_SIZE: usize = 16;
/// Ciphertext bytes of a full chunk.
pub const CHUNK_CT_SIZE: usize = CHUNK_SIZE + TAG_SIZE;
/// Random per-message salt.
pub const SALT_SIZE: usize = 24;
/// Key commitment, checked before any chunk is opened.
pub const COMMITMENT_SIZE: usize = 32;
/// Bytes before the first chunk.
pub const HEADER_SIZE: usize = SALT_SIZE + COMMITMENT_SIZE;
/// Input keys for both AEADs.
pub const KEY_SIZE: usize = 32;
/// A message has at most this many chunks (the counter must fit the spec's limit).
pub const MAX_CHUNKS: u64 = 1 << 38;

/// Below this many plaintext bytes the work stays on the calling thread: handing a few chunks
/// to a pool costs more than it saves.
pub const PARALLEL_THRESHOLD: usize = 64 * CHUNK_SIZE;

/// Encrypts `plaintext` into `out` as one complete message with a fresh random salt.
/// Returns the number of bytes written, always `ciphertext_len(plaintext.len())`.
pub fn encrypt_into(
    key: &[u8],
    algorithm: Algorithm,
    context: &[u8],
    plaintext: &[u8],
    out: &mut [u8],
    threads: usize,
) -> Result<usize> {
    let salt = rand::array::<SALT_SIZE>()?;
    encrypt_into_with_salt(key, algorithm, context, &salt, plaintext, out, threads)
}

/// As [`encrypt_into`] with a caller-chosen salt. Only for test vectors: reusing a salt with the
/// same key and context reuses nonces, which destroys confidentiality.
pub fn encrypt_into_with_salt(
    key: &[u8],
    algorithm: Algorithm,
    context: &[u8],
    salt: &[u8; SALT_SIZE],
    plaintext: &[u8],
    out: &mut [u8],
    threads: usize,
) -> Result<usize> {
    let needed = ciphertext_len(plaintext.len() as u64)?;
    let needed = usize::try_from(needed).map_err(|_| Error::MessageTooLong)?;
    if out.len() < needed {
        return Err(Error::BufferTooSmall {
            needed,
            got: out.len(),
        });
    }
    let keys = MessageKeys::derive(key, algorithm, salt, context)?;
    let (header, body) = out[..needed].split_at_mut(HEADER_SIZE);
    header[..SALT_SIZE].copy_from_slice(salt);
    header[SALT_SIZE..].copy_from_slice(keys.commitment());
    keys.seal_chunks(0, plaintext, true, body, threads)?;
    Ok(needed)
}

/// Decrypts one complete message into `out`, returning the plaintext length. On any failure the
/// bytes of `out` that were written are wiped before the error is returned.
pub fn decrypt_into(
    key: &[u8],
    algorithm: Algorithm,
    context: &[u8],
    ciphertext: &[u8],
    out: &mut [u8],
    threads: usize,
) -> Result<usize> {
    let needed = plaintext_len(ciphertext.len() as u64)?;
    let needed = usize::try_from(needed).map_err(|_| Error::MessageTooLong)?;
    if out.len() < needed {
        return Err(Error::BufferTooSmall {
            needed,
            got: out.len(),
        });
    }
    let (header, body) = ciphertext.split_at(HEADER_SIZE);
    let keys = MessageKeys::from_header(key, algorithm, header, context)?;
    keys.open_chunks(0, body, true, &mut out[..needed], threads)
}
