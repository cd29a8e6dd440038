//! Repository blobs: content ids by keyed MAC, optional zstd compression, and encryption as one
//! C2SP message bound to the repository, the blob's type and its id.
//!
//! Plaintext layout before encryption: `flags (1) || length (u32 BE) || body`, where flags 0 is
//! stored and 1 is zstd, and length is the uncompressed length (so decompression is bounded).

use rayon::prelude::*;
use std::cell::RefCell;

use crate::chunked::{self, Algorithm};
use crate::error::{Error, Result};
use crate::parallel;

/// Largest plaintext blob: a data chunk is at most 8 MiB; tree blobs are kept below this too.
pub const MAX_BLOB: usize = 64 << 20;
const CONTEXT: &[u8] = b"e2ebackup/v1/repo/blob\x00";
const FLAG_STORED: u8 = 0;
const FLAG_ZSTD: u8 = 1;
const ZSTD_LEVEL: i32 = 3;

/// Keys of a repository's blobs, derived from its data key (docs/FORMAT.md).
pub struct BlobKeys {
    id_key: [u8; 32],
    enc_key: [u8; 32],
    repo_id: [u8; 16],
}

impl Drop for BlobKeys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.id_key.zeroize();
        self.enc_key.zeroize();
    }
}

/// Does the data start like a format that is already compressed (so zstd would only waste
/// time)? Decided by content, not by file name.
pub fn looks_compressed(data: &[u8]) -> bool {
    const MAGICS: &[&[u8]] = &[
        b"\xff\xd8\xff",         // JPEG
        b"\x89PNG\r\n\x1a\n",    // PNG
        b"GIF8",                 // GIF
        b"PK\x03\x04",           // ZIP, docx, apk, jar
        b"\x1f\x8b",             // gzip
        b"\x28\xb5\x2f\xfd",     // zstd
        b"\xfd7zXZ\x00",         // xz
        b"BZh",                  // bzip2
        b"7z\xbc\xaf\x27\x1c",   // 7-Zip
        b"Rar!\x1a\x07",         // RAR
        b"\x1a\x45\xdf\xa3",     // Matroska, WebM
        b"OggS",                 // Ogg, Opus
        b"ID3",                  // MP3
        b"fLaC",                 // FLAC
        b"%PDF",                 // PDF (mostly deflated streams)
        b"\x00\x00\x00\x0cjP  ", // JPEG 2000
    ];
    if MAGICS.iter().any(|m| data.starts_with(m)) {
        return true;
    }
    // ISO base media (MP4, MOV, HEIC, AVIF, 3GP): a box of type "ftyp" at offset 4.
    if data.len() >= 12 && &data[4..8] == b"ftyp" {
        return true;
    }
    // RIFF containers holding compressed media: WebP, AVI.
    if data.len() >= 12 && data.starts_with(b"RIFF") && matches!(&data[8..12], b"WEBP" | b"AVI ") {
        return true;
    }
    // MPEG audio frame sync.
    data.len() >= 2 && data[0] == 0xff && data[1] & 0xe0 == 0xe0 && data[1] & 0x06 != 0
}

impl BlobKeys {
    pub fn new(id_key: [u8; 32], enc_key: [u8; 32], repo_id: [u8; 16]) -> Self {
        BlobKeys {
            id_key,
            enc_key,
            repo_id,
        }
    }

