//! Reading a crypt15/crypt14 backup: two threads, bounded memory, fail closed.
//!
//! * this thread reads the file, feeds MD5 and GHASH, decrypts in place and hands the plaintext
//!   on; it always holds back the last 32 bytes, which are the tag and the MD5 of a single-file
//!   backup, or the last 16 ciphertext bytes and the tag of a multi-file one;
//! * the other inflates the zlib stream into the database (ZIP and unknown payloads pass
//!   through) and writes it to the caller's sink.
//!
//! At the end both readings of the trailer are checked in constant time, and the outcome is
//! `Ok` only if one of them authenticates. The inflater's view of the stream (complete, cut
//! short, or garbage from the start) only chooses the words of the error message: never whether
//! something is accepted.

use std::io::{Read, Write};
use std::thread;

use flate2::{Decompress, FlushDecompress, Status};
use md5::{Digest, Md5};

use super::gcm::{tags_equal, Opener, TAG_SIZE};
use super::pipe::{link, read_full, Link, LinkEnd, BLOCK};
use super::prefix::{parse_header, Header, HeaderParse, Version, MAX_HEADER_LEN};
use super::{BackupKey, CHECKSUM_SIZE};
use crate::error::{Error, Result};

/// Bytes always held back from decryption until the end of the file.
const TRAILER: usize = TAG_SIZE + CHECKSUM_SIZE;
/// The progress callback runs at most once per this many bytes read.
const PROGRESS_EVERY: u64 = 16 * BLOCK as u64;

/// Options of [`decrypt`].
#[derive(Debug, Clone, Copy)]
pub struct DecryptOptions {
    /// Inflate a zlib payload (the SQLite database). `false` writes the payload as stored.
    pub decompress: bool,
}

impl Default for DecryptOptions {
    fn default() -> Self {
        DecryptOptions { decompress: true }
    }
}

/// What the decrypted payload turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A zlib stream: a single-file backup (msgstore.db, wa.db, ...).
    Zlib,
    /// A ZIP archive: a multi-file backup (stickers, wallpapers), written as is.
    Zip,
    /// Something else, written as is.
    Raw,
}

/// Whether the file ends with an MD5 of everything before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `... tag || MD5`: single-file backups.
    SingleFile,
    /// `... tag`: multi-file backups (stickers, wallpapers).
    MultiFile,
}

/// The result of a successful [`decrypt`].
#[derive(Debug, Clone)]
pub struct DecryptReport {
    pub header: Header,
    pub version: Version,
    pub layout: Layout,
    pub payload: Payload,
    /// Bytes of the backup file.
    pub input_len: u64,
    /// Bytes written to the output.
    pub output_len: u64,
}

/// Reads the header from the start of `input` into `buf` (which then holds every byte read so
/// far, possibly more than the header). Reads `first_read` bytes at first.
pub fn read_header<R: Read + ?Sized>(
    input: &mut R,
    buf: &mut Vec<u8>,
    first_read: usize,
) -> Result<Header> {
    let mut want = first_read.max(2);
    loop {
        let have = buf.len();
        if have < want {
            buf.resize(want, 0);
            let n = read_full(input, &mut buf[have..])?;
            buf.truncate(have + n);
        }
        match parse_header(buf)? {
            HeaderParse::Complete(header) => return Ok(*header),
            HeaderParse::NeedMore(n) if buf.len() < want => {
                let _ = n;
                return Err(if buf.is_empty() {
                    Error::WhatsAppFormat("the file is empty: not a WhatsApp backup".into())
                } else {
                    Error::WhatsAppTruncated(format!(
                        "the backup is truncated: it ends inside its {}-byte header, after {} \
                         bytes",
                        n,
                        buf.len()
                    ))
                });
            }
            HeaderParse::NeedMore(n) => {
                if n > MAX_HEADER_LEN {
                    return Err(Error::WhatsAppFormat(
                        "not a WhatsApp backup: its header would be too long".into(),
                    ));
                }
                want = n.max(buf.len() + 1);
            }
        }
    }
}

/// How the inflater saw the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// Not inflated (ZIP, raw, or `decompress: false`).
    Passed,
    /// The zlib stream ended, with `trailing` bytes after it.
    Ended { trailing: u64 },
    /// The input ended before the zlib stream did.
    CutShort,
    /// Not a valid zlib stream; `at` bytes of it were fine.
    Invalid { at: u64 },
}

