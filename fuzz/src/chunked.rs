//! C2SP chunked encryption: the one-shot decoder, the streaming contexts and random access to
//! runs of chunks.

use e2ebackup_core::chunked::{
    self, Algorithm, Decryptor, Encryptor, MessageKeys, CHUNK_CT_SIZE, CHUNK_SIZE, HEADER_SIZE,
    SALT_SIZE,
};
use e2ebackup_core::Error;

use crate::input::{pieces, stretch, Input};

const KEY: [u8; 32] = [0x42; 32];
/// The key, the context and the AEAD: a corpus vector brings its own key (so it opens), a
/// mutated input mostly uses the fixed one.
fn setup(input: &mut Input<'_>, max_context: u8) -> ([u8; 32], Algorithm, Vec<u8>) {
    let choice = input.u8();
    let key = if choice & 2 != 0 { input.array() } else { KEY };
    let context_len = usize::from(input.u8() % max_context);
    (key, algorithm(choice), input.bytes(context_len).to_vec())
}

/// Long enough for four chunks (the last partial), short enough for thousands of runs a second.
const MAX_PLAINTEXT: usize = 4 * CHUNK_SIZE + 100;

fn algorithm(choice: u8) -> Algorithm {
    if choice & 1 == 0 {
        Algorithm::Aes256Gcm
    } else {
        Algorithm::ChaCha20Poly1305
    }
}

fn decrypt(key: &[u8], alg: Algorithm, context: &[u8], ct: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; ct.len()];
    let n = chunked::decrypt_into(key, alg, context, ct, &mut out, 1)?;
    out.truncate(n);
    Ok(out)
}

fn encrypt(
    key: &[u8; 32],
    alg: Algorithm,
    context: &[u8],
    salt: &[u8; SALT_SIZE],
    pt: &[u8],
) -> Vec<u8> {
    let len = chunked::ciphertext_len(pt.len() as u64).expect("small") as usize;
    let mut out = vec![0u8; len];
    let n = chunked::encrypt_into_with_salt(key, alg, context, salt, pt, &mut out, 1)
        .expect("encrypting a small message succeeds");
    assert_eq!(n, len);
    out
}

/// A message from the input: either the rest of the input taken as a ciphertext (garbage, or a
/// corpus vector), or a genuine message of a plaintext stretched from the input, possibly with
/// bytes flipped, cut or appended. Returns the ciphertext and, when it is genuine and untouched,
/// the plaintext it must decrypt to.
fn message(
    input: &mut Input<'_>,
    key: &[u8; 32],
    alg: Algorithm,
    context: &[u8],
) -> (Vec<u8>, Option<Vec<u8>>) {
    let how = input.u8();
    if how & 0x80 == 0 {
        return (input.rest().to_vec(), None);
    }
    let salt: [u8; SALT_SIZE] = input.array();
    let len = usize::from(input.u16()) * 2 % (MAX_PLAINTEXT + 1);
    let tamper = input.u8() % 4;
    let at = input.u32() as usize;
    let pt = stretch(input.rest(), len);
    let mut ct = encrypt(key, alg, context, &salt, &pt);
    match tamper {
        0 => return (ct, Some(pt)),
        1 => {
            let i = at % ct.len();
            ct[i] ^= 1 << ((at >> 24) % 8);
        }
        2 => ct.truncate(at % ct.len()),
        _ => ct.extend_from_slice(&stretch(&pt, 1 + at % (CHUNK_CT_SIZE + 17))),
    }
    (ct, None)
}

/// One-shot decryption: a genuine message decrypts to its plaintext; anything else is refused
/// with `InvalidTag` and nothing readable is left in the output buffer.
pub fn chunked_decrypt(data: &[u8]) {
    let mut input = Input::new(data);
    let (key, alg, context) = setup(&mut input, 64);
    let (ct, expected) = message(&mut input, &key, alg, &context);
    let result = decrypt(&key, alg, &context, &ct);
    match (&expected, &result) {
        (Some(pt), Ok(got)) => assert_eq!(got, pt, "round trip"),
        (Some(_), Err(e)) => panic!("a genuine message failed: {e}"),
        (None, Ok(got)) => {
            // Only a genuine message can open; re-encrypting with its salt must give it back
            // byte for byte (a second valid encoding would be malleability).
            let salt: [u8; SALT_SIZE] = ct[..SALT_SIZE].try_into().expect("salt");
            let again = encrypt(&key, alg, &context, &salt, got);
            assert_eq!(again, ct, "non-canonical message accepted");
        }
        (None, Err(e)) => assert_eq!(*e, Error::InvalidTag, "unexpected error kind"),
    }
    // The wrong key, context or AEAD never opens anything.
    if result.is_ok() {
        let mut other = context.clone();
        other.push(0);
        assert!(decrypt(&key, alg, &other, &ct).is_err());
        let mut wrong = key;
        wrong[0] ^= 1;
        assert!(decrypt(&wrong, alg, &context, &ct).is_err());
        let swapped = algorithm(u8::from(alg == Algorithm::Aes256Gcm));
        assert!(decrypt(&key, swapped, &context, &ct).is_err());
    }
    // A failed decryption wipes what it wrote.
    let mut out = vec![0xaau8; ct.len()];
    if chunked::decrypt_into(&key, alg, &context, &ct, &mut out, 1).is_err() {
        assert!(
            out.iter().all(|&b| b == 0 || b == 0xaa),
            "plaintext left behind after a failure"
        );
    }
}

