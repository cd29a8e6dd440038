//! Key wrapping of key slots (rust/e2ebackup-core/src/keyslot.rs). The slot area around it is
//! parsed in Python and fuzzed there (tests/test_fuzz_parsers.py).

use e2ebackup_core::chunked::HEADER_SIZE;
use e2ebackup_core::keyslot::{unwrap, wrap, WRAPPED_SIZE};
use e2ebackup_core::Error;

use crate::input::Input;

/// Unwrapping any bytes with any key and context either returns a key or tells `KeyMismatch`
/// from `CorruptSlot`; a wrapped key round-trips, and every single-bit flip of it is refused with
/// the error its position implies (header: a wrong key; body: a damaged slot).
pub fn keyslot_unwrap(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let kek: [u8; 32] = input.array();
    let context_len = usize::from(input.u8());
    let context = input.bytes(context_len).to_vec();
    if mode & 1 == 0 {
        // Any bytes as a slot (a corpus vector brings its own key, context and wrapped key).
        let wrapped = input.rest();
        match unwrap(&kek, wrapped, &context) {
            Ok(key) => {
                assert_eq!(wrapped.len(), WRAPPED_SIZE);
                assert_eq!(*unwrap(&kek, wrapped, &context).expect("again"), *key);
                let mut other = context.clone();
                other.push(0);
                assert_eq!(
                    unwrap(&kek, wrapped, &other).err(),
                    Some(Error::KeyMismatch)
                );
            }
            Err(Error::CorruptSlot) => {}
            Err(Error::KeyMismatch) => assert_eq!(wrapped.len(), WRAPPED_SIZE),
            Err(e) => panic!("unexpected error: {e:?}"),
        }
        return;
    }
    let data_key_len = if mode & 2 != 0 {
        usize::from(input.u8() % 64)
    } else {
        32
    };
    let flip = input.u16();
    let data_key = input.bytes(data_key_len).to_vec();
    let wrapped = match wrap(&kek, &data_key, &context) {
        Ok(w) => w,
        Err(e) => {
            assert_ne!(data_key.len(), 32, "wrapping a 32-byte key failed: {e}");
            assert_eq!(
                e,
                Error::InvalidKeyLength {
                    expected: 32,
                    got: data_key.len()
                }
            );
            return;
        }
    };
    assert_eq!(
        *unwrap(&kek, &wrapped, &context).expect("round trip"),
        data_key[..]
    );
    let at = usize::from(flip) % (WRAPPED_SIZE * 8);
    let mut bad = wrapped;
    bad[at / 8] ^= 1 << (at % 8);
    let expected = if at / 8 < HEADER_SIZE {
        Error::KeyMismatch
    } else {
        Error::CorruptSlot
    };
    assert_eq!(
        unwrap(&kek, &bad, &context).err(),
        Some(expected),
        "flip at bit {at}"
    );
    let cut = usize::from(flip) % WRAPPED_SIZE;
    assert_eq!(
        unwrap(&kek, &wrapped[..cut], &context).err(),
        Some(Error::CorruptSlot)
    );
}
