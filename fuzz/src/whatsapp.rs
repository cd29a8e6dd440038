//! WhatsApp crypt15/crypt14 (rust/e2ebackup-core/src/whatsapp): the cleartext prefix (a length
//! and a hand-parsed protobuf) and whole-file decryption.

use std::io::{Cursor, Write};

use e2ebackup_core::whatsapp::encrypt;
use e2ebackup_core::whatsapp::prefix::{encode_header, parse_header, HeaderParse};
use e2ebackup_core::whatsapp::{
    decrypt, read_header, BackupInfo, BackupKey, DecryptOptions, EncryptOptions, Payload,
};
use e2ebackup_core::Error;

use crate::alloc::peak_allocated_during;
use crate::input::{stretch, Input};

const ROOT: [u8; 32] = [0x42; 32];
/// Decryption streams in blocks of 1 MiB with a few in flight: a few MiB whatever the input
/// (docs/WHATSAPP.md), plus what the sink below keeps.
const DECRYPT_MEMORY: usize = 24 << 20;
/// Output kept by the sink; beyond it only counted (a zlib bomb must not fill the harness).
const SINK_KEEP: usize = 4 << 20;

fn is_whatsapp_error(e: &Error) -> bool {
    matches!(
        e,
        Error::WhatsAppFormat(_)
            | Error::WhatsAppTruncated(_)
            | Error::WhatsAppCorrupted(_)
            | Error::WhatsAppWrongKey(_)
    )
}

/// The prefix parser: never panics; a complete header lies within the input, has a usable IV,
/// parses the same from exactly its own bytes and from a reader fed in any read sizes, and
/// re-encodes to a header with the same cipher and info.
pub fn crypt15_prefix(data: &[u8]) {
    let mut input = Input::new(data);
    let first_read = usize::from(input.u8());
    let buf = input.rest();
    let parsed = parse_header(buf);
    let header = match &parsed {
        Ok(HeaderParse::Complete(h)) => h,
        Ok(HeaderParse::NeedMore(n)) => {
            assert!(
                *n > buf.len(),
                "asks for {n} bytes with {} there",
                buf.len()
            );
            return;
        }
        Err(e) => {
            assert!(
                matches!(e, Error::WhatsAppFormat(_)),
                "unexpected error {e:?}"
            );
            return;
        }
    };
    assert!(header.len <= buf.len() && header.len > header.prefix_raw.len());
    assert_eq!(
        &buf[header.len - header.prefix_raw.len()..header.len],
        &header.prefix_raw[..]
    );
    let cipher = header
        .prefix
        .cipher()
        .expect("a complete header has a usable IV");
    match parse_header(&buf[..header.len]) {
        Ok(HeaderParse::Complete(again)) => assert_eq!(again, *header, "depends on later bytes"),
        other => panic!("its own bytes do not parse: {other:?}"),
    }
    // Through a reader, with this first read size. `decrypt` reads 1 MiB first, so the whole
    // header (at most 64 KiB) is there at once and the reader must agree with the parser. With
    // a first read that ends inside the header, a prefix whose first field is not one the app
    // writes first is refused as "not a backup" before the rest is read (a short garbage file
    // is told apart from a truncated backup that way): refused, never accepted differently.
    let mut reader = Cursor::new(buf);
    let mut seen = Vec::new();
    match read_header(&mut reader, &mut seen, first_read) {
        Ok(h) => assert_eq!(h, **header, "the reader disagrees with the parser"),
        Err(e) if first_read < header.len => {
            assert!(
                matches!(e, Error::WhatsAppFormat(_)),
                "unexpected error {e:?}"
            );
        }
        Err(e) => panic!("the reader refused a header the parser accepts: {e}"),
    }
    let encoded = encode_header(&header.prefix).expect("a parsed prefix re-encodes");
    match parse_header(&encoded) {
        Ok(HeaderParse::Complete(again)) => {
            assert_eq!(again.prefix.cipher().ok(), Some(cipher));
            assert_eq!(again.prefix.info, header.prefix.info);
            assert_eq!(again.len, encoded.len());
        }
        other => panic!("a re-encoded prefix does not parse: {other:?}"),
    }
}