/// Streaming decryption fed in pieces of input-chosen sizes agrees with one-shot decryption
/// (same plaintext or both refused), predicts its output sizes exactly, fails closed; streaming
/// encryption gives the one-shot bytes; opening a run of chunks at an input-chosen index agrees
/// with the whole message.
pub fn chunked_stream(data: &[u8]) {
    let mut input = Input::new(data);
    let (key, alg, context) = setup(&mut input, 64);
    let split_count = usize::from(input.u8() % 8);
    let sizes = input.bytes(split_count).to_vec();
    let scale = 1 + usize::from(input.u8()) * 64;
    let run = (input.u8(), input.u8());
    let (ct, expected) = message(&mut input, &key, alg, &context);

    let one_shot = decrypt(&key, alg, &context, &ct);
    if let Some(pt) = &expected {
        assert_eq!(one_shot.as_ref().ok(), Some(pt), "genuine message");
    }
    let streamed = stream_decrypt(&key, alg, &context, &ct, &sizes, scale);
    match (&one_shot, &streamed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "streaming and one-shot disagree"),
        (Err(_), Err(_)) => {}
        _ => panic!("streaming and one-shot disagree: {one_shot:?} vs {streamed:?}"),
    }
    if let Ok(pt) = &one_shot {
        let salt: [u8; SALT_SIZE] = ct[..SALT_SIZE].try_into().expect("salt");
        assert_eq!(
            stream_encrypt(&key, alg, &context, &salt, pt, &sizes, scale),
            ct
        );
    }
    random_access(&key, alg, &context, &ct, one_shot.as_ref().ok(), run);
}

fn stream_decrypt(
    key: &[u8; 32],
    alg: Algorithm,
    context: &[u8],
    ct: &[u8],
    sizes: &[u8],
    scale: usize,
) -> Result<Vec<u8>, Error> {
    let mut d = Decryptor::new(key, alg, context, 1).expect("key size");
    let mut pt = Vec::new();
    for piece in pieces(ct, sizes, scale) {
        let want = d.update_len(piece.len());
        let mut out = vec![0u8; want];
        match d.update_into(piece, &mut out) {
            Ok(n) => {
                assert_eq!(n, want, "update_len is exact");
                pt.extend_from_slice(&out[..n]);
            }
            Err(e) => {
                assert_eq!(e, Error::InvalidTag);
                assert!(
                    out.iter().all(|&b| b == 0),
                    "plaintext left behind after a failure"
                );
                assert_eq!(
                    d.update_into(b"x", &mut [0u8; 1 << 16]),
                    Err(Error::StreamFailed)
                );
                return Err(e);
            }
        }
    }
    let mut out = vec![0u8; d.finalize_len()];
    let result = d.finalize_into(&mut out);
    let after = d.update_into(b"", &mut []);
    match result {
        Ok(n) => {
            assert!(n <= out.len());
            assert_eq!(after, Err(Error::AlreadyFinalized));
            pt.extend_from_slice(&out[..n]);
            Ok(pt)
        }
        Err(e) => {
            assert_eq!(e, Error::InvalidTag);
            assert_eq!(after, Err(Error::StreamFailed));
            Err(e)
        }
    }
}

fn stream_encrypt(
    key: &[u8; 32],
    alg: Algorithm,
    context: &[u8],
    salt: &[u8; SALT_SIZE],
    pt: &[u8],
    sizes: &[u8],
    scale: usize,
) -> Vec<u8> {
    let mut e = Encryptor::with_salt(key, alg, context, salt, 1).expect("key size");
    let mut ct = Vec::new();
    for piece in pieces(pt, sizes, scale) {
        let mut out = vec![0u8; e.update_len(piece.len())];
        let n = e.update_into(piece, &mut out).expect("encrypting");
        assert_eq!(n, out.len(), "update_len is exact");
        ct.extend_from_slice(&out);
    }
    let mut out = vec![0u8; e.finalize_len()];
    let n = e.finalize_into(&mut out).expect("finalizing");
    assert_eq!(n, out.len(), "finalize_len is exact");
    ct.extend_from_slice(&out);
    ct
}

/// Opens chunks `first..first+count` (the last one if the run reaches the end) straight from
/// the ciphertext, as a seeking reader does.
fn random_access(
    key: &[u8; 32],
    alg: Algorithm,
    context: &[u8],
    ct: &[u8],
    pt: Option<&Vec<u8>>,
    run: (u8, u8),
) {
    let Some(header) = ct.get(..HEADER_SIZE) else {
        return;
    };
    let keys = match MessageKeys::from_header(key, alg, header, context) {
        Ok(keys) => keys,
        Err(e) => {
            assert_eq!(e, Error::InvalidTag);
            assert!(pt.is_none(), "a message that opened has a bad header");
            return;
        }
    };
    let body = &ct[HEADER_SIZE..];
    let chunks = body.len().div_ceil(CHUNK_CT_SIZE).max(1);
    let first = usize::from(run.0) % chunks;
    let count = 1 + usize::from(run.1) % chunks;
    let start = first * CHUNK_CT_SIZE;
    let end = (start + count * CHUNK_CT_SIZE).min(body.len());
    let last = end == body.len();
    let mut out = vec![0u8; count * CHUNK_SIZE];
    let result = keys.open_chunks(first as u64, &body[start.min(end)..end], last, &mut out, 1);
    match (pt, result) {
        (Some(pt), Ok(n)) => {
            let at = first * CHUNK_SIZE;
            assert_eq!(&out[..n], &pt[at..at + n], "random access disagrees");
        }
        (Some(_), Err(e)) => panic!("a run of a genuine message failed: {e}"),
        (None, _) => {}
    }
    // The same chunks at another index never open.
    if pt.is_some() && end > start {
        let shifted = keys.open_chunks(first as u64 + 1, &body[start..end], last, &mut out, 1);
        assert!(shifted.is_err(), "a chunk opened at the wrong index");
    }
}
