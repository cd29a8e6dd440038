//! The cleartext start of a crypt14/crypt15 file: a length, sometimes a `0x01` byte, and the
//! `BackupPrefix` protobuf message that carries the IV.
//!
//! The protobuf wire format is parsed by hand (a few dozen lines; no code generator): every
//! field is checked for well-formedness, known fields are read, and unknown fields are
//! tolerated and recorded by number, so newer app versions that add fields keep working.
//!
//! ```text
//! BackupPrefix { 1: key_type (enum)   2: C14Cipher   3: C15Iv { 1: IV }   4: BackupInfo
//!                6: a newer key_type (varint) }
//! C14Cipher    { 1: cipher_version  2: key_version  3: server_salt  4: google_id  5: IV }
//! BackupInfo   { 1: app_version (string)  3: jid_suffix (string)  4: backup_version (varint)
//!                5..: feature flags (bool) }
//! ```
//!
//! How the length is written: the app writes the message length as a protobuf varint (Java's
//! `writeDelimitedTo`); for the usual 128..255-byte messages that is two bytes, the second one
//! being `0x01`. wa-crypt-tools reads and writes a single length byte followed by a `0x01`
//! "feature table" byte, which is the same thing for those sizes, and it writes the `0x01` even
//! after a length under 128. A protobuf message can never start with `0x01` (field 0), so the
//! reader accepts all three: a varint, a varint under 128 followed by `0x01`, and a single
//! length byte of 128 or more with no `0x01` after it.

use crate::error::{Error, Result};

use super::gcm::IV_SIZE;

/// The longest prefix message accepted (real ones are 30 to 200 bytes).
pub const MAX_PREFIX_LEN: usize = 64 * 1024;
/// Bytes of the frame before the prefix message: at most a 3-byte varint and the `0x01`.
const MAX_LENGTH_BYTES: usize = 4;
/// Enough bytes to parse any valid header.
pub const MAX_HEADER_LEN: usize = MAX_PREFIX_LEN + MAX_LENGTH_BYTES;

/// `key_type` value of backups protected by the 64-digit key (`HSM_CONTROLLED`).
pub const KEY_TYPE_HSM_CONTROLLED: u64 = 1;
/// `key_type` value of backups whose key WhatsApp's server holds (`WA_PROVIDED`, crypt14).
pub const KEY_TYPE_WA_PROVIDED: u64 = 0;

// --- protobuf wire format -----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Where a parse stopped: the input ended inside a field, or a byte cannot be protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    Truncated,
    Invalid,
}

fn read_varint(buf: &[u8], pos: &mut usize) -> std::result::Result<u64, Malformed> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = buf.get(*pos) else {
            return Err(Malformed::Truncated);
        };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed::Invalid)
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: u64) -> std::result::Result<&'a [u8], Malformed> {
    let n = usize::try_from(n).map_err(|_| Malformed::Truncated)?;
    let end = pos.checked_add(n).ok_or(Malformed::Truncated)?;
    let out = buf.get(*pos..end).ok_or(Malformed::Truncated)?;
    *pos = end;
    Ok(out)
}

/// Every `(field number, value)` of a message, in order.
fn fields(buf: &[u8]) -> std::result::Result<Vec<(u32, Value<'_>)>, Malformed> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = read_varint(buf, &mut pos)?;
        let number = u32::try_from(key >> 3).map_err(|_| Malformed::Invalid)?;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(Malformed::Invalid);
        }
        let value = match key & 7 {
            0 => Value::Varint(read_varint(buf, &mut pos)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                take(buf, &mut pos, 8)?.try_into().expect("8 bytes"),
            )),
            2 => {
                let len = read_varint(buf, &mut pos)?;
                Value::Bytes(take(buf, &mut pos, len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                take(buf, &mut pos, 4)?.try_into().expect("4 bytes"),
            )),
            // Groups (3, 4) are obsolete and never used here; 6 and 7 do not exist.
            _ => return Err(Malformed::Invalid),
        };
        out.push((number, value));
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

