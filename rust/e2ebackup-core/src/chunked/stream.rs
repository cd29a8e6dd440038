//! Streaming contexts with the `update`/`finalize` shape of `cryptography.cobblestone`.
//!
//! Both fail closed: after the first error every call fails with [`Error::StreamFailed`], and
//! after `finalize` with [`Error::AlreadyFinalized`]. Buffered plaintext and keys are wiped when
//! a context is dropped.

use zeroize::{Zeroize, Zeroizing};

use super::{
    Algorithm, MessageKeys, CHUNK_CT_SIZE, CHUNK_SIZE, HEADER_SIZE, MAX_CHUNKS, SALT_SIZE, TAG_SIZE,
};
use crate::error::{Error, Result};
use crate::rand;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Finalized,
    Failed,
}

impl State {
    fn check(self) -> Result<()> {
        match self {
            State::Open => Ok(()),
            State::Finalized => Err(Error::AlreadyFinalized),
            State::Failed => Err(Error::StreamFailed),
        }
    }
}

fn check_room(needed: usize, out: &[u8]) -> Result<()> {
    if out.len() < needed {
        Err(Error::BufferTooSmall {
            needed,
            got: out.len(),
        })
    } else {
        Ok(())
    }
}

/// What the two streaming contexts share: exact output sizes, then the work into a buffer.
pub trait Stream {
    /// Exactly how many bytes `update_into` with `len` more input bytes produces.
    fn update_len(&self, len: usize) -> usize;
    fn update_into(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize>;
    /// How many bytes `finalize_into` needs (exact for valid input).
    fn finalize_len(&self) -> usize;
    fn finalize_into(&mut self, out: &mut [u8]) -> Result<usize>;
}

/// Encrypts one message given in pieces. Whole chunks are sealed as soon as they are complete,
/// so at most one partial chunk of plaintext is ever buffered.
pub struct Encryptor {
    keys: MessageKeys,
    header: Option<[u8; HEADER_SIZE]>,
    pending: Zeroizing<Vec<u8>>,
    counter: u64,
    state: State,
    threads: usize,
}

impl Encryptor {
    pub fn new(key: &[u8], algorithm: Algorithm, context: &[u8], threads: usize) -> Result<Self> {
        let salt = rand::array::<SALT_SIZE>()?;
        Self::with_salt(key, algorithm, context, &salt, threads)
    }

    /// Only for test vectors: a reused salt reuses nonces.
    pub fn with_salt(
        key: &[u8],
        algorithm: Algorithm,
        context: &[u8],
        salt: &[u8; SALT_SIZE],
        threads: usize,
    ) -> Result<Self> {
        let keys = MessageKeys::derive(key, algorithm, salt, context)?;
        let mut header = [0u8; HEADER_SIZE];
        header[..SALT_SIZE].copy_from_slice(salt);
        header[SALT_SIZE..].copy_from_slice(keys.commitment());
        Ok(Encryptor {
            keys,
            header: Some(header),
            pending: Zeroizing::new(Vec::with_capacity(CHUNK_SIZE)),
            counter: 0,
            state: State::Open,
            threads,
        })
    }

    fn header_len(&self) -> usize {
        self.header.map_or(0, |_| HEADER_SIZE)
    }

    /// Exactly how many bytes `update` with `len` more plaintext bytes produces.
    pub fn update_len(&self, len: usize) -> usize {
        self.header_len() + (self.pending.len() + len) / CHUNK_SIZE * CHUNK_CT_SIZE
    }

    /// Exactly how many bytes `finalize` produces.
    pub fn finalize_len(&self) -> usize {
        self.header_len() + self.pending.len() + TAG_SIZE
    }

