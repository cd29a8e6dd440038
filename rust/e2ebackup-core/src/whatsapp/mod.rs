//! WhatsApp's encrypted local backups: read and write crypt15 (and read crypt14).
//!
//! A single-file backup (`msgstore.db.crypt15`, `wa.db.crypt15`, ...) is
//!
//! ```text
//! [length][BackupPrefix protobuf][AES-256-GCM ciphertext][16-byte tag][16-byte MD5]
//! ```
//!
//! where the MD5 covers every byte before it and the plaintext is the zlib-compressed SQLite
//! database. Multi-file backups (stickers, wallpapers) have no MD5 trailer and carry a ZIP
//! archive, uncompressed. The GCM IV is 16 bytes and comes from the prefix ([`prefix`]); the
//! AES key of crypt15 is HKDF-SHA256(root key, no salt, "backup encryption"), the root key being
//! the user's 64-digit key; crypt14 uses the last 32 bytes of the legacy `key` file as is.
//!
//! Both directions stream with bounded memory (a few MiB whatever the backup size) and use two
//! or three threads: reading, hashing and decrypting; inflating; writing. Decryption writes its
//! output to a sink that the caller must treat as a temporary file: it is only valid once
//! [`decrypt`] returned `Ok`, after the tag and the MD5 were checked in constant time, and must
//! be discarded on any error. Nothing here ever hands out unauthenticated plaintext otherwise.

mod decrypt;
mod encrypt;
pub mod gcm;
mod pipe;
pub mod prefix;

pub use decrypt::{decrypt, read_header, DecryptOptions, DecryptReport, Layout, Payload};
pub use encrypt::{encrypt, EncryptOptions, EncryptReport};
pub use prefix::{BackupInfo, BackupPrefix, C14Cipher, Header, Version};

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::kdf;

/// Bytes of the root key (the 64 hex digits) and of the crypt14 AES key.
pub const KEY_SIZE: usize = 32;
/// Bytes of the MD5 trailer of single-file backups.
pub const CHECKSUM_SIZE: usize = 16;
/// The HKDF label of the backup-encryption key.
pub const BACKUP_ENCRYPTION_INFO: &[u8] = b"backup encryption";

/// A key that opens WhatsApp backups.
pub enum BackupKey {
    /// The crypt15 root key: the 64-digit key, or the content of `encrypted_backup.key`.
    Crypt15Root(Zeroizing<[u8; KEY_SIZE]>),
    /// The AES key of a crypt14 backup (the last 32 bytes of the 131-byte `key` file).
    Crypt14(Zeroizing<[u8; KEY_SIZE]>),
}

impl BackupKey {
    pub fn crypt15(root: &[u8]) -> Result<Self> {
        Ok(BackupKey::Crypt15Root(Zeroizing::new(key_array(root)?)))
    }

    pub fn crypt14(aes_key: &[u8]) -> Result<Self> {
        Ok(BackupKey::Crypt14(Zeroizing::new(key_array(aes_key)?)))
    }

    /// The AES-256 key for a backup of this version.
    pub fn cipher_key(&self, version: Version) -> Result<Zeroizing<[u8; KEY_SIZE]>> {
        match (self, version) {
            (BackupKey::Crypt15Root(root), Version::Crypt15) => backup_encryption_key(root),
            (BackupKey::Crypt14(key), Version::Crypt14) => Ok(key.clone()),
            (BackupKey::Crypt15Root(_), Version::Crypt14) => Err(Error::WhatsAppWrongKey(
                "this is a crypt14 backup: it opens with the legacy 131-byte `key` file, not with \
                 a 64-digit (crypt15) key"
                    .into(),
            )),
            (BackupKey::Crypt14(_), Version::Crypt15) => Err(Error::WhatsAppWrongKey(
                "this is a crypt15 backup: it opens with the 64-digit key (or \
                 encrypted_backup.key), not with a crypt14 `key` file"
                    .into(),
            )),
        }
    }
}

fn key_array(key: &[u8]) -> Result<[u8; KEY_SIZE]> {
    key.try_into().map_err(|_| Error::InvalidKeyLength {
        expected: KEY_SIZE,
        got: key.len(),
    })
}

/// HKDF-SHA256(IKM = root key, salt = none, info = "backup encryption"), 32 bytes: the AES key
/// of crypt15 backups. (WhatsApp's own code writes this as an HMAC loop; it is RFC 5869.)
pub fn backup_encryption_key(root: &[u8; KEY_SIZE]) -> Result<Zeroizing<[u8; KEY_SIZE]>> {
    let mut out = Zeroizing::new([0u8; KEY_SIZE]);
    kdf::hkdf_sha256(root, &[], BACKUP_ENCRYPTION_INFO, out.as_mut())?;
    Ok(out)
}