fn put_bytes(out: &mut Vec<u8>, number: u32, data: &[u8]) {
    put_key(out, number, 2);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn put_uint(out: &mut Vec<u8>, number: u32, value: u64) {
    put_key(out, number, 0);
    put_varint(out, value);
}

// --- the messages -----------------------------------------------------------------------

/// The crypt14 cipher description (`BackupPrefix.c14_cipher`). None of it is secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct C14Cipher {
    pub cipher_version: Vec<u8>,
    pub key_version: Vec<u8>,
    pub server_salt: Vec<u8>,
    pub google_id: Vec<u8>,
    pub iv: Vec<u8>,
}

/// `BackupPrefix.info`: which app wrote the backup and which database features it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupInfo {
    pub app_version: Option<String>,
    /// The last two digits of the owner's phone number.
    pub jid_suffix: Option<String>,
    pub backup_version: Option<u64>,
    /// Feature flags by field number (5 and up), as present in the message (also `false` ones).
    pub features: Vec<(u32, bool)>,
    /// Numbers of the fields this parser does not know, tolerated.
    pub unknown_fields: Vec<u32>,
    /// The message as it was read, to copy it unchanged into a new backup.
    pub raw: Vec<u8>,
}

impl BackupInfo {
    /// The fields wa-crypt-tools writes by default (taken from a 2023 msgstore backup): app
    /// version 2.23.18.12, features 5..=33, 35..=37 and 39 set, 34 explicitly unset.
    pub fn default_msgstore() -> Self {
        let mut features: Vec<(u32, bool)> =
            (5..=39).filter(|&f| f != 38).map(|f| (f, true)).collect();
        for entry in &mut features {
            if entry.0 == 34 {
                entry.1 = false;
            }
        }
        BackupInfo {
            app_version: Some("2.23.18.12".into()),
            jid_suffix: Some("00".into()),
            backup_version: Some(0),
            features,
            unknown_fields: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn parse(raw: &[u8]) -> std::result::Result<Self, Malformed> {
        let mut info = BackupInfo {
            raw: raw.to_vec(),
            ..Default::default()
        };
        for (number, value) in fields(raw)? {
            match (number, value) {
                (1, Value::Bytes(b)) => info.app_version = Some(text(b)?),
                (3, Value::Bytes(b)) => info.jid_suffix = Some(text(b)?),
                (4, Value::Varint(v)) => info.backup_version = Some(v),
                (5.., Value::Varint(v)) => info.features.push((number, v != 0)),
                _ => info.unknown_fields.push(number),
            }
        }
        Ok(info)
    }

    /// The message bytes: `raw` if it was read from a file, else the fields encoded in order.
    pub fn encode(&self) -> Vec<u8> {
        if !self.raw.is_empty() {
            return self.raw.clone();
        }
        let mut out = Vec::new();
        if let Some(v) = &self.app_version {
            put_bytes(&mut out, 1, v.as_bytes());
        }
        if let Some(j) = &self.jid_suffix {
            put_bytes(&mut out, 3, j.as_bytes());
        }
        if let Some(v) = self.backup_version {
            put_uint(&mut out, 4, v);
        }
        for &(number, on) in &self.features {
            put_uint(&mut out, number, u64::from(on));
        }
        out
    }
}

fn text(b: &[u8]) -> std::result::Result<String, Malformed> {
    String::from_utf8(b.to_vec()).map_err(|_| Malformed::Invalid)
}

/// Which cipher description the prefix carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `c15_iv`: the key is derived from the 64-digit root key.
    Crypt15,
    /// `c14_cipher`: the key comes from the legacy 131-byte `key` file.
    Crypt14,
}

/// The `BackupPrefix` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPrefix {
    pub key_type: Option<u64>,
    pub c14: Option<C14Cipher>,
    pub c15_iv: Option<Vec<u8>>,
    pub info: Option<BackupInfo>,
    /// Field 6, a newer key-type field seen in recent backups (a varint), if present.
    pub key_type_v2: Option<u64>,
    /// Numbers of the top-level fields this parser does not know, tolerated.
    pub unknown_fields: Vec<u32>,
}

