//! Repository blobs (rust/e2ebackup-core/src/blob.rs): the AEAD, then `flags || length || body`
//! with zstd. Garbage never gets past the AEAD, so the decompression path is fuzzed with
//! plaintexts the harness encrypts itself, exactly as a holder of the key could.

use e2ebackup_core::blob::{BlobKeys, MAX_BLOB};
use e2ebackup_core::chunked::{self, Algorithm, SALT_SIZE};
use e2ebackup_core::Error;

use crate::alloc::peak_allocated_during;
use crate::input::{stretch, Input};

const ID_KEY: [u8; 32] = [1; 32];
const ENC_KEY: [u8; 32] = [2; 32];
const REPO_ID: [u8; 16] = [3; 16];
/// docs/FORMAT.md, Blobs: the AEAD context of a blob.
const CONTEXT: &[u8] = b"e2ebackup/v1/repo/blob\x00";
/// Memory that opening one blob may take beyond its output (at most MAX_BLOB) and two copies of
/// its sealed bytes: buffers of the AEAD and zstd.
const SLACK: usize = 1 << 20;

fn keys() -> BlobKeys {
    BlobKeys::new(ID_KEY, ENC_KEY, REPO_ID)
}

/// Encrypts a blob plaintext (`flags || length || body`) as the format does.
fn seal_plain(kind: u8, id: &[u8; 32], plain: &[u8], salt: &[u8; SALT_SIZE]) -> Vec<u8> {
    let mut context = CONTEXT.to_vec();
    context.extend_from_slice(&REPO_ID);
    context.push(kind);
    context.extend_from_slice(id);
    let len = chunked::ciphertext_len(plain.len() as u64).expect("small") as usize;
    let mut out = vec![0u8; len];
    chunked::encrypt_into_with_salt(
        &ENC_KEY,
        Algorithm::Aes256Gcm,
        &context,
        salt,
        plain,
        &mut out,
        1,
    )
    .expect("sealing");
    out
}

/// Opens `sealed` and checks the bounds every result must respect.
fn open(keys: &BlobKeys, kind: u8, id: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, Error> {
    let (result, peak) = peak_allocated_during(|| keys.open(kind, id, sealed));
    assert!(
        peak <= MAX_BLOB + 2 * sealed.len() + SLACK,
        "opening a {}-byte blob took {peak} bytes of memory",
        sealed.len()
    );
    match &result {
        Ok(data) => {
            assert!(data.len() <= MAX_BLOB);
            assert_eq!(&keys.id(data), id, "a blob opened under another id");
        }
        Err(e) => assert_eq!(*e, Error::InvalidTag),
    }
    result
}

pub fn blob_open(data: &[u8]) {
    let keys = keys();
    let mut input = Input::new(data);
    let mode = input.u8();
    let kind = input.u8() % 3;
    match mode % 4 {
        // Any bytes as a sealed blob, under any id; a corpus vector brings its own keys.
        0 => {
            let keys = if mode & 0x10 != 0 {
                BlobKeys::new(input.array(), input.array(), input.array())
            } else {
                keys
            };
            let id: [u8; 32] = input.array();
            let _ = open(&keys, kind, &id, input.rest());
        }
        // Any plaintext behind a valid AEAD: flags, declared length and body are the input's,
        // so this reaches zstd with arbitrary frames and lengths (decompression bombs).
        1 => {
            let id: [u8; 32] = input.array();
            let salt: [u8; SALT_SIZE] = input.array();
            let sealed = seal_plain(kind, &id, input.rest(), &salt);
            let _ = open(&keys, kind, &id, &sealed);
        }
        // A well-formed zstd blob of input data with the input's declared length: opens exactly
        // when the length is right and the id matches.
        2 => {
            let declared = input.u32();
            let salt: [u8; SALT_SIZE] = input.array();
            let len = usize::from(input.u16());
            let body = stretch(input.rest(), len);
            let frame = zstd::bulk::compress(&body, 1).expect("zstd");
            let mut plain = vec![1u8];
            let honest = declared & 1 == 0;
            let length = if honest { body.len() as u32 } else { declared };
            plain.extend_from_slice(&length.to_be_bytes());
            plain.extend_from_slice(&frame);
            let id = keys.id(&body);
            let result = open(&keys, kind, &id, &seal_plain(kind, &id, &plain, &salt));
            if honest || length as usize == body.len() {
                assert_eq!(result.as_deref(), Ok(&body[..]), "honest zstd blob");
            } else {
                assert!(result.is_err(), "a wrong declared length was accepted");
            }
        }
        // The library's own sealing round-trips, and a flipped bit is refused.
        _ => {
            let len = usize::from(input.u16());
            let flip = input.u32() as usize;
            let body = stretch(input.rest(), len);
            let (id, sealed) = keys.seal(kind, &body).expect("sealing");
            assert_eq!(open(&keys, kind, &id, &sealed).as_deref(), Ok(&body[..]));
            assert!(
                open(&keys, (kind + 1) % 3, &id, &sealed).is_err(),
                "kind is bound"
            );
            let mut bad = sealed;
            let at = flip % (bad.len() * 8);
            bad[at / 8] ^= 1 << (at % 8);
            assert!(
                open(&keys, kind, &id, &bad).is_err(),
                "a flipped bit was accepted"
            );
        }
    }
}
