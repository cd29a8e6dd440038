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
        let p = self.params;
        let skip_to = p.min.saturating_sub(64);
        let gear = &self.gear;
        let (mut hash, mut n) = (self.hash, self.in_chunk);
        let mut i = 0;
        // Phases of one chunk, each a tight loop: skip unhashed (bytes before min - 64 cannot
        // reach the hash at min), hash only, test with the harder mask, test with the easier.
        while i < data.len() {
            if n < skip_to {
                let take = (skip_to - n).min(data.len() - i);
                n += take;
                i += take;
                continue;
            }
            let mut cut = None;
            if n < p.min {
                let end = i + (p.min - n).min(data.len() - i);
                for &b in &data[i..end] {
                    hash = (hash << 1).wrapping_add(gear[b as usize]);
                }
                n += end - i;
                i = end;
                if n < p.min {
                    continue;
                }
                if hash & self.mask_small == 0 {
                    cut = Some(i);
                }
            }
            // The harder mask applies while the chunk, with the byte just hashed, is shorter
            // than avg.
            if cut.is_none() && n + 1 < p.avg {
                let end = i + (p.avg - 1 - n).min(data.len() - i);
                let mut j = i;
                while j < end {
                    hash = (hash << 1).wrapping_add(gear[data[j] as usize]);
                    j += 1;
                    if hash & self.mask_small == 0 {
                        cut = Some(j);
                        break;
                    }
                }
                n += j - i;
                i = j;
                if cut.is_none() && n + 1 < p.avg {
                    continue;
                }
            }
            if cut.is_none() {
                let end = i + (p.max - n).min(data.len() - i);
                let mut j = i;
                while j < end {
                    hash = (hash << 1).wrapping_add(gear[data[j] as usize]);
                    j += 1;
                    if hash & self.mask_large == 0 {
                        cut = Some(j);
                        break;
                    }
                }
                n += j - i;
                i = j;
                if cut.is_none() && n >= p.max {
                    cut = Some(i);
                }
            }
            if let Some(at) = cut {
                cuts.push(at);
                hash = 0;
                n = 0;
            }
        }
        self.hash = hash;
        self.in_chunk = n;
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

    /// The specification's per-byte loop (docs/FORMAT.md, Chunking), as plainly as possible.
    fn reference(
        gear: &[u64; 256],
        p: CdcParams,
        mask_s: u64,
        mask_l: u64,
        data: &[u8],
    ) -> Vec<usize> {
        let (mut cuts, mut h, mut n) = (Vec::new(), 0u64, 0usize);
        for (i, &b) in data.iter().enumerate() {
            n += 1;
            if n > p.min.saturating_sub(64) {
                h = (h << 1).wrapping_add(gear[b as usize]);
            }
            let mask = if n < p.avg { mask_s } else { mask_l };
            if (n >= p.min && h & mask == 0) || n >= p.max {
                cuts.push(i + 1);
                h = 0;
                n = 0;
            }
        }
        cuts
    }

    #[test]
    fn the_fast_loop_equals_the_specification() {
        let sizes = [
            (64, 128, 1024),
            (256, 1024, 4096),
            (100, 256, 300),
            (4096, 8192, 65536),
        ];
        for (k, &(min, avg, max)) in sizes.iter().enumerate() {
            let p = CdcParams { min, avg, max };
            let d = data(1 << 20, k as u8);
            let c = Chunker::new(&[k as u8; 32], p).unwrap();
            let expected = reference(&c.gear, p, c.mask_small, c.mask_large, &d);
            for step in [1, 7, 1000, 1 << 20] {
                let mut fast = Chunker::new(&[k as u8; 32], p).unwrap();
                let mut cuts = Vec::new();
                for (j, piece) in d.chunks(step).enumerate() {
                    cuts.extend(fast.feed(piece).into_iter().map(|x| x + j * step));
                }
                assert_eq!(cuts, expected, "params {min}/{avg}/{max}, step {step}");
            }
        }
    }

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