struct Inflated {
    payload: Payload,
    stream: Stream,
}

fn classify(head: &[u8]) -> Payload {
    match head {
        [b0, b1, ..]
            if b0 & 0x0f == 8
                && b0 >> 4 <= 7
                && b1 & 0x20 == 0
                && (u16::from(*b0) << 8 | u16::from(*b1)) % 31 == 0 =>
        {
            Payload::Zlib
        }
        [b'P', b'K', ..] => Payload::Zip,
        _ => Payload::Raw,
    }
}

/// The inflater thread: receives plaintext blocks, inflates them and writes the result. Writing
/// here rather than in a third thread keeps one hand-over per block: on a busy machine every
/// hand-over waits for a time slice, and the write itself is a cheap copy into the page cache.
/// On a write error it stops (dropping its end of the queue stops the reader) and reports it.
fn inflate_and_write<W: Write + ?Sized>(
    input: LinkEnd,
    output: &mut W,
    decompress: bool,
) -> (Inflated, Result<u64>) {
    let mut sink = Sink {
        z: Decompress::new(true),
        out: vec![0u8; OUT_BLOCK],
        output,
        stream: Stream::Passed,
        written: 0,
    };
    // The payload's kind is known from its first two bytes, which may span blocks.
    let mut head: Vec<u8> = Vec::new();
    let mut waiting: Vec<Vec<u8>> = Vec::new();
    let mut payload = None;
    let result = (|| {
        for block in input.rx.iter() {
            let Some(kind) = payload else {
                let need = 2 - head.len();
                head.extend_from_slice(&block[..block.len().min(need)]);
                waiting.push(block);
                if head.len() == 2 {
                    let kind = if decompress {
                        classify(&head)
                    } else {
                        Payload::Raw
                    };
                    payload = Some(kind);
                    for b in waiting.drain(..) {
                        sink.take(kind, &b)?;
                        input.recycle(b);
                    }
                }
                continue;
            };
            sink.take(kind, &block)?;
            input.recycle(block);
        }
        let kind = *payload.get_or_insert(Payload::Raw);
        for b in waiting.drain(..) {
            sink.take(kind, &b)?;
        }
        sink.output.flush()?;
        Ok(sink.written)
    })();
    let inflated = Inflated {
        payload: payload.unwrap_or(Payload::Raw),
        stream: sink.stream,
    };
    (inflated, result)
}

/// Output bytes inflated per write.
const OUT_BLOCK: usize = 2 * BLOCK;

struct Sink<'a, W: Write + ?Sized> {
    z: Decompress,
    out: Vec<u8>,
    output: &'a mut W,
    stream: Stream,
    written: u64,
}

impl<W: Write + ?Sized> Sink<'_, W> {
    fn take(&mut self, kind: Payload, block: &[u8]) -> Result<()> {
        if kind != Payload::Zlib {
            self.output.write_all(block)?;
            self.written += block.len() as u64;
            return Ok(());
        }
        if self.stream == Stream::Passed {
            self.stream = Stream::CutShort;
        }
        self.inflate_block(block)
    }

    /// Inflates one block, writing every full output buffer.
    fn inflate_block(&mut self, mut data: &[u8]) -> Result<()> {
        match &mut self.stream {
            Stream::Ended { trailing } => {
                *trailing += data.len() as u64;
                return Ok(());
            }
            Stream::Invalid { .. } => return Ok(()),
            _ => {}
        }
        let mut filled = 0;
        while !data.is_empty() {
            let before_in = self.z.total_in();
            let before_out = self.z.total_out();
            let result = self
                .z
                .decompress(data, &mut self.out[filled..], FlushDecompress::None);
            let used = (self.z.total_in() - before_in) as usize;
            filled += (self.z.total_out() - before_out) as usize;
            data = &data[used..];
            if filled == self.out.len() {
                self.output.write_all(&self.out)?;
                self.written += filled as u64;
                filled = 0;
            }
            match result {
                Ok(Status::StreamEnd) => {
                    self.stream = Stream::Ended {
                        trailing: data.len() as u64,
                    };
                    break;
                }
                Ok(_) if used == 0 && filled < self.out.len() && !data.is_empty() => {
                    // No progress with room to spare: cannot happen with a sane decoder.
                    self.stream = Stream::Invalid {
                        at: self.z.total_in(),
                    };
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    self.stream = Stream::Invalid {
                        at: self.z.total_in(),
                    };
                    break;
                }
            }
        }
        if filled > 0 {
            self.output.write_all(&self.out[..filled])?;
            self.written += filled as u64;
        }
        Ok(())
    }
}

