//! Round trips, stream/one-shot equivalence and the tamper matrix, without Python.

use e2ebackup_core::chunked::{
    self, Algorithm, Decryptor, Encryptor, CHUNK_CT_SIZE, CHUNK_SIZE, HEADER_SIZE,
};
use e2ebackup_core::Error;

const KEY: [u8; 32] = [0x42; 32];
const SALT: [u8; 24] = [0x17; 24];
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305];

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn seal(alg: Algorithm, pt: &[u8], threads: usize) -> Vec<u8> {
    let mut out = vec![0u8; chunked::ciphertext_len(pt.len() as u64).unwrap() as usize];
    chunked::encrypt_into_with_salt(&KEY, alg, b"ctx", &SALT, pt, &mut out, threads).unwrap();
    out
}

fn open(alg: Algorithm, ct: &[u8], threads: usize) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; ct.len()];
    let n = chunked::decrypt_into(&KEY, alg, b"ctx", ct, &mut out, threads)?;
    out.truncate(n);
    Ok(out)
}

const SIZES: [usize; 9] = [
    0,
    1,
    16383,
    16384,
    16385,
    32767,
    32768,
    32769,
    64 * 16384 * 3 + 5,
];

#[test]
fn round_trip_at_chunk_boundaries_for_any_thread_count() {
    for alg in ALGORITHMS {
        for len in SIZES {
            let pt = plaintext(len);
            let one = seal(alg, &pt, 1);
            assert_eq!(
                seal(alg, &pt, 2),
                one,
                "threads change the bytes: {alg:?} {len}"
            );
            assert_eq!(seal(alg, &pt, 7), one);
            assert_eq!(open(alg, &one, 1).unwrap(), pt);
            assert_eq!(open(alg, &one, 3).unwrap(), pt);
        }
    }
}

