//! WhatsApp crypt15 without Python: GCM and HKDF known answers (computed with OpenSSL through
//! `cryptography`), round trips of single- and multi-file backups, and the tamper matrix.

use e2ebackup_core::whatsapp::gcm::{Opener, Sealer};
use e2ebackup_core::whatsapp::{
    self, backup_encryption_key, BackupInfo, BackupKey, DecryptOptions, EncryptOptions, Layout,
    Payload, Version,
};
use e2ebackup_core::Error;

const ROOT: [u8; 32] = [0x42; 32];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn counting(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + 3) % 256) as u8).collect()
}

/// Text-like data that compresses about like a database.
fn database_like(n: usize) -> Vec<u8> {
    let words = [
        "hello ",
        "ok ",
        "see you ",
        "tomorrow ",
        "😀 ",
        "at ",
        "the ",
        "station ",
        "12:30 ",
    ];
    let mut out = Vec::with_capacity(n + 16);
    let mut x = 0x2545_f491_u32;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(words[(x % words.len() as u32) as usize].as_bytes());
        if x % 11 == 0 {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(n);
    out
}

#[test]
fn gcm_with_a_16_byte_iv_matches_openssl() {
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let iv: [u8; 16] = core::array::from_fn(|i| 0xa0 + i as u8);
    let vectors = [
        (0, "022f841c702b66b0bec8111f67de221d"),
        (1, "292017643f9281af327f9487e3df3e3d7c"),
        (
            16,
            "29a932a407ebe042f8dc56e1ba4ae8fc890ce0e3fa7321a07ba4f5bedc8e26e7",
        ),
        (
            77,
            "29a932a407ebe042f8dc56e1ba4ae8fcf13fc2f1f1a2cc0856a0d376defbf35bef7b179b6ad5b2a9f5\
             2b19922f7cf2bc4960c60abb73d0a56dabe7c406cb1555ca5427dad72a529c7f8f0c592c26831a3abe\
             6c3bc3e625453526833b04",
        ),
    ];
    for (n, expected) in vectors {
        let expected = hex(expected);
        let pt = counting(n);
        // Pieces of odd sizes, so partial GHASH blocks are exercised.
        for piece in [1, 5, 16, 17, 1000] {
            let mut sealer = Sealer::new(&key, &iv);
            let mut ct = pt.clone();
            for chunk in ct.chunks_mut(piece) {
                sealer.seal_in_place(chunk).unwrap();
            }
            ct.extend_from_slice(&sealer.tag());
            assert_eq!(ct, expected, "seal n={n} piece={piece}");

            let mut opener = Opener::new(&key, &iv);
            let mut body = expected[..n].to_vec();
            for chunk in body.chunks_mut(piece) {
                opener.open_in_place(chunk).unwrap();
            }
            assert_eq!(body, pt);
            assert_eq!(opener.tag_of(opener.ghash()).as_slice(), &expected[n..]);
        }
    }
}

#[test]
fn backup_key_is_hkdf_sha256_of_the_root_key() {
    let root: [u8; 32] = core::array::from_fn(|i| i as u8);
    let expected = hex("4e54c0777a7214dfdf0af5b6e153acfa2fbdac603fea6fd1630b824e5c29eef5");
    assert_eq!(
        backup_encryption_key(&root).unwrap().as_slice(),
        &expected[..]
    );
}

fn encrypt(data: &[u8], options: &EncryptOptions) -> Vec<u8> {
    let key = BackupKey::crypt15(&ROOT).unwrap();
    let mut out = Vec::new();
    let report =
        whatsapp::encrypt(&key, &mut &data[..], &mut out, options, &mut |_| Ok(())).unwrap();
    assert_eq!(report.input_len, data.len() as u64);
    assert_eq!(report.output_len, out.len() as u64);
    out
}

fn decrypt_with(root: &[u8; 32], file: &[u8]) -> Result<(Vec<u8>, whatsapp::DecryptReport), Error> {
    let key = BackupKey::crypt15(root).unwrap();
    let mut out = Vec::new();
    let report = whatsapp::decrypt(
        &key,
        &mut &file[..],
        &mut out,
        &DecryptOptions::default(),
        &mut |_| Ok(()),
    )?;
    Ok((out, report))
}

fn decrypt(file: &[u8]) -> Result<Vec<u8>, Error> {
    decrypt_with(&ROOT, file).map(|(out, _)| out)
}

#[test]
fn round_trips_single_file() {
    for n in [0, 1, 100, (1 << 20) - 1, 1 << 20, (3 << 20) + 5] {
        let data = database_like(n);
        let file = encrypt(&data, &EncryptOptions::default());
        let (out, report) = decrypt_with(&ROOT, &file).unwrap();
        assert!(out == data, "n={n}");
        assert_eq!(report.layout, Layout::SingleFile);
        assert_eq!(report.payload, Payload::Zlib);
        assert_eq!(report.version, Version::Crypt15);
        assert_eq!(report.input_len, file.len() as u64);
        let info = report.header.prefix.info.unwrap();
        assert_eq!(info.app_version.as_deref(), Some("2.23.18.12"));
    }
}

#[test]
fn round_trips_incompressible_data_and_every_level() {
    let data: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes())
        .collect();
    for level in [0, 1, 6, 9] {
        let options = EncryptOptions {
            level,
            ..Default::default()
        };
        assert!(decrypt(&encrypt(&data, &options)).unwrap() == data);
    }
}

