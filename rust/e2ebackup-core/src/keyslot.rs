//! Key wrapping for key slots: a 32-byte data key sealed under a key-encryption key with the
//! committing C2SP construction (one chunk), bound to a caller-given context (the owning
//! container's id and the slot's public fields).
//!
//! Opening tells a wrong key (the commitment does not match: wrong password or recovery key)
//! from a damaged slot (the commitment matches but the tag does not).

use zeroize::Zeroizing;

use crate::chunked::{self, Algorithm, MessageKeys, HEADER_SIZE, KEY_SIZE};
use crate::error::{Error, Result};

/// Bytes of a wrapped 32-byte key: header, key, tag.
pub const WRAPPED_SIZE: usize = HEADER_SIZE + KEY_SIZE + chunked::TAG_SIZE;

/// Seals `data_key` under `kek`.
pub fn wrap(kek: &[u8], data_key: &[u8], context: &[u8]) -> Result<[u8; WRAPPED_SIZE]> {
    if data_key.len() != KEY_SIZE {
        return Err(Error::InvalidKeyLength {
            expected: KEY_SIZE,
            got: data_key.len(),
        });
    }
    let mut out = [0u8; WRAPPED_SIZE];
    chunked::encrypt_into(kek, Algorithm::Aes256Gcm, context, data_key, &mut out, 1)?;
    Ok(out)
}

/// Opens a wrapped key: [`Error::KeyMismatch`] if `kek` is not the slot's key,
/// [`Error::CorruptSlot`] if the slot was damaged.
pub fn unwrap(kek: &[u8], wrapped: &[u8], context: &[u8]) -> Result<Zeroizing<[u8; KEY_SIZE]>> {
    if wrapped.len() != WRAPPED_SIZE {
        return Err(Error::CorruptSlot);
    }
    let (header, body) = wrapped.split_at(HEADER_SIZE);
    let keys = match MessageKeys::from_header(kek, Algorithm::Aes256Gcm, header, context) {
        Ok(keys) => keys,
        Err(Error::InvalidTag) => return Err(Error::KeyMismatch),
        Err(e) => return Err(e),
    };
    let mut key = Zeroizing::new([0u8; KEY_SIZE]);
    keys.open_chunks(0, body, true, key.as_mut(), 1)
        .map_err(|_| Error::CorruptSlot)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trip_and_failures_are_told_apart() {
        let (kek, dk) = ([1u8; 32], [2u8; 32]);
        let w = wrap(&kek, &dk, b"slot").unwrap();
        assert_eq!(*unwrap(&kek, &w, b"slot").unwrap(), dk);
        assert_eq!(
            unwrap(&[3u8; 32], &w, b"slot").unwrap_err(),
            Error::KeyMismatch
        );
        assert_eq!(unwrap(&kek, &w, b"other").unwrap_err(), Error::KeyMismatch);
        let mut bad = w;
        bad[WRAPPED_SIZE - 1] ^= 1;
        assert_eq!(unwrap(&kek, &bad, b"slot").unwrap_err(), Error::CorruptSlot);
        assert_eq!(
            unwrap(&kek, &w[1..], b"slot").unwrap_err(),
            Error::CorruptSlot
        );
    }
}