/// A sink that keeps the first [`SINK_KEEP`] bytes and counts the rest.
#[derive(Default)]
struct Sink {
    kept: Vec<u8>,
    total: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = SINK_KEEP.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&buf[..buf.len().min(room)]);
        self.total += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run_decrypt(key: &BackupKey, file: &[u8], decompress: bool) -> (Result<Payload, Error>, Sink) {
    let mut sink = Sink::default();
    let options = DecryptOptions { decompress };
    let (result, peak) = peak_allocated_during(|| {
        decrypt(
            key,
            &mut Cursor::new(file),
            &mut sink,
            &options,
            &mut |_| Ok(()),
        )
    });
    assert!(
        peak <= DECRYPT_MEMORY + 2 * file.len(),
        "decrypting {} bytes took {peak} bytes of memory",
        file.len()
    );
    let result = result.map(|report| {
        assert_eq!(report.input_len, file.len() as u64);
        assert_eq!(report.output_len, sink.total);
        report.payload
    });
    if let Err(e) = &result {
        assert!(is_whatsapp_error(e), "unexpected error {e:?}");
    }
    (result, sink)
}

/// Decrypting any file fails with a WhatsApp error unless it is genuine; a backup written by
/// `encrypt` round-trips; a flipped byte in a single-file backup is always refused and never
/// changes the output of a multi-file one; authentic payloads of any bytes (zlib bombs
/// included) are handled in bounded memory.
pub fn crypt15_decrypt(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let decompress = mode & 0x10 == 0;
    let key = if mode & 0x20 != 0 {
        BackupKey::crypt14(&ROOT).expect("key size")
    } else {
        BackupKey::crypt15(&ROOT).expect("key size")
    };
    if mode & 1 == 0 {
        // Any file (a corpus seed is a genuine backup under ROOT and opens).
        let _ = run_decrypt(&key, input.rest(), decompress);
        return;
    }
    let key = BackupKey::crypt15(&ROOT).expect("key size");
    let multi_file = mode & 2 != 0;
    let options = EncryptOptions {
        info: (mode & 4 != 0).then(BackupInfo::default_msgstore),
        iv: Some(input.array()),
        level: u32::from(input.u8() % 10),
        multi_file,
    };
    let flip = input.u32() as usize;
    let len = usize::from(input.u16());
    let mut payload = stretch(input.rest(), len);
    if mode & 8 != 0 && payload.len() >= 2 {
        // A zlib header: a multi-file backup then carries an authentic, arbitrary "zlib" stream.
        payload[..2].copy_from_slice(&[0x78, 0x9c]);
    }
    let mut file = Vec::new();
    encrypt(
        &key,
        &mut Cursor::new(&payload),
        &mut file,
        &options,
        &mut |_| Ok(()),
    )
    .expect("encrypting");
    let (result, sink) = run_decrypt(&key, &file, decompress);
    let genuine = result.as_ref().ok().copied();
    if !multi_file {
        let payload_kind = result.expect("a genuine single-file backup decrypts");
        if decompress {
            assert_eq!(payload_kind, Payload::Zlib);
            assert_eq!(sink.total, payload.len() as u64);
            assert_eq!(
                sink.kept,
                payload[..payload.len().min(SINK_KEEP)],
                "round trip"
            );
        }
    } else if matches!(genuine, Some(Payload::Raw | Payload::Zip)) || !decompress {
        // Payloads shorter than a tag too (found by this target: the reader once asked for
        // a tag and a checksum's worth of bytes, which a multi-file backup need not have).
        assert_eq!(sink.kept, payload, "multi-file round trip");
    }
    // One flipped bit anywhere.
    let at = flip % (file.len() * 8);
    file[at / 8] ^= 1 << (at % 8);
    let (tampered, tampered_sink) = run_decrypt(&key, &file, decompress);
    match tampered {
        Ok(_) if !multi_file => panic!("a flipped bit at {at} in a single-file backup passed"),
        // The prefix of a multi-file backup is not authenticated (WhatsApp's format), but the
        // payload is: whatever is accepted must be what was written.
        Ok(_) => {
            assert!(
                genuine.is_some(),
                "a flipped bit made a refused backup open"
            );
            assert_eq!(
                tampered_sink.kept, sink.kept,
                "a flipped bit changed the output"
            );
        }
        Err(_) => {}
    }
}