impl BackupPrefix {
    /// A crypt15 prefix as the app writes it: key type `HSM_CONTROLLED`, the IV, the info.
    pub fn crypt15(iv: &[u8; IV_SIZE], info: Option<BackupInfo>) -> Self {
        BackupPrefix {
            key_type: Some(KEY_TYPE_HSM_CONTROLLED),
            c14: None,
            c15_iv: Some(iv.to_vec()),
            info,
            key_type_v2: None,
            unknown_fields: Vec::new(),
        }
    }

    fn parse(raw: &[u8]) -> std::result::Result<Self, Malformed> {
        let mut p = BackupPrefix {
            key_type: None,
            c14: None,
            c15_iv: None,
            info: None,
            key_type_v2: None,
            unknown_fields: Vec::new(),
        };
        for (number, value) in fields(raw)? {
            match (number, value) {
                (1, Value::Varint(v)) => p.key_type = Some(v),
                (2, Value::Bytes(b)) => {
                    let mut c = C14Cipher::default();
                    for (n, v) in fields(b)? {
                        if let Value::Bytes(x) = v {
                            let slot = match n {
                                1 => &mut c.cipher_version,
                                2 => &mut c.key_version,
                                3 => &mut c.server_salt,
                                4 => &mut c.google_id,
                                5 => &mut c.iv,
                                _ => continue,
                            };
                            *slot = x.to_vec();
                        }
                    }
                    p.c14 = Some(c);
                }
                (3, Value::Bytes(b)) => {
                    let mut iv = None;
                    for (n, v) in fields(b)? {
                        if let (1, Value::Bytes(x)) = (n, v) {
                            iv = Some(x.to_vec());
                        }
                    }
                    p.c15_iv = Some(iv.unwrap_or_default());
                }
                (4, Value::Bytes(b)) => p.info = Some(BackupInfo::parse(b)?),
                (6, Value::Varint(v)) => p.key_type_v2 = Some(v),
                _ => p.unknown_fields.push(number),
            }
        }
        Ok(p)
    }

    /// The IV and what kind of backup this is, or why the prefix is unusable.
    pub fn cipher(&self) -> Result<(Version, [u8; IV_SIZE])> {
        let (version, iv) = match (&self.c15_iv, &self.c14) {
            (Some(iv), _) if !iv.is_empty() => (Version::Crypt15, iv),
            (_, Some(c14)) if !c14.iv.is_empty() => (Version::Crypt14, &c14.iv),
            _ => {
                return Err(Error::WhatsAppFormat(
                    "the backup prefix has no IV: not a crypt14/crypt15 backup".into(),
                ))
            }
        };
        let iv: [u8; IV_SIZE] = iv.as_slice().try_into().map_err(|_| {
            Error::WhatsAppFormat(format!(
                "the backup's IV is {} bytes; crypt14/crypt15 use {IV_SIZE}",
                iv.len()
            ))
        })?;
        Ok((version, iv))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(k) = self.key_type {
            put_uint(&mut out, 1, k);
        }
        if let Some(c) = &self.c14 {
            let mut m = Vec::new();
            for (n, v) in [
                (1, &c.cipher_version),
                (2, &c.key_version),
                (3, &c.server_salt),
                (4, &c.google_id),
                (5, &c.iv),
            ] {
                if !v.is_empty() {
                    put_bytes(&mut m, n, v);
                }
            }
            put_bytes(&mut out, 2, &m);
        }
        if let Some(iv) = &self.c15_iv {
            let mut m = Vec::new();
            put_bytes(&mut m, 1, iv);
            put_bytes(&mut out, 3, &m);
        }
        if let Some(info) = &self.info {
            put_bytes(&mut out, 4, &info.encode());
        }
        if let Some(k) = self.key_type_v2 {
            put_uint(&mut out, 6, k);
        }
        out
    }
}

