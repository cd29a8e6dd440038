//! Writing a crypt15 backup: this thread reads and compresses; a second one encrypts, feeds the
//! MD5 and writes. Bounded memory, whatever the size of the database.

use std::io::{Read, Write};
use std::thread;

use flate2::{Compress, Compression, FlushCompress, Status};
use md5::{Digest, Md5};

use super::gcm::{Sealer, IV_SIZE};
use super::pipe::{link, read_full, Link, LinkEnd, BLOCK};
use super::prefix::{encode_header, BackupInfo, BackupPrefix};
use super::{BackupKey, Version};
use crate::error::{Error, Result};
use crate::rand;

/// Options of [`encrypt`].
#[derive(Debug, Clone)]
pub struct EncryptOptions {
    /// The prefix's `info` message (app version, phone-number suffix, feature flags).
    pub info: Option<BackupInfo>,
    /// A fixed IV. Only for tests: reusing an IV with the same key destroys GCM's security.
    pub iv: Option<[u8; IV_SIZE]>,
    /// zlib level, 0 to 9. zlib-rs's level 1 is its "quick" strategy (about 20% larger output
    /// here); level 2, the default, compresses a database like zlib's level 1 (which WhatsApp
    /// uses) and faster.
    pub level: u32,
    /// A multi-file backup (stickers, wallpapers): the input (a ZIP archive) is stored as is,
    /// and the file has no MD5 trailer.
    pub multi_file: bool,
}

impl Default for EncryptOptions {
    fn default() -> Self {
        EncryptOptions {
            info: Some(BackupInfo::default_msgstore()),
            iv: None,
            level: 2,
            multi_file: false,
        }
    }
}

/// The result of [`encrypt`].
#[derive(Debug, Clone)]
pub struct EncryptReport {
    pub prefix: BackupPrefix,
    /// Bytes read from the input.
    pub input_len: u64,
    /// Bytes of the backup written.
    pub output_len: u64,
}

/// Writes `input` as a crypt15 backup to `output`. `progress` is called now and then with the
/// input bytes read so far; an error from it stops the work and is returned.
pub fn encrypt<R: Read + ?Sized, W: Write + Send + ?Sized>(
    key: &BackupKey,
    input: &mut R,
    output: &mut W,
    options: &EncryptOptions,
    progress: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<EncryptReport> {
    if options.level > 9 {
        return Err(Error::InvalidArgument(format!(
            "the zlib level must be 0 to 9, got {}",
            options.level
        )));
    }
    let aes_key = key.cipher_key(Version::Crypt15)?;
    let iv = match options.iv {
        Some(iv) => iv,
        None => rand::array::<IV_SIZE>()?,
    };
    let prefix = BackupPrefix::crypt15(&iv, options.info.clone());
    let header = encode_header(&prefix)?;
    let sealer = Sealer::new(&aes_key, &iv);
    drop(aes_key);
    let checksum = !options.multi_file;

    let (to_sealer, sealer_in) = link();
    thread::scope(|s| {
        let sealing = s.spawn(move || seal_and_write(sealer, &header, sealer_in, output, checksum));
        let read = if options.multi_file {
            copy_blocks(input, &to_sealer, progress)
        } else {
            compress_blocks(input, &to_sealer, options.level, progress)
        };
        drop(to_sealer);
        let written = sealing.join().expect("the sealing thread does not panic");
        let input_len = read?;
        let output_len = written?;
        Ok(EncryptReport {
            prefix: prefix.clone(),
            input_len,
            output_len,
        })
    })
}

fn compress_blocks<R: Read + ?Sized>(
    input: &mut R,
    to_sealer: &Link,
    level: u32,
    progress: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<u64> {
    let mut z = Compress::new(Compression::new(level), true);
    let mut inbuf = vec![0u8; BLOCK];
    let mut out = to_sealer.buffer(BLOCK);
    let mut total = 0u64;
    loop {
        let n = read_full(input, &mut inbuf)?;
        total += n as u64;
        let eof = n < BLOCK;
        let flush = if eof {
            FlushCompress::Finish
        } else {
            FlushCompress::None
        };
        let mut data = &inbuf[..n];
        loop {
            if out.len() == out.capacity() {
                let full = std::mem::replace(&mut out, to_sealer.buffer(BLOCK));
                if !to_sealer.send(full) {
                    return Ok(total); // the sealing thread stopped and says why
                }
            }
            let before = z.total_in();
            let status = z
                .compress_vec(data, &mut out, flush)
                .map_err(|e| Error::InvalidArgument(format!("zlib compression failed: {e}")))?;
            data = &data[(z.total_in() - before) as usize..];
            if status == Status::StreamEnd || (!eof && data.is_empty()) {
                break;
            }
        }
        progress(total)?;
        if eof {
            break;
        }
    }
    if !out.is_empty() {
        to_sealer.send(out);
    }
    Ok(total)
}

fn copy_blocks<R: Read + ?Sized>(
    input: &mut R,
    to_sealer: &Link,
    progress: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<u64> {
    let mut total = 0u64;
    loop {
        let mut buf = to_sealer.buffer(BLOCK);
        buf.resize(BLOCK, 0);
        let n = read_full(input, &mut buf)?;
        buf.truncate(n);
        total += n as u64;
        if n > 0 && !to_sealer.send(buf) {
            return Ok(total);
        }
        progress(total)?;
        if n < BLOCK {
            return Ok(total);
        }
    }
}

fn seal_and_write<W: Write + ?Sized>(
    mut sealer: Sealer,
    header: &[u8],
    from: LinkEnd,
    output: &mut W,
    checksum: bool,
) -> Result<u64> {
    let mut md5 = Md5::new();
    md5.update(header);
    output.write_all(header)?;
    let mut written = header.len() as u64;
    for mut buf in from.rx.iter() {
        sealer.seal_in_place(&mut buf)?;
        md5.update(&buf);
        output.write_all(&buf)?;
        written += buf.len() as u64;
        from.recycle(buf);
    }
    let tag = sealer.tag();
    md5.update(tag);
    output.write_all(&tag)?;
    written += tag.len() as u64;
    if checksum {
        output.write_all(&md5.finalize())?;
        written += 16;
    }
    output.flush()?;
    Ok(written)
}
