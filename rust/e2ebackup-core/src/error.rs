//! The one error type of the core. The binding maps each variant to one Python exception class
//! from `e2ebackup.errors`; messages never contain key material or plaintext.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Authentication failed: wrong key or context, a commitment mismatch, tampering, truncation,
    /// extension or reordering. Deliberately one variant: telling these apart would help an attacker.
    InvalidTag,
    /// A key of the wrong length.
    InvalidKeyLength { expected: usize, got: usize },
    /// An output buffer too small for the result.
    BufferTooSmall { needed: usize, got: usize },
    /// A caller's argument is out of range or malformed; the text says what was expected.
    InvalidArgument(String),
    /// The message would exceed the format's 2^38-chunk limit.
    MessageTooLong,
    /// A stream context was used after `finalize`.
    AlreadyFinalized,
    /// A stream context was used after an earlier error; it stays failed.
    StreamFailed,
    /// The operating system's random number generator failed.
    Rng,
    /// The key or password does not open this key slot (its commitment does not match).
    KeyMismatch,
    /// A key slot is damaged: its key matched but its ciphertext did not authenticate.
    CorruptSlot,
    /// KDF parameters outside the hard limits; the text says which and what is allowed.
    KdfLimit(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidTag => f.write_str(
                "decryption failed: wrong key or context, or the ciphertext was truncated or modified",
            ),
            Error::InvalidKeyLength { expected, got } => {
                write!(f, "key must be {expected} bytes, got {got}")
            }
            Error::BufferTooSmall { needed, got } => {
                write!(f, "output buffer is too small: need {needed} bytes, got {got}")
            }
            Error::InvalidArgument(msg) => f.write_str(msg),
            Error::MessageTooLong => {
                f.write_str("message exceeds the limit of 2^38 chunks (4 PiB) per key and salt")
            }
            Error::AlreadyFinalized => f.write_str("this context has already been finalized"),
            Error::StreamFailed => f.write_str(
                "this context failed earlier and cannot be used again; start a new one",
            ),
            Error::Rng => f.write_str("the operating system's random number generator failed"),
            Error::KeyMismatch => f.write_str("the key or password does not open this key slot"),
            Error::CorruptSlot => f.write_str("the key slot is damaged"),
            Error::KdfLimit(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}