#[test]
fn round_trips_multi_file() {
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&database_like(70_000));
    let options = EncryptOptions {
        multi_file: true,
        info: None,
        ..Default::default()
    };
    let file = encrypt(&zip, &options);
    let (out, report) = decrypt_with(&ROOT, &file).unwrap();
    assert!(out == zip);
    assert_eq!(report.layout, Layout::MultiFile);
    assert_eq!(report.payload, Payload::Zip);
}

#[test]
fn round_trips_multi_file_payloads_shorter_than_a_tag() {
    // Found by the crypt15_decrypt fuzz target: a multi-file backup ends in a tag and no
    // checksum, so it may hold fewer than the 32 trailing bytes a single-file one has.
    let options = EncryptOptions {
        multi_file: true,
        info: None,
        ..Default::default()
    };
    for n in 4..=40 {
        let mut zip = b"PK\x03\x04".to_vec();
        zip.extend_from_slice(&counting(n - 4));
        let mut file = encrypt(&zip, &options);
        let (out, report) = decrypt_with(&ROOT, &file).unwrap();
        assert!(out == zip, "n={n}");
        assert_eq!(report.layout, Layout::MultiFile);
        // Still authenticated: the last byte flipped is refused.
        *file.last_mut().unwrap() ^= 1;
        assert!(decrypt(&file).is_err(), "n={n}");
    }
}

fn header_len(file: &[u8]) -> usize {
    let mut buf = Vec::new();
    whatsapp::read_header(&mut &file[..], &mut buf, 16)
        .unwrap()
        .len
}

