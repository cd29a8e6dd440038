//! Recipient keys: a hybrid KEM of X25519 and ML-KEM-768 (docs/FORMAT.md, Recipient slots).
//!
//! An *identity* is a 32-byte seed; the ML-KEM-768 seed `d || z` and the X25519 private key are
//! derived from it with HKDF-SHA-256 under their own labels. Its *recipient* (public key) is
//! `ek_M (1184) || pk_X (32)`. Encapsulating to a recipient gives `enc = ct_M (1088) || ct_X
//! (32)` and a key-encryption key
//!
//! ```text
//! KEK = HKDF-SHA-256(IKM = ss_M || ss_X || ct_M || ct_X || ek_M || pk_X, salt = "",
//!                    info = "e2ebackup/v1/key-slot/recipient/x25519-mlkem768", L = 32)
//! ```
//!
//! which stays secret while either ML-KEM-768 or X25519 holds. The key slot then wraps the
//! data key under `KEK` like every other slot (`keyslot::wrap`). The primitives are RustCrypto's
//! `ml-kem` (FIPS 203) and aws-lc's X25519; nothing here is hand-written cryptography.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use ml_kem::{
    array::Array, ml_kem_768, Decapsulate, DecapsulationKey768, EncapsulationKey768, KeyExport,
    Seed, B32,
};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::kdf::hkdf_sha256;
use crate::rand;

/// Bytes of an identity (the secret seed).
pub const SEED_SIZE: usize = 32;
/// Bytes of an ML-KEM-768 encapsulation key.
pub const MLKEM_PUBLIC_SIZE: usize = 1184;
/// Bytes of an ML-KEM-768 ciphertext.
pub const MLKEM_CIPHERTEXT_SIZE: usize = 1088;
/// Bytes of an X25519 public key (and of the ephemeral share sent in `enc`).
pub const X25519_SIZE: usize = 32;
/// Bytes of a recipient: `ek_M || pk_X`.
pub const PUBLIC_SIZE: usize = MLKEM_PUBLIC_SIZE + X25519_SIZE;
/// Bytes of an encapsulation: `ct_M || ct_X`.
pub const ENCAPSULATION_SIZE: usize = MLKEM_CIPHERTEXT_SIZE + X25519_SIZE;

/// The label of the key-encryption key: a KEK made for anything else cannot equal it.
pub const COMBINER_LABEL: &[u8] = b"e2ebackup/v1/key-slot/recipient/x25519-mlkem768";
/// The labels that derive the two private keys from an identity's seed.
pub const MLKEM_SEED_LABEL: &[u8] = b"e2ebackup/v1/identity/ml-kem-768";
pub const X25519_SEED_LABEL: &[u8] = b"e2ebackup/v1/identity/x25519";

/// The secret half: both private keys, wiped when dropped (`DecapsulationKey` zeroizes itself,
/// aws-lc cleanses the X25519 key when it is freed).
pub struct Identity {
    seed: Zeroizing<[u8; SEED_SIZE]>,
    mlkem: DecapsulationKey768,
    x25519: PrivateKey,
    public: [u8; PUBLIC_SIZE],
}

impl Identity {
    /// A new identity from the OS CSPRNG.
    pub fn generate() -> Result<Self> {
        let seed = Zeroizing::new(rand::array::<SEED_SIZE>()?);
        Self::from_seed(seed.as_ref())
    }

    /// The identity of a 32-byte seed; any 32 bytes are a valid seed.
    pub fn from_seed(seed: &[u8]) -> Result<Self> {
        let seed: [u8; SEED_SIZE] = seed.try_into().map_err(|_| Error::InvalidKeyLength {
            expected: SEED_SIZE,
            got: seed.len(),
        })?;
        let seed = Zeroizing::new(seed);
        let mut d_z = Zeroizing::new([0u8; 64]);
        hkdf_sha256(seed.as_ref(), b"", MLKEM_SEED_LABEL, d_z.as_mut())?;
        let mlkem = DecapsulationKey768::from_seed(Seed::from(*d_z));
        let mut x_secret = Zeroizing::new([0u8; X25519_SIZE]);
        hkdf_sha256(seed.as_ref(), b"", X25519_SEED_LABEL, x_secret.as_mut())?;
        let x25519 = PrivateKey::from_private_key(&X25519, x_secret.as_ref())
            .map_err(|_| Error::InvalidArgument("X25519 key generation failed".into()))?;
        let x_public = x25519
            .compute_public_key()
            .map_err(|_| Error::InvalidArgument("X25519 key generation failed".into()))?;
        let mut public = [0u8; PUBLIC_SIZE];
        public[..MLKEM_PUBLIC_SIZE].copy_from_slice(&mlkem.encapsulation_key().to_bytes());
        public[MLKEM_PUBLIC_SIZE..].copy_from_slice(x_public.as_ref());
        Ok(Identity {
            seed,
            mlkem,
            x25519,
            public,
        })
    }

