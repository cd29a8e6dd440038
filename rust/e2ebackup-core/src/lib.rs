//! Pure-Rust core of e2ebackup.
//!
//! Everything that touches bulk bytes or secrets lives here, with no Python in sight, so that
//! `cargo test` exercises it directly and the PyO3 binding stays a thin translation layer.
//!
//! * [`chunked`]: C2SP chunked-encryption v1 (byte-compatible with `cryptography.cobblestone`),
//!   parallel across cores and seekable.
//! * [`kdf`]: Argon2id, scrypt and HKDF; [`keyslot`]: committing key wrapping.
//! * [`cdc`]: keyed content-defined chunking; [`blob`]: repository blobs (ids, zstd, AEAD).
//! * [`rand`]: randomness, only ever from the operating system's CSPRNG.
//! * [`whatsapp`]: WhatsApp's crypt15 backups (read and write) and crypt14 (read).
//! * `restore` (Linux): restore's small files, each unnamed until whole, never replacing a name.

pub mod blob;
pub mod cdc;
pub mod chunked;
pub mod error;
pub mod kdf;
pub mod keyslot;
pub mod opaque;
pub mod parallel;
pub mod rand;
pub mod recipient;
#[cfg(target_os = "linux")]
pub mod restore;
pub mod whatsapp;

pub use error::{Error, Result};