// --- the frame --------------------------------------------------------------------------

/// A parsed header: the prefix and where the ciphertext starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub prefix: BackupPrefix,
    /// The prefix message as stored.
    pub prefix_raw: Vec<u8>,
    /// Bytes before the ciphertext (length, optional `0x01`, message).
    pub len: usize,
    /// Whether a `0x01` byte followed a one-byte length (wa-crypt-tools' "feature table" flag).
    pub flag_byte: bool,
}

/// The outcome of looking at the first bytes of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderParse {
    Complete(Box<Header>),
    /// More bytes are needed (at least this many in all); at the end of the file, it is truncated.
    NeedMore(usize),
}

/// Encodes the header: the message length as a varint, then the message. wa-crypt-tools writes
/// the same bytes for messages of 128 to 255 bytes, which is what real msgstore prefixes are.
pub fn encode_header(prefix: &BackupPrefix) -> Result<Vec<u8>> {
    let message = prefix.encode();
    if message.len() > MAX_PREFIX_LEN {
        return Err(Error::InvalidArgument(format!(
            "the backup prefix would be {} bytes; at most {MAX_PREFIX_LEN} are allowed",
            message.len()
        )));
    }
    let mut out = Vec::with_capacity(message.len() + 3);
    put_varint(&mut out, message.len() as u64);
    out.extend_from_slice(&message);
    Ok(out)
}

fn not_a_backup() -> Error {
    Error::WhatsAppFormat(
        "not a WhatsApp crypt15 (or crypt14) backup: its first bytes are not a backup prefix"
            .into(),
    )
}

/// One way of reading the length: `(message start, message length, flag byte)`.
type Framing = (usize, usize, bool);

fn framings(buf: &[u8]) -> std::result::Result<Vec<Framing>, Malformed> {
    let mut pos = 0;
    let len = read_varint(&buf[..buf.len().min(3)], &mut pos).map_err(|e| match e {
        // A longer varint would mean a prefix of 2 MiB or more.
        Malformed::Truncated if buf.len() >= 3 => Malformed::Invalid,
        e => e,
    })?;
    let len = usize::try_from(len).map_err(|_| Malformed::Invalid)?;
    if len == 0 || len > MAX_PREFIX_LEN {
        return Err(Malformed::Invalid);
    }
    let mut out = Vec::with_capacity(2);
    if pos == 1 {
        match buf.get(1) {
            None => return Err(Malformed::Truncated),
            Some(0x01) => out.push((2, len, true)),
            Some(_) => out.push((1, len, false)),
        }
    } else {
        out.push((pos, len, false));
        if buf[1] != 0x01 {
            // wa-crypt-tools' single length byte (128..255) with no flag byte after it.
            out.push((1, usize::from(buf[0]), false));
        }
    }
    Ok(out)
}

/// Parses the header at the start of `buf`. `NeedMore` asks for more bytes; an error means the
/// bytes cannot be the start of a crypt14/crypt15 file.
pub fn parse_header(buf: &[u8]) -> Result<HeaderParse> {
    if buf.len() < 2 {
        return Ok(HeaderParse::NeedMore(2));
    }
    let candidates = match framings(buf) {
        Ok(c) => c,
        Err(Malformed::Truncated) => return Ok(HeaderParse::NeedMore(buf.len() + 1)),
        Err(Malformed::Invalid) => return Err(not_a_backup()),
    };
    let mut need = None;
    let mut last_error = None;
    for (start, len, flag_byte) in candidates {
        let end = start + len;
        let Some(raw) = buf.get(start..end) else {
            // Only a plausible start is worth asking for more bytes.
            if plausible_start(&buf[start..]) {
                need = Some(need.map_or(end, |n: usize| n.min(end)));
            }
            continue;
        };
        match BackupPrefix::parse(raw) {
            Ok(prefix) => match prefix.cipher() {
                Ok(_) => {
                    return Ok(HeaderParse::Complete(Box::new(Header {
                        prefix,
                        prefix_raw: raw.to_vec(),
                        len: end,
                        flag_byte,
                    })))
                }
                Err(e) => last_error = Some(e),
            },
            Err(_) => continue,
        }
    }
    if let Some(n) = need {
        return Ok(HeaderParse::NeedMore(n));
    }
    Err(last_error.unwrap_or_else(not_a_backup))
}