    /// The seed: the identity's whole secret, for storing it.
    pub fn seed(&self) -> &[u8; SEED_SIZE] {
        &self.seed
    }

    /// The recipient (public key) of this identity.
    pub fn public(&self) -> &[u8; PUBLIC_SIZE] {
        &self.public
    }

    /// The key-encryption key of `enc`. Any ciphertext of the right length gives a key (ML-KEM
    /// rejects implicitly): an `enc` made for another identity gives a wrong key, which the
    /// slot's commitment then refuses. A wrong length, or an X25519 share whose shared secret
    /// is zero (a low-order point, which no writer makes), is [`Error::CorruptSlot`].
    pub fn decapsulate(&self, enc: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        if enc.len() != ENCAPSULATION_SIZE {
            return Err(Error::CorruptSlot);
        }
        let (ct_m, ct_x) = enc.split_at(MLKEM_CIPHERTEXT_SIZE);
        let ct: ml_kem_768::Ciphertext = Array::try_from(ct_m).map_err(|_| Error::CorruptSlot)?;
        let ss_m = Zeroizing::new(<[u8; 32]>::from(self.mlkem.decapsulate(&ct)));
        let ss_x = x25519_agree(&self.x25519, ct_x).map_err(|_| Error::CorruptSlot)?;
        combine(&ss_m, &ss_x, enc, &self.public)
    }
}

/// Checks that `public` is a recipient: the length, and the ML-KEM encapsulation key's
/// coefficients (FIPS 203's modulus check). Any 32 bytes are an X25519 public key; a low-order
/// one is refused when encapsulating.
pub fn check_public(public: &[u8]) -> Result<EncapsulationKey768> {
    if public.len() != PUBLIC_SIZE {
        return Err(Error::InvalidArgument(format!(
            "a recipient key is {PUBLIC_SIZE} bytes, not {}",
            public.len()
        )));
    }
    let ek = Array::try_from(&public[..MLKEM_PUBLIC_SIZE])
        .map_err(|_| Error::InvalidArgument("malformed ML-KEM-768 key in recipient".into()))?;
    EncapsulationKey768::new(&ek)
        .map_err(|_| Error::InvalidArgument("malformed ML-KEM-768 key in recipient".into()))
}

/// Encapsulates a fresh key-encryption key to `public`: `(enc, KEK)`.
pub fn encapsulate(public: &[u8]) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>)> {
    let m = Zeroizing::new(rand::array::<32>()?);
    let ephemeral = Zeroizing::new(rand::array::<X25519_SIZE>()?);
    encapsulate_deterministic(public, &m, &ephemeral)
}

/// [`encapsulate`] with its randomness given: the ML-KEM message `m` and the X25519 ephemeral
/// private key. Only for test vectors: reusing either breaks the KEM.
#[doc(hidden)]
pub fn encapsulate_deterministic(
    public: &[u8],
    m: &[u8; 32],
    ephemeral: &[u8; X25519_SIZE],
) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>)> {
    let ek = check_public(public)?;
    let (ct_m, ss_m) = ek.encapsulate_deterministic(&B32::from(*m));
    let ss_m = Zeroizing::new(<[u8; 32]>::from(ss_m));
    let eph = PrivateKey::from_private_key(&X25519, ephemeral)
        .map_err(|_| Error::InvalidArgument("X25519 key generation failed".into()))?;
    let ct_x = eph
        .compute_public_key()
        .map_err(|_| Error::InvalidArgument("X25519 key generation failed".into()))?;
    let ss_x = x25519_agree(&eph, &public[MLKEM_PUBLIC_SIZE..]).map_err(|_| {
        Error::InvalidArgument("the recipient's X25519 key is a low-order point".into())
    })?;
    let mut enc = Vec::with_capacity(ENCAPSULATION_SIZE);
    enc.extend_from_slice(ct_m.as_slice());
    enc.extend_from_slice(ct_x.as_ref());
    let kek = combine(&ss_m, &ss_x, &enc, public)?;
    Ok((enc, kek))
}

