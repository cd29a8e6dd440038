//! Known-answer tests from the RFCs, and the hard limits.

use e2ebackup_core::kdf::{self, Argon2Params, ScryptParams};
use e2ebackup_core::Error;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn argon2id_rfc9106_section_5_3() {
    let params = Argon2Params {
        memory_kib: 32,
        iterations: 3,
        parallelism: 4,
    };
    let mut out = [0u8; 32];
    kdf::argon2id(&[1; 32], &[2; 16], params, &[3; 8], &[4; 12], &mut out).unwrap();
    assert_eq!(
        hex(&out),
        "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
    );
}

/// password, salt, log2(N), r, p, expected output.
type ScryptCase = (&'static [u8], &'static [u8], u8, u32, u32, &'static str);

#[test]
fn scrypt_rfc7914_section_12() {
    let cases: [ScryptCase; 2] = [
        (b"password", b"NaCl", 10, 8, 16, "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"),
        (b"pleaseletmein", b"SodiumChloride", 14, 8, 1, "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887"),
    ];
    for (password, salt, log2_n, r, p, expected) in cases {
        let mut out = [0u8; 64];
        kdf::scrypt(password, salt, ScryptParams { log2_n, r, p }, &mut out).unwrap();
        assert_eq!(hex(&out), expected);
    }
}

#[test]
fn hkdf_sha256_rfc5869_case_1() {
    let ikm = [0x0b; 22];
    let salt: Vec<u8> = (0..=12).collect();
    let info: Vec<u8> = (0xf0..=0xf9).collect();
    let mut out = [0u8; 42];
    kdf::hkdf_sha256(&ikm, &salt, &info, &mut out).unwrap();
    assert_eq!(
        hex(&out),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
}

#[test]
fn oversized_parameters_are_refused_before_any_work() {
    let mut out = [0u8; 32];
    let huge = Argon2Params {
        memory_kib: 64 << 20,
        iterations: 3,
        parallelism: 4,
    };
    assert!(matches!(
        kdf::argon2id(b"p", &[0; 16], huge, &[], &[], &mut out),
        Err(Error::KdfLimit(_))
    ));
    let slow = Argon2Params {
        memory_kib: 65536,
        iterations: 1_000_000_000,
        parallelism: 4,
    };
    assert!(matches!(
        kdf::argon2id(b"p", &[0; 16], slow, &[], &[], &mut out),
        Err(Error::KdfLimit(_))
    ));
    let big = ScryptParams {
        log2_n: 40,
        r: 8,
        p: 1,
    };
    assert!(matches!(
        kdf::scrypt(b"p", &[0; 16], big, &mut out),
        Err(Error::KdfLimit(_))
    ));
    let wide = ScryptParams {
        log2_n: 22,
        r: 32,
        p: 1,
    };
    assert!(matches!(
        kdf::scrypt(b"p", &[0; 16], wide, &mut out),
        Err(Error::KdfLimit(_))
    ));
    let mut tiny = [0u8; 8];
    let ok = Argon2Params::RFC9106_SECOND;
    assert!(matches!(
        kdf::argon2id(b"p", &[0; 16], ok, &[], &[], &mut tiny),
        Err(Error::KdfLimit(_))
    ));
}
