//! Content-defined chunking with a secret gear table (FastCDC with normalized chunking).
//!
//! Why keyed: with a public chunker, the sizes of stored chunks fingerprint known files even
//! through encryption (an attacker who can see chunk sizes can test "does this backup contain
//! that file?"). Borg 2 seeds its chunker with a secret for this reason; here the 256-entry gear
//! table is derived from a per-repository secret with BLAKE3, so cut points are unpredictable
//! without the key. Packing blobs into larger pack files hides the sizes further.

use crate::error::{Error, Result};

/// Chunk size bounds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdcParams {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

impl CdcParams {
    /// 512 KiB / 1 MiB / 8 MiB, as restic: large enough that a 100 GB tree is about 100k
    /// chunks, small enough that an edit re-uploads about a megabyte.
    pub const DEFAULT: CdcParams = CdcParams {
        min: 512 << 10,
        avg: 1 << 20,
        max: 8 << 20,
    };

    pub fn check(&self) -> Result<()> {
        let ok = self.avg.is_power_of_two()
            && (64..=self.avg).contains(&self.min)
            && self.min < self.avg
            && self.avg < self.max
            && self.max <= 64 << 20;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(
                "chunker sizes must satisfy 64 <= min < avg < max <= 64 MiB, avg a power of two"
                    .into(),
            ))
        }
    }
}

/// A streaming chunker: feed it a file's bytes in pieces of any size; it reports where chunks
/// end. The bytes after the last reported cut form the final chunk.
pub struct Chunker {
    gear: [u64; 256],
    params: CdcParams,
    mask_small: u64,
    mask_large: u64,
    hash: u64,
    in_chunk: usize,
}

impl Chunker {
    pub fn new(key: &[u8; 32], params: CdcParams) -> Result<Self> {
        params.check()?;
        let mut table = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(key)
            .update(b"e2ebackup/v1/repo/chunker-gear")
            .finalize_xof()
            .fill(&mut table);
        let mut gear = [0u64; 256];
        for (g, bytes) in gear.iter_mut().zip(table.chunks_exact(8)) {
            *g = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        }
        let bits = params.avg.trailing_zeros();
        // Normalized chunking (level 2): harder to cut before the average, easier after.
        let mask = |n: u32| -> u64 { ((1u128 << n) - 1) as u64 };
        Ok(Chunker {
            gear,
            params,
            mask_small: mask(bits + 2) << (64 - (bits + 2)),
            mask_large: mask(bits - 2) << (64 - (bits - 2)),
            hash: 0,
            in_chunk: 0,
        })
    }

    /// Feeds `data`; returns the offsets within `data` just past each chunk that ended in it.
    pub fn feed(&mut self, data: &[u8]) -> Vec<usize> {
        let mut cuts = Vec::new();
        let mut i = 0;
        let p = self.params;
        while i < data.len() {
            // Bytes before min - 64 cannot influence the hash at min: skip them unhashed.
            let skip_to = p.min.saturating_sub(64);
            if self.in_chunk < skip_to {
                let n = (skip_to - self.in_chunk).min(data.len() - i);
                self.in_chunk += n;
                i += n;
                continue;
            }
            let b = data[i];
            self.hash = (self.hash << 1).wrapping_add(self.gear[b as usize]);
            self.in_chunk += 1;
            i += 1;
            let mask = if self.in_chunk < p.avg {
                self.mask_small
            } else {
                self.mask_large
            };
            if (self.in_chunk >= p.min && self.hash & mask == 0) || self.in_chunk >= p.max {
                cuts.push(i);
                self.hash = 0;
                self.in_chunk = 0;
            }
        }
        cuts
    }

    /// Forgets any partial chunk, to start a new file.
    pub fn reset(&mut self) {
        self.hash = 0;
        self.in_chunk = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; n];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn chunks(key: &[u8; 32], d: &[u8], step: usize) -> Vec<usize> {
        let mut c = Chunker::new(key, CdcParams::DEFAULT).unwrap();
        let mut cuts = Vec::new();
        for (k, piece) in d.chunks(step).enumerate() {
            cuts.extend(c.feed(piece).into_iter().map(|x| x + k * step));
        }
        cuts
    }

    #[test]
    fn cuts_do_not_depend_on_how_the_data_is_fed_and_respect_bounds() {
        let d = data(40 << 20, 1);
        let a = chunks(&[1; 32], &d, 1 << 20);
        assert_eq!(a, chunks(&[1; 32], &d, 77_777));
        let mut prev = 0;
        for &cut in &a {
            let size = cut - prev;
            assert!((512 << 10..=8 << 20).contains(&size), "chunk of {size}");
            prev = cut;
        }
        let avg = a.last().unwrap() / a.len();
        assert!((700 << 10..=1600 << 10).contains(&avg), "average {avg}");
    }

    #[test]
    fn a_different_key_cuts_elsewhere_and_an_insert_resynchronises() {
        let d = data(16 << 20, 2);
        let a = chunks(&[1; 32], &d, 1 << 20);
        assert_ne!(a, chunks(&[2; 32], &d, 1 << 20));
        let mut edited = d[..3 << 20].to_vec();
        edited.extend_from_slice(b"inserted bytes");
        edited.extend_from_slice(&d[3 << 20..]);
        let b = chunks(&[1; 32], &edited, 1 << 20);
        let shifted: Vec<usize> = b.iter().map(|c| c - 14).collect();
        let common = a.iter().filter(|c| shifted.contains(c)).count();
        assert!(
            common + 2 >= a.len(),
            "only {common} of {} cuts survive an insert",
            a.len()
        );
    }
}
