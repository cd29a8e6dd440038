//! Streaming AES-256-GCM with a 16-byte IV and no associated data, as WhatsApp uses it.
//!
//! aws-lc-rs only offers 12-byte nonces and one-shot sealing, so this is standard GCM
//! (NIST SP 800-38D) assembled from RustCrypto's audited pieces: the AES block cipher (AES-NI /
//! VAES, detected at run time), its CTR mode with a 32-bit big-endian counter, and GHASH
//! (CLMUL). Nothing here is a hand-written block cipher or field multiplication:
//!
//! * `H = AES_K(0^128)`
//! * `J0 = GHASH_H(IV || 0^64 || [bitlen(IV)]_64)` (the IV is not 12 bytes)
//! * the keystream is AES-CTR from `inc32(J0)`, wrapping in the low 32 bits
//! * `tag = GHASH_H(C || 0-pad || [0]_64 || [bitlen(C)]_64) XOR AES_K(J0)`
//!
//! Decryption hashes the ciphertext before it is decrypted in place; the caller decides when the
//! tag is checked (in constant time, [`tags_equal`]) and must not release the plaintext before.
//! The GHASH state can be cloned, which the reader uses to check the two possible positions of
//! the tag (with and without the MD5 trailer) without reading the file twice.

use aes::cipher::{BlockCipherEncrypt, KeyInit, KeyIvInit, StreamCipher};
use aes::Aes256;
use ghash::universal_hash::UniversalHash;
use ghash::GHash;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Bytes of the IV that WhatsApp stores in the backup prefix.
pub const IV_SIZE: usize = 16;
/// Bytes of the GCM tag.
pub const TAG_SIZE: usize = 16;
/// AES-256 key bytes.
pub const KEY_SIZE: usize = 32;

const BLOCK: usize = 16;
/// GCM limits one message to 2^32 - 2 blocks of plaintext (the 32-bit counter).
pub const MAX_CIPHERTEXT: u64 = ((1u64 << 32) - 2) * BLOCK as u64;

type Ctr = ctr::Ctr32BE<Aes256>;

/// GHASH over a byte stream given in arbitrary pieces (GHASH itself takes whole blocks).
#[derive(Clone)]
pub struct Ghash {
    inner: GHash,
    pending: [u8; BLOCK],
    pending_len: usize,
    total: u64,
}

impl Ghash {
    fn new(h: &[u8; BLOCK]) -> Self {
        Ghash {
            inner: <GHash as KeyInit>::new(h.into()),
            pending: [0; BLOCK],
            pending_len: 0,
            total: 0,
        }
    }

    /// Hashes more ciphertext.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.pending_len > 0 {
            let take = (BLOCK - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < BLOCK {
                return;
            }
            self.inner.update_padded(&self.pending);
            self.pending_len = 0;
        }
        let whole = data.len() / BLOCK * BLOCK;
        if whole > 0 {
            self.inner.update_padded(&data[..whole]);
        }
        let rest = &data[whole..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// Ciphertext bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The GHASH of the ciphertext (zero-padded) and the length block.
    fn finish(mut self) -> [u8; BLOCK] {
        if self.pending_len > 0 {
            self.inner.update_padded(&self.pending[..self.pending_len]);
        }
        let mut lengths = [0u8; BLOCK];
        // No associated data: the first half stays zero.
        lengths[8..].copy_from_slice(&(self.total * 8).to_be_bytes());
        self.inner.update_padded(&lengths);
        self.inner.finalize().into()
    }
}

/// The per-message state shared by both directions: the tag mask `AES_K(J0)` and the hash key.
pub struct GcmKeys {
    mask: Zeroizing<[u8; BLOCK]>,
    h: Zeroizing<[u8; BLOCK]>,
    first_counter: [u8; BLOCK],
    key: Zeroizing<[u8; KEY_SIZE]>,
}

impl GcmKeys {
    pub fn new(key: &[u8; KEY_SIZE], iv: &[u8; IV_SIZE]) -> Self {
        let cipher = Aes256::new(key.into());
        let mut h = Zeroizing::new([0u8; BLOCK]);
        cipher.encrypt_block((&mut *h).into());
        // The IV is exactly one block, so J0 = GHASH(IV || [0]_64 || [128]_64).
        let mut len_block = [0u8; BLOCK];
        len_block[8..].copy_from_slice(&((IV_SIZE as u64) * 8).to_be_bytes());
        let mut j0_hash = <GHash as KeyInit>::new((&*h).into());
        j0_hash.update_padded(iv);
        j0_hash.update_padded(&len_block);
        let j0: [u8; BLOCK] = j0_hash.finalize().into();
        let mut mask = Zeroizing::new(j0);
        cipher.encrypt_block((&mut *mask).into());
        let mut first_counter = j0;
        let low = u32::from_be_bytes(j0[12..].try_into().expect("4 bytes"));
        first_counter[12..].copy_from_slice(&low.wrapping_add(1).to_be_bytes());
        GcmKeys {
            mask,
            h,
            first_counter,
            key: Zeroizing::new(*key),
        }
    }

