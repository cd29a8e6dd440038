//! Recipient key slots (rust/e2ebackup-core/src/recipient.rs): the encapsulation in a stored
//! slot and the recipient keys a writer is given are attacker's bytes.

use e2ebackup_core::recipient::{
    check_public, encapsulate_deterministic, Identity, ENCAPSULATION_SIZE, PUBLIC_SIZE,
};
use e2ebackup_core::Error;

use crate::input::Input;

/// Decapsulating any bytes gives a key (deterministically) or `CorruptSlot`, never a panic; an
/// honest encapsulation round-trips, and a flipped bit or a cut never gives the same key; any
/// bytes as a recipient are accepted or refused with `InvalidArgument`.
pub fn recipient_decapsulate(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8() % 3;
    let seed: [u8; 32] = input.array();
    let identity = Identity::from_seed(&seed).expect("any 32 bytes are a seed");
    match mode {
        0 => any_encapsulation(&identity, input.rest()),
        1 => {
            let m: [u8; 32] = input.array();
            let ephemeral: [u8; 32] = input.array();
            let flip = input.u16();
            round_trip(&identity, &m, &ephemeral, flip);
        }
        _ => {
            let m: [u8; 32] = input.array();
            let ephemeral: [u8; 32] = input.array();
            any_recipient(input.rest(), &m, &ephemeral);
        }
    }
}

fn any_encapsulation(identity: &Identity, enc: &[u8]) {
    match identity.decapsulate(enc) {
        Ok(kek) => {
            assert_eq!(enc.len(), ENCAPSULATION_SIZE);
            assert_eq!(*identity.decapsulate(enc).expect("again"), *kek);
        }
        Err(Error::CorruptSlot) => {}
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}

fn round_trip(identity: &Identity, m: &[u8; 32], ephemeral: &[u8; 32], flip: u16) {
    let (enc, kek) = match encapsulate_deterministic(identity.public(), m, ephemeral) {
        Ok(pair) => pair,
        // An ephemeral key whose public share is low order cannot come from 32 random bytes
        // clamped as X25519 does, and the identity's own key is never low order.
        Err(e) => panic!("encapsulating to an identity failed: {e:?}"),
    };
    assert_eq!(enc.len(), ENCAPSULATION_SIZE);
    assert_eq!(*identity.decapsulate(&enc).expect("round trip"), *kek);
    let at = usize::from(flip) % (ENCAPSULATION_SIZE * 8);
    let mut bad = enc.clone();
    bad[at / 8] ^= 1 << (at % 8);
    match identity.decapsulate(&bad) {
        Ok(other) => assert_ne!(*other, *kek, "flip at bit {at} kept the key"),
        Err(e) => assert_eq!(e, Error::CorruptSlot),
    }
    let cut = usize::from(flip) % ENCAPSULATION_SIZE;
    assert_eq!(
        identity.decapsulate(&enc[..cut]).err(),
        Some(Error::CorruptSlot)
    );
}

fn any_recipient(public: &[u8], m: &[u8; 32], ephemeral: &[u8; 32]) {
    match check_public(public) {
        Ok(_) => assert_eq!(public.len(), PUBLIC_SIZE),
        Err(Error::InvalidArgument(_)) => {
            assert!(encapsulate_deterministic(public, m, ephemeral).is_err());
            return;
        }
        Err(e) => panic!("unexpected error: {e:?}"),
    }
    match encapsulate_deterministic(public, m, ephemeral) {
        Ok((enc, _)) => assert_eq!(enc.len(), ENCAPSULATION_SIZE),
        // A low-order X25519 half: refused, never a zero shared secret.
        Err(Error::InvalidArgument(_)) => {}
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}
