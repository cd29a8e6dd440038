//! The keyed content-defined chunker (rust/e2ebackup-core/src/cdc.rs): arbitrary sizes are
//! refused or accepted without panicking; for accepted ones, the fast loop cuts exactly where
//! the specification's per-byte rule does (docs/FORMAT.md, Chunking), whatever the pieces the
//! data arrives in, with every chunk within min..=max and the chunks covering the input.

use e2ebackup_core::cdc::{CdcParams, Chunker};

use crate::input::{pieces, Input};

/// The gear table, from the format's definition rather than the chunker's code.
fn gear(key: &[u8; 32]) -> [u64; 256] {
    let mut table = [0u8; 256 * 8];
    blake3::Hasher::new_keyed(key)
        .update(b"e2ebackup/v1/repo/chunker-gear")
        .finalize_xof()
        .fill(&mut table);
    let mut gear = [0u64; 256];
    for (g, bytes) in gear.iter_mut().zip(table.chunks_exact(8)) {
        *g = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    }
    gear
}

/// The specification's loop, one byte at a time.
fn reference(key: &[u8; 32], p: CdcParams, data: &[u8]) -> Vec<usize> {
    let gear = gear(key);
    let bits = p.avg.trailing_zeros();
    let top = |n: u32| -> u64 { (((1u128 << n) - 1) as u64) << (64 - n) };
    let (mask_s, mask_l) = (top(bits + 2), top(bits - 2));
    let (mut cuts, mut h, mut n) = (Vec::new(), 0u64, 0usize);
    for (i, &b) in data.iter().enumerate() {
        n += 1;
        if n > p.min.saturating_sub(64) {
            h = (h << 1).wrapping_add(gear[usize::from(b)]);
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

fn feed_all(chunker: &mut Chunker, parts: &[&[u8]]) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut offset = 0;
    for part in parts {
        let found = chunker.feed(part);
        let mut previous = 0;
        for &c in &found {
            assert!(c > previous, "cuts out of order or empty chunk");
            assert!(c <= part.len(), "a cut past the end of the piece");
            previous = c;
        }
        cuts.extend(found.into_iter().map(|c| c + offset));
        offset += part.len();
    }
    cuts
}

pub fn cdc_chunker(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    // Raw sizes, as a config could carry them: check() decides, nothing panics.
    let raw = CdcParams {
        min: input.u32() as usize,
        avg: input.u32() as usize,
        max: input.u32() as usize,
    };
    let accepted = raw.check().is_ok();
    assert_eq!(accepted, Chunker::new(&[0; 32], raw).is_ok());
    // Small valid sizes derived from the input, so that short inputs make many chunks.
    let bits = 7 + u32::from(input.u8() % 6); // avg 128 .. 4096
    let avg = 1usize << bits;
    let min = 64 + usize::from(input.u16()) % (avg - 64);
    let max = avg + 1 + usize::from(input.u16()) % (4 * avg);
    let params = if mode & 1 != 0 && accepted && raw.max <= 1 << 16 {
        raw
    } else {
        CdcParams { min, avg, max }
    };
    params.check().expect("derived sizes are valid");
    let key: [u8; 32] = if mode & 2 != 0 {
        input.array()
    } else {
        [7; 32]
    };
    let split_count = usize::from(input.u8() % 16);
    let sizes = input.bytes(split_count).to_vec();
    let scale = 1 + usize::from(input.u8() % 64);
    let content = input.rest();
    // Low-entropy inputs cut at max; XOF-expanded ones cut by content.
    let expanded;
    let content = if mode & 4 != 0 {
        let mut out = vec![0u8; content.len() * 16];
        blake3::Hasher::new()
            .update(content)
            .finalize_xof()
            .fill(&mut out);
        expanded = out;
        &expanded[..]
    } else {
        content
    };

    let expected = reference(&key, params, content);
    let mut chunker = Chunker::new(&key, params).expect("valid sizes");
    let whole = feed_all(&mut chunker, &[content]);
    assert_eq!(
        whole, expected,
        "the fast loop disagrees with the specification"
    );
    chunker.reset();
    let parts = pieces(content, &sizes, scale);
    assert_eq!(
        feed_all(&mut chunker, &parts),
        expected,
        "cuts depend on how data is fed"
    );

    let mut start = 0;
    for &cut in &expected {
        let size = cut - start;
        assert!(
            (params.min..=params.max).contains(&size),
            "chunk of {size} bytes"
        );
        start = cut;
    }
    assert!(start <= content.len());
    assert!(
        content.len() - start < params.max,
        "a final chunk of max bytes or more"
    );
}