/// What the trailer says.
enum Verdict {
    Authentic(Layout),
    /// The MD5 matches, the tag does not: an intact file and the wrong key.
    WrongKey,
    /// The ciphertext authenticates but the MD5 trailer does not match.
    BadChecksum,
    /// Neither reading authenticates and the MD5 does not match.
    Damaged,
    /// Fewer than 32 bytes after the header.
    TooShort(usize),
}

/// Decrypts a crypt15 (or crypt14) backup from `input` into `output`.
///
/// `output` receives unauthenticated data while this runs: it must be a temporary file that the
/// caller discards unless this returns `Ok` (the tag and the MD5 checked). `progress` is called
/// now and then with the bytes read so far; an error from it stops the work and is returned.
pub fn decrypt<R: Read + ?Sized, W: Write + Send + ?Sized>(
    key: &BackupKey,
    input: &mut R,
    output: &mut W,
    options: &DecryptOptions,
    progress: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<DecryptReport> {
    let mut first = Vec::with_capacity(BLOCK);
    let header = read_header(input, &mut first, BLOCK)?;
    let (version, iv) = header.prefix.cipher()?;
    let aes_key = key.cipher_key(version)?;
    let mut opener = Opener::new(&aes_key, &iv);
    drop(aes_key);
    let mut md5 = Md5::new();
    md5.update(&first[..header.len]);
    let carry_start = header.len;

    let (to_inflater, inflater_in) = link();
    let decompress = options.decompress;
    thread::scope(|s| {
        let inflater = s.spawn(move || inflate_and_write(inflater_in, output, decompress));

        let read = read_and_open(
            input,
            &first[carry_start..],
            header.len as u64,
            &mut md5,
            &mut opener,
            &to_inflater,
            progress,
        );
        let verdict = match &read {
            Ok((tail, _)) => Some(check_trailer(tail, &md5, &mut opener, &to_inflater)),
            Err(_) => None,
        };
        drop(to_inflater);
        let (inflated, written) = inflater.join().expect("the inflater thread does not panic");
        let (_, input_len) = read?;
        let output_len = written?;
        let layout = match verdict.expect("set when reading succeeded") {
            Verdict::Authentic(layout) => layout,
            other => return Err(explain(other, &inflated)),
        };
        check_payload(&inflated)?;
        Ok(DecryptReport {
            header: header.clone(),
            version,
            layout,
            payload: inflated.payload,
            input_len,
            output_len,
        })
    })
}

/// The reading loop. Returns the held-back last bytes (at most 32) and the file size.
fn read_and_open<R: Read + ?Sized>(
    input: &mut R,
    initial: &[u8],
    header_len: u64,
    md5: &mut Md5,
    opener: &mut Opener,
    to_inflater: &Link,
    progress: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<(Vec<u8>, u64)> {
    let mut carry = initial.to_vec();
    let mut total = header_len + carry.len() as u64;
    let mut reported = 0u64;
    let mut eof = false;
    loop {
        let mut buf = to_inflater.buffer(BLOCK + carry.len());
        buf.extend_from_slice(&carry);
        if !eof {
            let have = buf.len();
            buf.resize(have + BLOCK, 0);
            let n = read_full(input, &mut buf[have..])?;
            buf.truncate(have + n);
            total += n as u64;
            eof = n < BLOCK;
        }
        let keep = buf.len().min(TRAILER);
        let cut = buf.len() - keep;
        carry.clear();
        carry.extend_from_slice(&buf[cut..]);
        buf.truncate(cut);
        if !buf.is_empty() {
            md5.update(&buf);
            opener.open_in_place(&mut buf)?;
            if !to_inflater.send(buf) {
                // The inflater or the writer stopped; the caller reports why.
                return Ok((carry, total));
            }
        }
        if total - reported >= PROGRESS_EVERY || eof {
            progress(total)?;
            reported = total;
        }
        if eof {
            return Ok((carry, total));
        }
    }
}

/// Checks both readings of the trailer in constant time; hands the last 16 plaintext bytes of
/// a multi-file backup on.
fn check_trailer(tail: &[u8], md5: &Md5, opener: &mut Opener, to_inflater: &Link) -> Verdict {
    if tail.len() < TRAILER {
        // Only a multi-file backup (a tag, no checksum) ends in fewer bytes: a payload shorter
        // than a tag, all of it still held back here, nothing hashed yet.
        if tail.len() >= TAG_SIZE {
            let (a, b) = tail.split_at(tail.len() - TAG_SIZE);
            let mut multi = opener.ghash();
            multi.update(a);
            if tags_equal(&opener.tag_of(multi), b) {
                return open_last(a, opener, to_inflater);
            }
        }
        return Verdict::TooShort(tail.len());
    }
    let (a, b) = tail.split_at(TAG_SIZE);
    let mut checksum = md5.clone();
    checksum.update(a);
    let checksum_ok = tags_equal(&checksum.finalize(), b);
    let single_ok = tags_equal(&opener.tag_of(opener.ghash()), a);
    let mut multi = opener.ghash();
    multi.update(a);
    let multi_ok = tags_equal(&opener.tag_of(multi), b);
    match (checksum_ok, single_ok, multi_ok) {
        (true, true, _) => Verdict::Authentic(Layout::SingleFile),
        (_, _, true) => open_last(a, opener, to_inflater),
        (true, false, false) => Verdict::WrongKey,
        (false, true, false) => Verdict::BadChecksum,
        (false, false, false) => Verdict::Damaged,
    }
}

/// The last ciphertext bytes of an authentic multi-file backup, opened and handed on.
fn open_last(last: &[u8], opener: &mut Opener, to_inflater: &Link) -> Verdict {
    let mut last = last.to_vec();
    if opener.open_in_place(&mut last).is_err() {
        return Verdict::Damaged;
    }
    to_inflater.send(last);
    Verdict::Authentic(Layout::MultiFile)
}

fn explain(verdict: Verdict, inflated: &Inflated) -> Error {
    match verdict {
        Verdict::Authentic(_) => unreachable!("not an error"),
        Verdict::TooShort(n) => Error::WhatsAppTruncated(format!(
            "the backup is truncated: only {n} bytes follow its header, too few for the tag and \
             checksum"
        )),
        Verdict::WrongKey => Error::WhatsAppWrongKey(
            "decryption failed: wrong key. The backup itself is intact (its MD5 checksum \
             matches), but this key does not open it"
                .into(),
        ),
        Verdict::BadChecksum => Error::WhatsAppCorrupted(
            "the backup is corrupted: its MD5 checksum does not match (the encrypted data \
             authenticates; the last 16 bytes are damaged)"
                .into(),
        ),
        Verdict::Damaged => match (inflated.payload, inflated.stream) {
            (Payload::Zlib, Stream::CutShort) => Error::WhatsAppTruncated(
                "the backup is truncated: it ends in the middle of the compressed database, \
                 and its MD5 checksum does not match"
                    .into(),
            ),
            (Payload::Zlib, _) => Error::WhatsAppCorrupted(
                "the backup is corrupted: its MD5 checksum does not match and the data does not \
                 authenticate"
                    .into(),
            ),
            _ => Error::WhatsAppCorrupted(
                "the backup is corrupted (its MD5 checksum does not match and the data does not \
                 authenticate), or it is a multi-file backup and the key is wrong"
                    .into(),
            ),
        },
    }
}

/// An authentic payload that still cannot be used.
fn check_payload(inflated: &Inflated) -> Result<()> {
    match inflated.stream {
        Stream::Passed | Stream::Ended { trailing: 0 } => Ok(()),
        Stream::Ended { trailing } => Err(Error::WhatsAppFormat(format!(
            "the backup decrypted and authenticated, but {trailing} unexpected bytes follow the \
             compressed database"
        ))),
        Stream::CutShort => Err(Error::WhatsAppFormat(
            "the backup decrypted and authenticated, but its compressed database is incomplete"
                .into(),
        )),
        Stream::Invalid { at } => Err(Error::WhatsAppFormat(format!(
            "the backup decrypted and authenticated, but its payload is not a valid zlib stream \
             (bad data after {at} bytes)"
        ))),
    }
}