    fn ctr(&self) -> Ctr {
        Ctr::new((&*self.key).into(), (&self.first_counter).into())
    }
}

/// Decrypts a GCM message given in pieces. [`Opener::open_in_place`] hashes, then decrypts;
/// [`Opener::tag`] computes the expected tag of everything seen so far.
pub struct Opener {
    keys: GcmKeys,
    ghash: Ghash,
    ctr: Ctr,
}

impl Opener {
    pub fn new(key: &[u8; KEY_SIZE], iv: &[u8; IV_SIZE]) -> Self {
        let keys = GcmKeys::new(key, iv);
        let ghash = Ghash::new(&keys.h);
        let ctr = keys.ctr();
        Opener { keys, ghash, ctr }
    }

    /// Hashes `data` as ciphertext, then decrypts it in place. The result is unauthenticated.
    pub fn open_in_place(&mut self, data: &mut [u8]) -> Result<()> {
        check_room(self.ghash.len(), data.len())?;
        self.ghash.update(data);
        self.ctr.apply_keystream(data);
        Ok(())
    }

    /// Ciphertext bytes processed so far.
    pub fn len(&self) -> u64 {
        self.ghash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ghash.is_empty()
    }

    /// A copy of the hash state, to try another end of the ciphertext.
    pub fn ghash(&self) -> Ghash {
        self.ghash.clone()
    }

    /// The tag of a message whose ciphertext was hashed into `ghash`.
    pub fn tag_of(&self, ghash: Ghash) -> [u8; TAG_SIZE] {
        xor_mask(ghash.finish(), &self.keys.mask)
    }
}

/// Encrypts a GCM message given in pieces.
pub struct Sealer {
    keys: GcmKeys,
    ghash: Ghash,
    ctr: Ctr,
}

impl Sealer {
    pub fn new(key: &[u8; KEY_SIZE], iv: &[u8; IV_SIZE]) -> Self {
        let keys = GcmKeys::new(key, iv);
        let ghash = Ghash::new(&keys.h);
        let ctr = keys.ctr();
        Sealer { keys, ghash, ctr }
    }

    /// Encrypts `data` in place and hashes the ciphertext.
    pub fn seal_in_place(&mut self, data: &mut [u8]) -> Result<()> {
        check_room(self.ghash.len(), data.len())?;
        self.ctr.apply_keystream(data);
        self.ghash.update(data);
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.ghash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ghash.is_empty()
    }

    pub fn tag(self) -> [u8; TAG_SIZE] {
        xor_mask(self.ghash.finish(), &self.keys.mask)
    }
}

/// GCM's 32-bit block counter bounds one message to just under 64 GiB.
fn check_room(done: u64, more: usize) -> Result<()> {
    if done + more as u64 > MAX_CIPHERTEXT {
        return Err(Error::WhatsAppFormat(
            "more than 64 GiB: larger than one AES-GCM message (and a WhatsApp backup) can be"
                .into(),
        ));
    }
    Ok(())
}

fn xor_mask(mut s: [u8; BLOCK], mask: &[u8; BLOCK]) -> [u8; TAG_SIZE] {
    for (a, b) in s.iter_mut().zip(mask) {
        *a ^= b;
    }
    s
}

/// Constant-time comparison of two tags or checksums.
pub fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
