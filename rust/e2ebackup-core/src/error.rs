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
    /// Not a WhatsApp crypt14/crypt15 backup, or one this version cannot read; the text says why.
    WhatsAppFormat(String),
    /// A WhatsApp backup that ends early; the text says where.
    WhatsAppTruncated(String),
    /// A damaged WhatsApp backup: its MD5 checksum does not match; the text says more.
    WhatsAppCorrupted(String),
    /// An intact WhatsApp backup that this key does not open, or a key of the wrong kind.
    WhatsAppWrongKey(String),
    /// Reading or writing failed (the OS error number, if there is one, and its text).
    Io { errno: Option<i32>, message: String },
    /// A file of a batch written by `restore::write_new_files` failed: its place in the batch,
    /// its name and the OS error number. The files before it are done; the message gives the
    /// place and the OS error's text, never the name.
    NewFileFailed {
        index: usize,
        name: Vec<u8>,
        errno: i32,
    },
    /// An OPAQUE login that did not verify: a wrong password, a vault without this record, or a
    /// vault other than the one of the registration. Deliberately one variant.
    VaultLoginFailed,
    /// An OPAQUE message or vault state that does not parse; the text says which.
    VaultProtocol(String),
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
            Error::WhatsAppFormat(msg)
            | Error::WhatsAppTruncated(msg)
            | Error::WhatsAppCorrupted(msg)
            | Error::WhatsAppWrongKey(msg) => f.write_str(msg),
            Error::Io { message, .. } => f.write_str(message),
            Error::NewFileFailed { index, errno, .. } => write!(
                f,
                "could not write file {index} of the batch: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Error::VaultLoginFailed => f.write_str(
                "the vault login failed: wrong password, or the vault does not hold this key",
            ),
            Error::VaultProtocol(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io {
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }
}