    /// The blob's id: BLAKE3 keyed with the repository's id key (a MAC, so the storage cannot
    /// tell whether it holds a known file).
    pub fn id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, data).as_bytes()
    }

    fn context(&self, kind: u8, id: &[u8; 32]) -> Vec<u8> {
        let mut c = Vec::with_capacity(CONTEXT.len() + 16 + 1 + 32);
        c.extend_from_slice(CONTEXT);
        c.extend_from_slice(&self.repo_id);
        c.push(kind);
        c.extend_from_slice(id);
        c
    }

    /// Ids of many blobs, across `threads` cores.
    pub fn ids(&self, blobs: &[&[u8]], threads: usize) -> Result<Vec<[u8; 32]>> {
        if threads <= 1 || blobs.len() < 2 {
            return Ok(blobs.iter().map(|b| self.id(b)).collect());
        }
        Ok(parallel::pool(threads)?.install(|| blobs.par_iter().map(|b| self.id(b)).collect()))
    }

    /// Compresses (unless the data looks compressed or does not shrink) and encrypts one blob.
    pub fn seal(&self, kind: u8, data: &[u8]) -> Result<([u8; 32], Vec<u8>)> {
        self.seal_with_id(kind, self.id(data), data, true)
    }

    /// As [`BlobKeys::seal`], with the id already computed by [`BlobKeys::id`] (a wrong id
    /// gives a blob that never opens). `try_compress: false` stores the data as it is: the
    /// caller knows it belongs to an already-compressed file (only a file's first chunk
    /// carries the format's magic bytes).
    pub fn seal_with_id(
        &self,
        kind: u8,
        id: [u8; 32],
        data: &[u8],
        try_compress: bool,
    ) -> Result<([u8; 32], Vec<u8>)> {
        if data.len() > MAX_BLOB {
            return Err(Error::InvalidArgument(format!(
                "a blob is at most {MAX_BLOB} bytes"
            )));
        }
        let mut plain = Vec::with_capacity(data.len() + 5);
        let compressed = if !try_compress || looks_compressed(data) || data.len() < 64 {
            None
        } else {
            compress(data).filter(|c| c.len() < data.len() / 100 * 97)
        };
        match &compressed {
            Some(c) => {
                plain.push(FLAG_ZSTD);
                plain.extend_from_slice(&(data.len() as u32).to_be_bytes());
                plain.extend_from_slice(c);
            }
            None => {
                plain.push(FLAG_STORED);
                plain.extend_from_slice(&(data.len() as u32).to_be_bytes());
                plain.extend_from_slice(data);
            }
        }
        let ct_len = chunked::ciphertext_len(plain.len() as u64)? as usize;
        let mut out = vec![0u8; ct_len];
        chunked::encrypt_into(
            &self.enc_key,
            Algorithm::Aes256Gcm,
            &self.context(kind, &id),
            &plain,
            &mut out,
            1,
        )?;
        Ok((id, out))
    }

    /// Seals many blobs across `threads` cores; results are in input order. `ids`, when
    /// given, are the blobs' ids (so they are not computed twice).
    pub fn seal_many(
        &self,
        kind: u8,
        blobs: &[&[u8]],
        ids: Option<&[[u8; 32]]>,
        compress: Option<&[bool]>,
        threads: usize,
    ) -> Result<Vec<([u8; 32], Vec<u8>)>> {
        if ids.is_some_and(|ids| ids.len() != blobs.len())
            || compress.is_some_and(|c| c.len() != blobs.len())
        {
            return Err(Error::InvalidArgument(
                "one id and one compress flag per blob".into(),
            ));
        }
        let one = |i: usize| {
            let id = ids.map_or_else(|| self.id(blobs[i]), |ids| ids[i]);
            self.seal_with_id(kind, id, blobs[i], compress.is_none_or(|c| c[i]))
        };
        if threads <= 1 || blobs.len() < 2 {
            return (0..blobs.len()).map(one).collect();
        }
        parallel::pool(threads)?.install(|| (0..blobs.len()).into_par_iter().map(one).collect())
    }

    /// Decrypts, decompresses and checks one blob against its id. Any mismatch is
    /// [`Error::InvalidTag`]: the blob was modified, moved or swapped.
    pub fn open(&self, kind: u8, id: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>> {
        let pt_len = chunked::plaintext_len(sealed.len() as u64)? as usize;
        if !(5..=MAX_BLOB + 5).contains(&pt_len) {
            return Err(Error::InvalidTag);
        }
        let mut plain = vec![0u8; pt_len];
        chunked::decrypt_into(
            &self.enc_key,
            Algorithm::Aes256Gcm,
            &self.context(kind, id),
            sealed,
            &mut plain,
            1,
        )?;
        let length = u32::from_be_bytes(plain[1..5].try_into().expect("4 bytes")) as usize;
        if length > MAX_BLOB {
            return Err(Error::InvalidTag);
        }
        let data = match plain[0] {
            FLAG_STORED if plain.len() - 5 == length => {
                plain.drain(..5); // in place: no second buffer of fresh pages
                plain
            }
            FLAG_ZSTD => {
                let data = decompress(&plain[5..], length).ok_or(Error::InvalidTag)?;
                if data.len() != length {
                    return Err(Error::InvalidTag);
                }
                data
            }
            _ => return Err(Error::InvalidTag),
        };
        use subtle::ConstantTimeEq;
        if bool::from(self.id(&data).ct_eq(id)) {
            Ok(data)
        } else {
            Err(Error::InvalidTag)
        }
    }
}