/// X25519 with aws-lc, which refuses an all-zero shared secret (RFC 7748, Section 6.1).
fn x25519_agree(private: &PrivateKey, peer: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    agreement::agree(
        private,
        UnparsedPublicKey::new(&X25519, peer),
        Error::CorruptSlot,
        |shared| {
            let mut out = Zeroizing::new([0u8; 32]);
            out.copy_from_slice(shared);
            Ok(out)
        },
    )
}

/// The combiner: both shared secrets, both ciphertexts and the whole recipient key, in one
/// HKDF-SHA-256 under its own label.
fn combine(
    ss_m: &[u8; 32],
    ss_x: &[u8; 32],
    enc: &[u8],
    public: &[u8],
) -> Result<Zeroizing<[u8; 32]>> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(64 + ENCAPSULATION_SIZE + PUBLIC_SIZE));
    ikm.extend_from_slice(ss_m);
    ikm.extend_from_slice(ss_x);
    ikm.extend_from_slice(enc);
    ikm.extend_from_slice(public);
    let mut kek = Zeroizing::new([0u8; 32]);
    hkdf_sha256(&ikm, b"", COMBINER_LABEL, kek.as_mut())?;
    Ok(kek)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_seed_determinism() {
        let id = Identity::generate().unwrap();
        let (enc, kek) = encapsulate(id.public()).unwrap();
        assert_eq!(enc.len(), ENCAPSULATION_SIZE);
        assert_eq!(*id.decapsulate(&enc).unwrap(), *kek);
        let again = Identity::from_seed(id.seed()).unwrap();
        assert_eq!(again.public(), id.public());
        assert_eq!(*again.decapsulate(&enc).unwrap(), *kek);
    }

    #[test]
    fn another_identity_or_any_edit_gives_another_key() {
        let id = Identity::from_seed(&[7u8; 32]).unwrap();
        let other = Identity::from_seed(&[8u8; 32]).unwrap();
        let (enc, kek) = encapsulate_deterministic(id.public(), &[1; 32], &[2; 32]).unwrap();
        assert_ne!(*other.decapsulate(&enc).unwrap(), *kek);
        for at in [
            0,
            MLKEM_CIPHERTEXT_SIZE - 1,
            MLKEM_CIPHERTEXT_SIZE,
            enc.len() - 1,
        ] {
            let mut bad = enc.clone();
            bad[at] ^= 1;
            match id.decapsulate(&bad) {
                Ok(k) => assert_ne!(*k, *kek),
                Err(e) => assert_eq!(e, Error::CorruptSlot),
            }
        }
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        let id = Identity::from_seed(&[9u8; 32]).unwrap();
        for n in [0, 1, ENCAPSULATION_SIZE - 1, ENCAPSULATION_SIZE + 1] {
            let err = id.decapsulate(&vec![0u8; n]).err().unwrap();
            assert_eq!(err, Error::CorruptSlot);
        }
        // A low-order X25519 share (zero) gives an all-zero secret: refused.
        let mut enc = encapsulate(id.public()).unwrap().0;
        enc[MLKEM_CIPHERTEXT_SIZE..].fill(0);
        assert_eq!(id.decapsulate(&enc).err().unwrap(), Error::CorruptSlot);
        assert!(matches!(
            Identity::from_seed(&[0u8; 31]),
            Err(Error::InvalidKeyLength { .. })
        ));
        assert!(matches!(
            check_public(&[0u8; 3]),
            Err(Error::InvalidArgument(_))
        ));
        // ML-KEM coefficients must be below q = 3329: 0xFFF is not.
        let mut public = *id.public();
        public[..3].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            check_public(&public),
            Err(Error::InvalidArgument(_))
        ));
        let mut low = *id.public();
        low[MLKEM_PUBLIC_SIZE..].fill(0);
        assert!(matches!(encapsulate(&low), Err(Error::InvalidArgument(_))));
    }
}