/// Whether `partial` could be the start of a `BackupPrefix`: its first field is one of the known
/// ones and nothing before the cut is malformed.
fn plausible_start(partial: &[u8]) -> bool {
    let Some(&first) = partial.first() else {
        return true;
    };
    if ![0x08, 0x12, 0x1a, 0x22, 0x30].contains(&first) {
        return false;
    }
    let mut pos = 0;
    while pos < partial.len() {
        let Ok(key) = read_varint(partial, &mut pos) else {
            return true;
        };
        let skip = match key & 7 {
            0 => read_varint(partial, &mut pos).map(|_| 0),
            1 => Ok(8),
            2 => read_varint(partial, &mut pos),
            5 => Ok(4),
            _ => return false,
        };
        match skip {
            Ok(n) => pos = pos.saturating_add(usize::try_from(n).unwrap_or(usize::MAX)),
            Err(Malformed::Truncated) => return true,
            Err(Malformed::Invalid) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(info: Option<BackupInfo>) -> BackupPrefix {
        BackupPrefix::crypt15(&[7; 16], info)
    }

    #[test]
    fn round_trip_and_framings() {
        for info in [None, Some(BackupInfo::default_msgstore())] {
            let p = sample(info);
            let header = encode_header(&p).unwrap();
            let HeaderParse::Complete(h) = parse_header(&header).unwrap() else {
                panic!("incomplete")
            };
            assert_eq!(h.len, header.len());
            assert_eq!(h.prefix.cipher().unwrap(), (Version::Crypt15, [7; 16]));
            assert_eq!(
                h.prefix.info.as_ref().map(|i| i.features.len()),
                p.info.as_ref().map(|i| i.features.len())
            );
            // wa-crypt-tools' form: one length byte, then 0x01, then the message.
            let message = p.encode();
            let mut wct = vec![message.len() as u8, 1];
            wct.extend_from_slice(&message);
            let HeaderParse::Complete(h) = parse_header(&wct).unwrap() else {
                panic!("incomplete")
            };
            assert_eq!(h.len, wct.len());
            // Every cut is "need more", never an error.
            for cut in 0..header.len() {
                assert!(
                    matches!(parse_header(&header[..cut]), Ok(HeaderParse::NeedMore(_))),
                    "{cut}"
                );
            }
        }
    }

    #[test]
    fn msgstore_default_prefix_matches_wa_crypt_tools_size() {
        // 133 bytes: the length is written as 0x85 0x01, identical in both readings.
        let p = sample(Some(BackupInfo::default_msgstore()));
        let header = encode_header(&p).unwrap();
        assert_eq!(&header[..2], &[0x85, 0x01]);
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let mut message = sample(None).encode();
        put_uint(&mut message, 9, 5);
        put_bytes(&mut message, 17, b"future");
        message.extend_from_slice(&[0x3d, 1, 2, 3, 4]); // field 7, fixed32
        let mut buf = vec![message.len() as u8];
        buf.extend_from_slice(&message);
        let HeaderParse::Complete(h) = parse_header(&buf).unwrap() else {
            panic!()
        };
        assert_eq!(h.prefix.unknown_fields, vec![9, 17, 7]);
    }

    #[test]
    fn garbage_is_not_a_backup() {
        for junk in [
            &b"SQLite format 3\0"[..],
            b"\x00\x00\x00",
            b"\xff\xff\xff\xff",
            b"PK\x03\x04",
        ] {
            assert!(
                matches!(parse_header(junk), Err(Error::WhatsAppFormat(_))),
                "{junk:?}"
            );
        }
    }
}