thread_local! {
    // One zstd context per thread, reused: making one costs more than compressing or
    // decompressing a small blob (restoring 100k small files spent 10% of its time there).
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// `data` compressed at [`ZSTD_LEVEL`] with this thread's context; None on failure.
fn compress(data: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?);
        }
        slot.as_mut()?.compress(data).ok()
    })
}

/// One zstd frame of at most `capacity` bytes, with this thread's context; None if damaged.
fn decompress(frame: &[u8], capacity: usize) -> Option<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().ok()?);
        }
        slot.as_mut()?.decompress(frame, capacity).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_compression_and_binding() {
        let keys = BlobKeys::new([1; 32], [2; 32], [3; 16]);
        let text = b"hello hello hello hello ".repeat(1000);
        let (id, sealed) = keys.seal(0, &text).unwrap();
        assert!(sealed.len() < text.len() / 4, "text should compress");
        assert_eq!(keys.open(0, &id, &sealed).unwrap(), text);
        assert_eq!(
            keys.open(1, &id, &sealed),
            Err(Error::InvalidTag),
            "type is bound"
        );
        let (other, _) = keys.seal(0, b"other data").unwrap();
        assert_eq!(
            keys.open(0, &other, &sealed),
            Err(Error::InvalidTag),
            "id is bound"
        );
        let other_repo = BlobKeys::new([1; 32], [2; 32], [4; 16]);
        assert_eq!(
            other_repo.open(0, &id, &sealed),
            Err(Error::InvalidTag),
            "repo is bound"
        );
        let mut jpeg = b"\xff\xd8\xff\xe0".to_vec();
        jpeg.extend(std::iter::repeat_n(0u8, 10_000));
        let (jid, jsealed) = keys.seal(0, &jpeg).unwrap();
        assert!(
            jsealed.len() > jpeg.len(),
            "media is stored, not compressed"
        );
        assert_eq!(keys.open(0, &jid, &jsealed).unwrap(), jpeg);
        let many = keys
            .seal_many(0, &[&text[..], &jpeg[..], b"x"], None, None, 2)
            .unwrap();
        let ids = keys.ids(&[&text[..], &jpeg[..], b"x"], 2).unwrap();
        let with_ids = keys
            .seal_many(
                0,
                &[&text[..], &jpeg[..], b"x"],
                Some(&ids),
                Some(&[false, true, true]),
                2,
            )
            .unwrap();
        assert_eq!(with_ids[2].0, many[2].0);
        assert_eq!(keys.open(0, &ids[0], &with_ids[0].1).unwrap(), text);
        assert!(
            with_ids[0].1.len() > text.len(),
            "compress: false stores as is"
        );
        assert_eq!(many[0].0, id);
        assert_eq!(many[1].0, jid);
    }

    #[test]
    fn sniffing() {
        assert!(looks_compressed(b"\x00\x00\x00\x18ftypmp42rest"));
        assert!(looks_compressed(b"RIFF\x00\x00\x00\x00WEBPVP8 "));
        assert!(!looks_compressed(b"SQLite format 3\x00"));
        assert!(!looks_compressed(b"plain text"));
    }
}
