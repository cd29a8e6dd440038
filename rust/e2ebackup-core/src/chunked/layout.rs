//! Length arithmetic: where each chunk sits, and which lengths are valid at all.

use super::{CHUNK_CT_SIZE, CHUNK_SIZE, HEADER_SIZE, MAX_CHUNKS, TAG_SIZE};
use crate::error::{Error, Result};

/// Ciphertext length of a message with `plaintext_len` bytes:
/// `56 + plaintext_len + 16 * (floor(plaintext_len / 16384) + 1)`.
pub fn ciphertext_len(plaintext_len: u64) -> Result<u64> {
    let chunks = plaintext_len / CHUNK_SIZE as u64 + 1;
    if chunks > MAX_CHUNKS {
        return Err(Error::MessageTooLong);
    }
    Ok(HEADER_SIZE as u64 + plaintext_len + TAG_SIZE as u64 * chunks)
}

/// Plaintext length of a message whose ciphertext is `ciphertext_len` bytes, or
/// [`Error::InvalidTag`] when no message can have that length (it was truncated or extended).
pub fn plaintext_len(ciphertext_len: u64) -> Result<u64> {
    let body = ciphertext_len
        .checked_sub((HEADER_SIZE + TAG_SIZE) as u64)
        .ok_or(Error::InvalidTag)?;
    let full_chunks = body / CHUNK_CT_SIZE as u64;
    let last = body % CHUNK_CT_SIZE as u64;
    if last >= CHUNK_SIZE as u64 || full_chunks + 1 > MAX_CHUNKS {
        return Err(Error::InvalidTag);
    }
    Ok(full_chunks * CHUNK_SIZE as u64 + last)
}

/// Plaintext length of a run of consecutive chunks with `ciphertext_len` bytes; `last` says the
/// run ends with the message's final chunk (shorter than a whole one), otherwise every chunk in
/// it must be whole.
pub fn run_plaintext_len(ciphertext_len: usize, last: bool) -> Result<usize> {
    let full = ciphertext_len / CHUNK_CT_SIZE;
    let remainder = ciphertext_len % CHUNK_CT_SIZE;
    match (last, remainder) {
        (false, 0) => Ok(full * CHUNK_SIZE),
        (true, r) if r >= TAG_SIZE => Ok(full * CHUNK_SIZE + r - TAG_SIZE),
        _ => Err(Error::InvalidTag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip_at_chunk_boundaries() {
        for n in [0u64, 1, 16383, 16384, 16385, 32767, 32768, 32769, 1 << 30] {
            assert_eq!(
                plaintext_len(ciphertext_len(n).unwrap()).unwrap(),
                n,
                "n = {n}"
            );
        }
    }

    #[test]
    fn impossible_lengths_are_rejected() {
        for bad in [0u64, 55, 56, 71] {
            assert_eq!(plaintext_len(bad), Err(Error::InvalidTag), "len = {bad}");
        }
        // A full final chunk means the true final chunk was cut off.
        let full_final = (HEADER_SIZE + CHUNK_CT_SIZE) as u64;
        for extra in 0..TAG_SIZE as u64 {
            assert_eq!(plaintext_len(full_final + extra), Err(Error::InvalidTag));
        }
        assert_eq!(plaintext_len(full_final - 1).unwrap(), 16383);
        assert_eq!(plaintext_len(full_final + 16).unwrap(), 16384);
    }

    #[test]
    fn the_chunk_limit_is_enforced() {
        let max_pt = MAX_CHUNKS * CHUNK_SIZE as u64 - 1;
        assert!(ciphertext_len(max_pt).is_ok());
        assert_eq!(ciphertext_len(max_pt + 1), Err(Error::MessageTooLong));
    }
}
