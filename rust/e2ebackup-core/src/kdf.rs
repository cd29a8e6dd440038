//! Key derivation: Argon2id and scrypt for passwords, HKDF for the key hierarchy.
//!
//! Parameters read from a file are attacker-controlled, so every set is checked against hard
//! limits before any work starts: a slot asking for 64 GiB or 10^9 passes is refused, not run.

use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Salt lengths accepted by the raw functions (Argon2 itself needs at least 8). Key slots are
/// stricter: 16 to 64 random bytes.
pub const MAX_SALT: usize = 1024;
/// Output lengths a caller may ask for.
pub const MAX_OUTPUT: usize = 64;

/// Argon2id limits: 4 GiB of memory, 64 passes, 64 lanes.
pub const ARGON2_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
pub const ARGON2_MAX_ITERATIONS: u32 = 64;
pub const ARGON2_MAX_PARALLELISM: u32 = 64;
/// scrypt limits: N up to 2^22, r up to 32, p up to 16, and at most 4 GiB of memory in total.
pub const SCRYPT_MAX_LOG2_N: u8 = 22;
pub const SCRYPT_MAX_R: u32 = 32;
pub const SCRYPT_MAX_P: u32 = 16;
pub const SCRYPT_MAX_MEMORY: u64 = 4 << 30;

fn limit(what: &str, value: u64, min: u64, max: u64) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::KdfLimit(format!(
            "{what} must be between {min} and {max}, got {value}"
        )))
    }
}

fn check_io(salt: &[u8], out: &[u8]) -> Result<()> {
    limit("salt length", salt.len() as u64, 0, MAX_SALT as u64)?;
    limit("output length", out.len() as u64, 16, MAX_OUTPUT as u64)
}

/// Argon2id (RFC 9106) parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2Params {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes.
    pub const RFC9106_SECOND: Argon2Params = Argon2Params {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };

    pub fn check(&self) -> Result<()> {
        limit(
            "Argon2 parallelism",
            self.parallelism.into(),
            1,
            ARGON2_MAX_PARALLELISM.into(),
        )?;
        let min_memory = 8 * u64::from(self.parallelism).max(1);
        limit(
            "Argon2 memory (KiB)",
            self.memory_kib.into(),
            min_memory,
            ARGON2_MAX_MEMORY_KIB.into(),
        )?;
        limit(
            "Argon2 iterations",
            self.iterations.into(),
            1,
            ARGON2_MAX_ITERATIONS.into(),
        )
    }
}

/// Argon2id of `password` and `salt` into `out`, lanes computed in parallel. `secret` (K) and
/// `associated_data` (X) are RFC 9106's optional inputs; e2ebackup's slots use neither.
pub fn argon2id(
    password: &[u8],
    salt: &[u8],
    params: Argon2Params,
    secret: &[u8],
    associated_data: &[u8],
    out: &mut [u8],
) -> Result<()> {
    params.check()?;
    check_io(salt, out)?;
    let bad = |e: argon2::Error| Error::KdfLimit(format!("Argon2 parameters rejected: {e}"));
    let p = argon2::ParamsBuilder::new()
        .m_cost(params.memory_kib)
        .t_cost(params.iterations)
        .p_cost(params.parallelism)
        .data(argon2::AssociatedData::new(associated_data).map_err(bad)?)
        .output_len(out.len())
        .build()
        .map_err(bad)?;
    argon2::Argon2::new_with_secret(
        secret,
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        p,
    )
    .map_err(bad)?
    .hash_password_into(password, salt, out)
    .map_err(bad)
}

/// scrypt (RFC 7914) parameters; N = 2^log2_n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScryptParams {
    pub log2_n: u8,
    pub r: u32,
    pub p: u32,
}

impl ScryptParams {
    pub const DEFAULT: ScryptParams = ScryptParams {
        log2_n: 17,
        r: 8,
        p: 1,
    };

    /// Memory scrypt needs: 128 * r * (N + p) bytes.
    pub fn memory(&self) -> u64 {
        128 * u64::from(self.r) * ((1u64 << self.log2_n.min(63)) + u64::from(self.p))
    }

    pub fn check(&self) -> Result<()> {
        limit(
            "scrypt log2(N)",
            self.log2_n.into(),
            1,
            SCRYPT_MAX_LOG2_N.into(),
        )?;
        limit("scrypt r", self.r.into(), 1, SCRYPT_MAX_R.into())?;
        limit("scrypt p", self.p.into(), 1, SCRYPT_MAX_P.into())?;
        limit("scrypt memory (bytes)", self.memory(), 1, SCRYPT_MAX_MEMORY)
    }
}

/// scrypt of `password` and `salt` into `out`, computed by aws-lc (its ROMix is about 1.6x the
/// pure-Rust crate's here).
pub fn scrypt(password: &[u8], salt: &[u8], params: ScryptParams, out: &mut [u8]) -> Result<()> {
    params.check()?;
    check_io(salt, out)?;
    let max_mem = usize::try_from(params.memory() + (1 << 20))
        .map_err(|_| Error::KdfLimit("scrypt needs more memory than this platform has".into()))?;
    // SAFETY: every pointer/length pair describes a live slice; aws-lc writes exactly
    // `out.len()` bytes to `out` and reads the others.
    let ok = unsafe {
        aws_lc_sys::EVP_PBE_scrypt(
            password.as_ptr().cast(),
            password.len(),
            salt.as_ptr(),
            salt.len(),
            1u64 << params.log2_n,
            params.r.into(),
            params.p.into(),
            max_mem,
            out.as_mut_ptr(),
            out.len(),
        )
    };
    if ok == 1 {
        Ok(())
    } else {
        Err(Error::KdfLimit(
            "scrypt could not allocate its memory".into(),
        ))
    }
}

struct Len(usize);

impl aws_lc_rs::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA-256 (RFC 5869), extract then expand: how every key of the hierarchy is derived
/// from a data key under its own label.
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    if out.is_empty() || out.len() > 255 * 32 {
        return Err(Error::InvalidArgument(
            "HKDF output must be 1 to 8160 bytes".into(),
        ));
    }
    let prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    let okm = prk
        .expand(&info, Len(out.len()))
        .map_err(|_| Error::InvalidArgument("HKDF expand failed".into()))?;
    okm.fill(out)
        .map_err(|_| Error::InvalidArgument("HKDF expand failed".into()))
}

/// A derived 32-byte key, wiped when dropped.
pub type Key32 = Zeroizing<[u8; 32]>;