    pub fn update_into(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize> {
        self.state.check()?;
        let needed = self.update_len(data.len());
        check_room(needed, out)?;
        // One chunk must stay available for the final one.
        let new_chunks = ((self.pending.len() + data.len()) / CHUNK_SIZE) as u64;
        if self.counter + new_chunks >= MAX_CHUNKS {
            self.state = State::Failed;
            return Err(Error::MessageTooLong);
        }
        let result = self.update_unchecked(data, &mut out[..needed]);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn update_unchecked(&mut self, mut data: &[u8], out: &mut [u8]) -> Result<usize> {
        let mut written = 0;
        if let Some(header) = self.header.take() {
            out[..HEADER_SIZE].copy_from_slice(&header);
            written = HEADER_SIZE;
        }
        if !self.pending.is_empty() {
            let take = (CHUNK_SIZE - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == CHUNK_SIZE {
                let end = written + CHUNK_CT_SIZE;
                self.keys.seal_chunks(
                    self.counter,
                    &self.pending,
                    false,
                    &mut out[written..end],
                    1,
                )?;
                self.counter += 1;
                self.pending.clear();
                written = end;
            }
        }
        let whole = data.len() / CHUNK_SIZE;
        let end = written + whole * CHUNK_CT_SIZE;
        self.keys.seal_chunks(
            self.counter,
            &data[..whole * CHUNK_SIZE],
            false,
            &mut out[written..end],
            self.threads,
        )?;
        self.counter += whole as u64;
        self.pending.extend_from_slice(&data[whole * CHUNK_SIZE..]);
        Ok(end)
    }

    pub fn finalize_into(&mut self, out: &mut [u8]) -> Result<usize> {
        self.state.check()?;
        let needed = self.finalize_len();
        check_room(needed, out)?;
        let mut written = 0;
        if let Some(header) = self.header.take() {
            out[..HEADER_SIZE].copy_from_slice(&header);
            written = HEADER_SIZE;
        }
        let result = self.keys.seal_chunks(
            self.counter,
            &self.pending,
            true,
            &mut out[written..needed],
            1,
        );
        self.pending.zeroize();
        self.state = if result.is_ok() {
            State::Finalized
        } else {
            State::Failed
        };
        result.map(|()| needed)
    }
}

/// Decrypts one message given in pieces. A chunk is opened only once a byte after it has
/// arrived (only then is it known not to be the last), so at most one chunk of ciphertext is
/// buffered; the last chunk is opened by `finalize`.
pub struct Decryptor {
    key: Zeroizing<Vec<u8>>,
    algorithm: Algorithm,
    context: Vec<u8>,
    keys: Option<MessageKeys>,
    header: Vec<u8>,
    pending: Vec<u8>,
    counter: u64,
    state: State,
    threads: usize,
}

impl Decryptor {
    pub fn new(key: &[u8], algorithm: Algorithm, context: &[u8], threads: usize) -> Result<Self> {
        if key.len() != super::KEY_SIZE {
            return Err(Error::InvalidKeyLength {
                expected: super::KEY_SIZE,
                got: key.len(),
            });
        }
        Ok(Decryptor {
            key: Zeroizing::new(key.to_vec()),
            algorithm,
            context: context.to_vec(),
            keys: None,
            header: Vec::with_capacity(HEADER_SIZE),
            pending: Vec::with_capacity(CHUNK_CT_SIZE),
            counter: 0,
            state: State::Open,
            threads,
        })
    }

    /// Exactly how many bytes `update` with `len` more ciphertext bytes produces.
    pub fn update_len(&self, len: usize) -> usize {
        let header_missing = HEADER_SIZE - self.header.len();
        let buffered = self.pending.len() + len.saturating_sub(header_missing);
        // Every whole chunk that has at least one byte after it.
        buffered.saturating_sub(1) / CHUNK_CT_SIZE * CHUNK_SIZE
    }

    /// An upper bound on what `finalize` produces.
    pub fn finalize_len(&self) -> usize {
        self.pending.len().saturating_sub(TAG_SIZE)
    }

    pub fn update_into(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize> {
        self.state.check()?;
        let needed = self.update_len(data.len());
        check_room(needed, out)?;
        let out = &mut out[..needed];
        let result = self.update_unchecked(data, out);
        if result.is_err() {
            out.zeroize();
            self.state = State::Failed;
        }
        result
    }

    fn update_unchecked(&mut self, mut data: &[u8], out: &mut [u8]) -> Result<usize> {
        if self.keys.is_none() {
            let take = (HEADER_SIZE - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() < HEADER_SIZE {
                return Ok(0);
            }
            let keys =
                MessageKeys::from_header(&self.key, self.algorithm, &self.header, &self.context)?;
            self.keys = Some(keys);
            self.key.zeroize();
        }
        let keys = self.keys.as_ref().ok_or(Error::StreamFailed)?;
        let mut written = 0;
        if !self.pending.is_empty() {
            let take = (CHUNK_CT_SIZE - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if data.is_empty() {
                return Ok(0);
            }
            // A byte follows, so the buffered whole chunk is not the last one.
            keys.open_chunks(
                self.counter,
                &self.pending,
                false,
                &mut out[..CHUNK_SIZE],
                1,
            )?;
            self.counter += 1;
            self.pending.clear();
            written = CHUNK_SIZE;
        }
        let whole = data.len().saturating_sub(1) / CHUNK_CT_SIZE;
        let ct_end = whole * CHUNK_CT_SIZE;
        written += keys.open_chunks(
            self.counter,
            &data[..ct_end],
            false,
            &mut out[written..],
            self.threads,
        )?;
        self.counter += whole as u64;
        self.pending.extend_from_slice(&data[ct_end..]);
        Ok(written)
    }

    pub fn finalize_into(&mut self, out: &mut [u8]) -> Result<usize> {
        self.state.check()?;
        check_room(self.finalize_len(), out)?;
        let result = match &self.keys {
            // The stream ended inside the header.
            None => Err(Error::InvalidTag),
            Some(keys) => keys.open_chunks(self.counter, &self.pending, true, out, 1),
        };
        self.pending.clear();
        self.state = if result.is_ok() {
            State::Finalized
        } else {
            State::Failed
        };
        result
    }
}

macro_rules! impl_stream {
    ($ty:ty) => {
        impl Stream for $ty {
            fn update_len(&self, len: usize) -> usize {
                <$ty>::update_len(self, len)
            }
            fn update_into(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize> {
                <$ty>::update_into(self, data, out)
            }
            fn finalize_len(&self) -> usize {
                <$ty>::finalize_len(self)
            }
            fn finalize_into(&mut self, out: &mut [u8]) -> Result<usize> {
                <$ty>::finalize_into(self, out)
            }
        }
    };
}

impl_stream!(Encryptor);
impl_stream!(Decryptor);