fn stream_seal(alg: Algorithm, pt: &[u8], step: usize) -> Vec<u8> {
    let mut enc = Encryptor::with_salt(&KEY, alg, b"ctx", &SALT, 2).unwrap();
    let mut out = Vec::new();
    for piece in pt.chunks(step.max(1)) {
        let mut buf = vec![0u8; enc.update_len(piece.len())];
        let n = enc.update_into(piece, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        out.extend_from_slice(&buf);
    }
    let mut buf = vec![0u8; enc.finalize_len()];
    let n = enc.finalize_into(&mut buf).unwrap();
    out.extend_from_slice(&buf[..n]);
    out
}

fn stream_open(alg: Algorithm, ct: &[u8], step: usize) -> Result<Vec<u8>, Error> {
    let mut dec = Decryptor::new(&KEY, alg, b"ctx", 2)?;
    let mut out = Vec::new();
    for piece in ct.chunks(step.max(1)) {
        let mut buf = vec![0u8; dec.update_len(piece.len())];
        let n = dec.update_into(piece, &mut buf)?;
        assert_eq!(n, buf.len());
        out.extend_from_slice(&buf);
    }
    let mut buf = vec![0u8; dec.finalize_len()];
    let n = dec.finalize_into(&mut buf)?;
    out.extend_from_slice(&buf[..n]);
    Ok(out)
}

#[test]
fn streaming_matches_one_shot_for_odd_steps() {
    for alg in ALGORITHMS {
        for len in [0, 1, 16384, 16385, 40000, 64 * 16384 + 1] {
            let pt = plaintext(len);
            let expected = seal(alg, &pt, 1);
            for step in [1, 7, 16383, 16384, 16385, 16400, 100_000, 4 << 20] {
                if step < 100 && len > 40000 {
                    continue;
                }
                assert_eq!(
                    stream_seal(alg, &pt, step),
                    expected,
                    "{alg:?} len {len} step {step}"
                );
                assert_eq!(stream_open(alg, &expected, step).unwrap(), pt);
            }
        }
    }
}

fn assert_rejected(alg: Algorithm, ct: &[u8], what: &str) {
    assert_eq!(
        open(alg, ct, 1),
        Err(Error::InvalidTag),
        "one-shot accepted {what}"
    );
    assert_eq!(
        open(alg, ct, 2),
        Err(Error::InvalidTag),
        "parallel accepted {what}"
    );
    for step in [1000, 16400, 1 << 20] {
        assert!(
            stream_open(alg, ct, step).is_err(),
            "stream accepted {what} (step {step})"
        );
    }
}

#[test]
fn tamper_matrix_is_rejected() {
    for alg in ALGORITHMS {
        let pt = plaintext(3 * CHUNK_SIZE + 100);
        let ct = seal(alg, &pt, 1);
        let chunk = |i: usize| HEADER_SIZE + i * CHUNK_CT_SIZE;
        for cut in [
            0,
            10,
            HEADER_SIZE - 1,
            HEADER_SIZE,
            chunk(1),
            chunk(2),
            chunk(3),
            ct.len() - 1,
        ] {
            assert_rejected(alg, &ct[..cut], &format!("truncation at {cut}"));
        }
        for pos in [0, 23, 24, 55, 56, chunk(1) + 5, chunk(3) - 1, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[pos] ^= 0x01;
            assert_rejected(alg, &bad, &format!("bit flip at {pos}"));
        }
        let mut extended = ct.clone();
        extended.extend_from_slice(&ct[chunk(3)..]);
        assert_rejected(alg, &extended, "an appended final chunk");
        let mut extended = ct.clone();
        extended.push(0);
        assert_rejected(alg, &extended, "one appended byte");
        let mut swapped = ct.clone();
        swapped[chunk(0)..chunk(1)].copy_from_slice(&ct[chunk(1)..chunk(2)]);
        swapped[chunk(1)..chunk(2)].copy_from_slice(&ct[chunk(0)..chunk(1)]);
        assert_rejected(alg, &swapped, "swapped chunks");
        let mut duplicated = ct.clone();
        duplicated[chunk(1)..chunk(2)].copy_from_slice(&ct[chunk(0)..chunk(1)]);
        assert_rejected(alg, &duplicated, "a duplicated chunk");
        let mut other_salt = SALT;
        other_salt[0] ^= 1;
        let mut other = vec![0u8; ct.len()];
        chunked::encrypt_into_with_salt(&KEY, alg, b"ctx", &other_salt, &pt, &mut other, 1)
            .unwrap();
        let mut spliced = ct.clone();
        spliced[chunk(1)..chunk(2)].copy_from_slice(&other[chunk(1)..chunk(2)]);
        assert_rejected(alg, &spliced, "a chunk from another message");
        let mut out = vec![0u8; ct.len()];
        assert_eq!(
            chunked::decrypt_into(&KEY, alg, b"other", &ct, &mut out, 1),
            Err(Error::InvalidTag)
        );
        assert_eq!(
            chunked::decrypt_into(&[1; 32], alg, b"ctx", &ct, &mut out, 1),
            Err(Error::InvalidTag)
        );
        let other_alg = if alg == Algorithm::Aes256Gcm {
            Algorithm::ChaCha20Poly1305
        } else {
            Algorithm::Aes256Gcm
        };
        assert_eq!(
            chunked::decrypt_into(&KEY, other_alg, b"ctx", &ct, &mut out, 1),
            Err(Error::InvalidTag)
        );
    }
}

#[test]
fn failed_decryption_leaves_no_plaintext_in_the_output() {
    let pt = vec![0xAB; 200 * CHUNK_SIZE];
    let mut ct = seal(Algorithm::Aes256Gcm, &pt, 1);
    let last = ct.len() - 1;
    ct[last] ^= 1;
    for threads in [1, 2] {
        let mut out = vec![0u8; pt.len()];
        let r = chunked::decrypt_into(&KEY, Algorithm::Aes256Gcm, b"ctx", &ct, &mut out, threads);
        assert_eq!(r, Err(Error::InvalidTag));
        assert!(
            out.iter().all(|&b| b == 0),
            "plaintext left behind with {threads} threads"
        );
    }
}

#[test]
fn contexts_fail_closed() {
    let ct = seal(Algorithm::Aes256Gcm, &plaintext(100), 1);
    let mut bad = ct.clone();
    bad[60] ^= 1;
    let mut dec = Decryptor::new(&KEY, Algorithm::Aes256Gcm, b"ctx", 1).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    dec.update_into(&bad, &mut buf).unwrap();
    assert_eq!(dec.finalize_into(&mut buf), Err(Error::InvalidTag));
    assert_eq!(dec.finalize_into(&mut buf), Err(Error::StreamFailed));
    assert_eq!(dec.update_into(b"x", &mut buf), Err(Error::StreamFailed));

    let mut enc = Encryptor::new(&KEY, Algorithm::Aes256Gcm, b"ctx", 1).unwrap();
    enc.finalize_into(&mut buf).unwrap();
    assert_eq!(
        enc.update_into(b"x", &mut buf),
        Err(Error::AlreadyFinalized)
    );
    assert_eq!(enc.finalize_into(&mut buf), Err(Error::AlreadyFinalized));
}

#[test]
fn bad_arguments_are_reported() {
    let mut out = vec![0u8; 100];
    assert_eq!(
        chunked::encrypt_into(&[0; 16], Algorithm::Aes256Gcm, b"", b"", &mut out, 1),
        Err(Error::InvalidKeyLength {
            expected: 32,
            got: 16
        })
    );
    assert_eq!(
        chunked::encrypt_into(&KEY, Algorithm::Aes256Gcm, b"", &[0; 100], &mut out, 1),
        Err(Error::BufferTooSmall {
            needed: 172,
            got: 100
        })
    );
    assert!(Algorithm::from_api_name("aes-128-gcm").is_err());
    // A too-small buffer is the caller's mistake, not the stream's: it stays usable.
    let mut enc = Encryptor::new(&KEY, Algorithm::Aes256Gcm, b"", 1).unwrap();
    assert!(matches!(
        enc.update_into(&[0; 20000], &mut out),
        Err(Error::BufferTooSmall { .. })
    ));
    let mut big = vec![0u8; 1 << 16];
    assert!(enc.update_into(&[0; 20000], &mut big).is_ok());
}