#[test]
fn tamper_matrix() {
    let data = database_like(200_000);
    let file = encrypt(&data, &EncryptOptions::default());
    let h = header_len(&file);
    let n = file.len();

    // Wrong key: the file is intact, so it is told apart.
    let err = decrypt_with(&[0x43; 32], &file).unwrap_err();
    assert!(matches!(err, Error::WhatsAppWrongKey(_)), "{err:?}");
    assert!(err.to_string().contains("wrong key"));

    // A flipped bit anywhere: the IV in the prefix, the ciphertext, the tag, the MD5.
    for (pos, what) in [
        (h - 3, "prefix"),
        (h, "first ciphertext byte"),
        (n / 2, "ciphertext"),
        (n - 20, "tag"),
        (n - 1, "md5"),
    ] {
        let mut bad = file.clone();
        bad[pos] ^= 0x10;
        let err = decrypt(&bad).unwrap_err();
        assert!(
            matches!(err, Error::WhatsAppCorrupted(_)),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains("corrupted"), "{what}: {err}");
    }

    // Truncated anywhere after the header.
    for cut in [h + 1, h + 31, h + 40, n / 2, n - 17, n - 1] {
        let err = decrypt(&file[..cut]).unwrap_err();
        assert!(
            matches!(err, Error::WhatsAppTruncated(_)),
            "cut {cut}: {err:?}"
        );
        assert!(err.to_string().contains("truncated"), "cut {cut}: {err}");
    }
    // Truncated inside the header.
    for cut in [1, 2, h / 2, h - 1] {
        let err = decrypt(&file[..cut]).unwrap_err();
        assert!(
            matches!(err, Error::WhatsAppTruncated(_)),
            "cut {cut}: {err:?}"
        );
    }
    // Extended.
    let mut longer = file.clone();
    longer.extend_from_slice(&[0; 16]);
    assert!(decrypt(&longer).is_err());

    // Not a backup at all.
    for junk in [
        &b""[..],
        b"SQLite format 3\0xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        &[0xff; 100],
    ] {
        let err = decrypt(junk).unwrap_err();
        assert!(matches!(err, Error::WhatsAppFormat(_)), "{err:?}");
    }
}

#[test]
fn a_key_of_the_wrong_kind_is_explained() {
    let file = encrypt(b"data", &EncryptOptions::default());
    let key = BackupKey::crypt14(&ROOT).unwrap();
    let err = whatsapp::decrypt(
        &key,
        &mut &file[..],
        &mut Vec::new(),
        &DecryptOptions::default(),
        &mut |_| Ok(()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("64-digit"), "{err}");
}

#[test]
fn unknown_prefix_fields_are_tolerated() {
    // Re-frame a backup with extra fields in the prefix; the MD5 is recomputed, the tag is
    // unaffected (the prefix is not authenticated data).
    use md5::{Digest, Md5};
    let data = database_like(5000);
    let file = encrypt(&data, &EncryptOptions::default());
    let h = header_len(&file);
    let mut message = file[2..h].to_vec(); // [0x85, 0x01] length, then the message
    message.extend_from_slice(&[0x30, 0x02]); // field 6 (newer key type) = 2
    message.extend_from_slice(&[0xaa, 0x01, 0x03, b'n', b'e', b'w']); // field 21, bytes
    message.extend_from_slice(&[0xfd, 0x03, 1, 2, 3, 4]); // field 63, fixed32
    let mut framed = vec![(message.len() as u8) | 0x80, 0x01];
    framed.extend_from_slice(&message);
    framed.extend_from_slice(&file[h..file.len() - 16]);
    let sum = Md5::digest(&framed);
    framed.extend_from_slice(&sum);
    let (out, report) = decrypt_with(&ROOT, &framed).unwrap();
    assert!(out == data);
    assert_eq!(report.header.prefix.key_type_v2, Some(2));
    assert_eq!(report.header.prefix.unknown_fields, vec![21, 63]);
}

#[test]
fn info_fields_round_trip() {
    let info = BackupInfo {
        app_version: Some("2.24.1.5".into()),
        jid_suffix: Some("42".into()),
        backup_version: Some(1),
        features: vec![(5, true), (6, false), (40, true)],
        ..Default::default()
    };
    let options = EncryptOptions {
        info: Some(info),
        ..Default::default()
    };
    let file = encrypt(b"x", &options);
    let (_, report) = decrypt_with(&ROOT, &file).unwrap();
    let got = report.header.prefix.info.unwrap();
    assert_eq!(got.jid_suffix.as_deref(), Some("42"));
    assert_eq!(got.features, vec![(5, true), (6, false), (40, true)]);
}
