//! Python API of C2SP chunked encryption: one-shot functions, streaming contexts and the chunk
//! opener behind the seekable reader.

use e2ebackup_core::chunked::{
    self, Algorithm, Decryptor as CoreDecryptor, Encryptor as CoreEncryptor, MessageKeys, Stream,
    HEADER_SIZE, KEY_SIZE, SALT_SIZE,
};
use e2ebackup_core::parallel::resolve_threads;
use e2ebackup_core::{rand, Error};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buffers::{maybe_detach, new_bytes, ReadBuf, WriteBuf};
use crate::errors::{too_large, BindingResult};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(generate_key, m)?)?;
    m.add_function(wrap_pyfunction!(encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(decrypt, m)?)?;
    m.add_function(wrap_pyfunction!(encrypt_into, m)?)?;
    m.add_function(wrap_pyfunction!(decrypt_into, m)?)?;
    m.add_function(wrap_pyfunction!(ciphertext_length, m)?)?;
    m.add_function(wrap_pyfunction!(plaintext_length, m)?)?;
    m.add_function(wrap_pyfunction!(_encrypt_with_salt, m)?)?;
    m.add_class::<Encryptor>()?;
    m.add_class::<Decryptor>()?;
    m.add_class::<ChunkOpener>()?;
    Ok(())
}

/// Arguments shared by every entry point, checked once.
struct Params {
    key: ReadBuf,
    context: Option<ReadBuf>,
    algorithm: Algorithm,
    threads: usize,
}

impl Params {
    fn new(
        key: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        algorithm: &str,
        threads: Option<i64>,
    ) -> BindingResult<Self> {
        let key = ReadBuf::get(key, "key")?;
        if key.len() != KEY_SIZE {
            return Err(Error::InvalidKeyLength {
                expected: KEY_SIZE,
                got: key.len(),
            }
            .into());
        }
        let context = context.map(|c| ReadBuf::get(c, "context")).transpose()?;
        Ok(Params {
            key,
            context,
            algorithm: Algorithm::from_api_name(algorithm)?,
            threads: resolve_threads(threads.map(|t| usize::try_from(t).unwrap_or(0)))?,
        })
    }

    fn context(&self) -> &[u8] {
        self.context.as_ref().map_or(&[], ReadBuf::as_slice)
    }
}

/// Python ints can be negative; lengths and counts cannot.
fn non_negative(n: i64, what: &str) -> BindingResult<u64> {
    u64::try_from(n)
        .map_err(|_| Error::InvalidArgument(format!("{what} must not be negative, got {n}")).into())
}

fn to_usize(n: u64, what: &str) -> PyResult<usize> {
    usize::try_from(n).map_err(|_| too_large(what))
}

/// A new random 32-byte key from the operating system's CSPRNG.
#[pyfunction]
fn generate_key(py: Python<'_>) -> BindingResult<Bound<'_, PyBytes>> {
    let key = zeroize::Zeroizing::new(rand::array::<KEY_SIZE>()?);
    Ok(PyBytes::new(py, key.as_ref()))
}

/// Encrypts `data` into one C2SP chunked-encryption message and returns it.
///
/// The result is `ciphertext_length(len(data))` bytes: a random salt and commitment header,
/// then 16 KiB chunks, each with its own tag. Byte-compatible with
/// `cryptography`'s `Cobblestone256Encryptor`.
///
/// `key` is 32 bytes (`generate_key()`). `context` binds the message to where it belongs (a
/// file name, a record id): decryption needs the same context. `algorithm` is `"aes-256-gcm"`
/// (Cobblestone-256) or `"chacha20-poly1305"`. `threads` caps the worker threads (default: all
/// cores); `data` may be any C-contiguous buffer (bytes, bytearray, memoryview, NumPy, mmap),
/// used in place, and for more than 2 KiB the GIL is released while the work runs.
#[pyfunction]
#[pyo3(signature = (key, data, *, context=None, algorithm="aes-256-gcm", threads=None))]
fn encrypt<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    context: Option<&Bound<'py, PyAny>>,
    algorithm: &str,
    threads: Option<i64>,
) -> BindingResult<Bound<'py, PyBytes>> {
    let p = Params::new(key, context, algorithm, threads)?;
    let data = ReadBuf::get(data, "data")?;
    let len = to_usize(chunked::ciphertext_len(data.len() as u64)?, "ciphertext")?;
    new_bytes(py, len, |out| {
        chunked::encrypt_into(
            p.key.as_slice(),
            p.algorithm,
            p.context(),
            data.as_slice(),
            out,
            p.threads,
        )
    })
}

/// Decrypts and authenticates one whole message made by `encrypt` (or by Cobblestone).
///
/// Returns the plaintext only if every chunk, their order and the end of the message are
/// authentic; otherwise raises `e2ebackup.errors.InvalidTag`, whether the key or context is
/// wrong or the ciphertext was truncated, extended, reordered or modified.
///
/// `key` is 32 bytes (`generate_key()`). `context` binds the message to where it belongs (a
/// file name, a record id): decryption needs the same context. `algorithm` is `"aes-256-gcm"`
/// (Cobblestone-256) or `"chacha20-poly1305"`. `threads` caps the worker threads (default: all
/// cores); `data` may be any C-contiguous buffer (bytes, bytearray, memoryview, NumPy, mmap),
/// used in place, and for more than 2 KiB the GIL is released while the work runs.
#[pyfunction]
#[pyo3(signature = (key, data, *, context=None, algorithm="aes-256-gcm", threads=None))]
fn decrypt<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    context: Option<&Bound<'py, PyAny>>,
    algorithm: &str,
    threads: Option<i64>,
) -> BindingResult<Bound<'py, PyBytes>> {
    let p = Params::new(key, context, algorithm, threads)?;
    let data = ReadBuf::get(data, "data")?;
    let len = to_usize(chunked::plaintext_len(data.len() as u64)?, "plaintext")?;
    new_bytes(py, len, |out| {
        chunked::decrypt_into(
            p.key.as_slice(),
            p.algorithm,
            p.context(),
            data.as_slice(),
            out,
            p.threads,
        )
    })
}

/// Encrypts `data` into the writable buffer `out` and returns the bytes written.
///
/// As `encrypt`, without allocating: `out` (a `bytearray`, `memoryview`, `mmap` or NumPy
/// array) must hold at least `ciphertext_length(len(data))` bytes and must not overlap `data`,
/// else `InvalidArgument`.
///
/// `key` is 32 bytes (`generate_key()`). `context` binds the message to where it belongs (a
/// file name, a record id): decryption needs the same context. `algorithm` is `"aes-256-gcm"`
/// (Cobblestone-256) or `"chacha20-poly1305"`. `threads` caps the worker threads (default: all
/// cores); `data` may be any C-contiguous buffer (bytes, bytearray, memoryview, NumPy, mmap),
/// used in place, and for more than 2 KiB the GIL is released while the work runs.
#[pyfunction]
#[pyo3(signature = (key, data, out, *, context=None, algorithm="aes-256-gcm", threads=None))]
fn encrypt_into(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    context: Option<&Bound<'_, PyAny>>,
    algorithm: &str,
    threads: Option<i64>,
) -> BindingResult<usize> {
    let p = Params::new(key, context, algorithm, threads)?;
    let data = ReadBuf::get(data, "data")?;
    let mut out = WriteBuf::get(out, "out")?;
    out.check_disjoint(&data)?;
    let work = data.len();
    Ok(maybe_detach(py, work, || {
        chunked::encrypt_into(
            p.key.as_slice(),
            p.algorithm,
            p.context(),
            data.as_slice(),
            out.as_mut_slice(),
            p.threads,
        )
    })?)
}

/// Decrypts the message `data` into the writable buffer `out` and returns the bytes written.
///
/// As `decrypt`, without allocating: `out` must hold at least `plaintext_length(len(data))`
/// bytes and must not overlap `data`. On `InvalidTag` the bytes written to `out` are wiped
/// first, so no unauthenticated plaintext is left behind.
///
/// `key` is 32 bytes (`generate_key()`). `context` binds the message to where it belongs (a
/// file name, a record id): decryption needs the same context. `algorithm` is `"aes-256-gcm"`
/// (Cobblestone-256) or `"chacha20-poly1305"`. `threads` caps the worker threads (default: all
/// cores); `data` may be any C-contiguous buffer (bytes, bytearray, memoryview, NumPy, mmap),
/// used in place, and for more than 2 KiB the GIL is released while the work runs.
#[pyfunction]
#[pyo3(signature = (key, data, out, *, context=None, algorithm="aes-256-gcm", threads=None))]
fn decrypt_into(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    context: Option<&Bound<'_, PyAny>>,
    algorithm: &str,
    threads: Option<i64>,
) -> BindingResult<usize> {
    let p = Params::new(key, context, algorithm, threads)?;
    let data = ReadBuf::get(data, "data")?;
    let mut out = WriteBuf::get(out, "out")?;
    out.check_disjoint(&data)?;
    let work = data.len();
    Ok(maybe_detach(py, work, || {
        chunked::decrypt_into(
            p.key.as_slice(),
            p.algorithm,
            p.context(),
            data.as_slice(),
            out.as_mut_slice(),
            p.threads,
        )
    })?)
}

/// Ciphertext length of a message with `plaintext_length` bytes.
#[pyfunction]
fn ciphertext_length(plaintext_length: i64) -> BindingResult<u64> {
    Ok(chunked::ciphertext_len(non_negative(
        plaintext_length,
        "plaintext_length",
    )?)?)
}

/// Plaintext length of a message with `ciphertext_length` bytes; `InvalidTag` if no valid
/// message has that length.
#[pyfunction]
fn plaintext_length(ciphertext_length: i64) -> BindingResult<u64> {
    Ok(chunked::plaintext_len(non_negative(
        ciphertext_length,
        "ciphertext_length",
    )?)?)
}

fn salt_array(salt: &Bound<'_, PyAny>) -> BindingResult<[u8; SALT_SIZE]> {
    let salt = ReadBuf::get(salt, "salt")?;
    salt.as_slice().try_into().map_err(|_| {
        Error::InvalidArgument(format!(
            "salt must be {SALT_SIZE} bytes, got {}",
            salt.len()
        ))
        .into()
    })
}

/// Test-vector hook: encryption with a fixed salt. Never use it for real data: a repeated salt
/// under the same key and context repeats nonces.
#[pyfunction]
#[pyo3(signature = (key, data, salt, *, context=None, algorithm="aes-256-gcm", threads=None))]
fn _encrypt_with_salt<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    salt: &Bound<'py, PyAny>,
    context: Option<&Bound<'py, PyAny>>,
    algorithm: &str,
    threads: Option<i64>,
) -> BindingResult<Bound<'py, PyBytes>> {
    let p = Params::new(key, context, algorithm, threads)?;
    let salt = salt_array(salt)?;
    let data = ReadBuf::get(data, "data")?;
    let len = to_usize(chunked::ciphertext_len(data.len() as u64)?, "ciphertext")?;
    new_bytes(py, len, |out| {
        chunked::encrypt_into_with_salt(
            p.key.as_slice(),
            p.algorithm,
            p.context(),
            &salt,
            data.as_slice(),
            out,
            p.threads,
        )
    })
}

// The four stream methods, shared by Encryptor and Decryptor.

fn stream_update<'py, S: Stream + Send>(
    inner: &mut S,
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> BindingResult<Bound<'py, PyBytes>> {
    let data = ReadBuf::get(data, "data")?;
    let len = inner.update_len(data.len());
    new_bytes(py, len, |out| inner.update_into(data.as_slice(), out))
}

fn stream_update_into<S: Stream + Send>(
    inner: &mut S,
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    buf: &Bound<'_, PyAny>,
) -> BindingResult<usize> {
    let data = ReadBuf::get(data, "data")?;
    let mut buf = WriteBuf::get(buf, "buf")?;
    buf.check_disjoint(&data)?;
    Ok(maybe_detach(py, data.len(), || {
        inner.update_into(data.as_slice(), buf.as_mut_slice())
    })?)
}

fn stream_update_length<S: Stream>(inner: &S, length: i64) -> BindingResult<usize> {
    let length = non_negative(length, "length")?;
    Ok(inner.update_len(usize::try_from(length).map_err(|_| too_large("length"))?))
}

fn stream_finalize<'py, S: Stream + Send>(
    inner: &mut S,
    py: Python<'py>,
) -> BindingResult<Bound<'py, PyBytes>> {
    let len = inner.finalize_len();
    new_bytes(py, len, |out| inner.finalize_into(out))
}

/// Streaming encryption of one message; a drop-in for `Cobblestone256Encryptor`.
#[pyclass(module = "e2ebackup._core")]
pub struct Encryptor {
    inner: CoreEncryptor,
}

#[pymethods]
impl Encryptor {
    #[new]
    #[pyo3(signature = (key, context=None, *, algorithm="aes-256-gcm", threads=None))]
    fn new(
        key: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        algorithm: &str,
        threads: Option<i64>,
    ) -> BindingResult<Self> {
        let p = Params::new(key, context, algorithm, threads)?;
        let inner = CoreEncryptor::new(p.key.as_slice(), p.algorithm, p.context(), p.threads)?;
        Ok(Encryptor { inner })
    }

    /// Test-vector hook, as `_encrypt_with_salt`.
    #[staticmethod]
    #[pyo3(signature = (key, salt, context=None, *, algorithm="aes-256-gcm"))]
    fn _with_salt(
        key: &Bound<'_, PyAny>,
        salt: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        algorithm: &str,
    ) -> BindingResult<Self> {
        let p = Params::new(key, context, algorithm, Some(1))?;
        let salt = salt_array(salt)?;
        let inner = CoreEncryptor::with_salt(p.key.as_slice(), p.algorithm, p.context(), &salt, 1)?;
        Ok(Encryptor { inner })
    }

    /// A new random 32-byte key, as `e2ebackup.generate_key()`.
    #[staticmethod]
    fn generate_key(py: Python<'_>) -> BindingResult<Bound<'_, PyBytes>> {
        generate_key(py)
    }

    /// Encrypts the next piece of the message and returns the ciphertext ready so far.
    ///
    /// Whole chunks are returned as soon as they are complete; the rest stays buffered until
    /// more data or `finalize()`. The result may be empty.
    fn update<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> BindingResult<Bound<'py, PyBytes>> {
        stream_update(&mut self.inner, py, data)
    }

    /// As `update`, writing into the writable buffer `buf` (at least `update_length(len(data))`
    /// bytes, not overlapping `data`); returns the number of bytes written.
    fn update_into(
        &mut self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        buf: &Bound<'_, PyAny>,
    ) -> BindingResult<usize> {
        stream_update_into(&mut self.inner, py, data, buf)
    }

    /// Bytes that `update` with `length` more bytes returns (what `update_into` needs).
    fn update_length(&self, length: i64) -> BindingResult<usize> {
        stream_update_length(&self.inner, length)
    }

    /// Ends the message: encrypts the buffered rest as the final chunk and returns it.
    ///
    /// The message is complete only with these bytes. Any later call raises `AlreadyFinalized`.
    fn finalize<'py>(&mut self, py: Python<'py>) -> BindingResult<Bound<'py, PyBytes>> {
        stream_finalize(&mut self.inner, py)
    }
}

/// Streaming decryption of one message; a drop-in for `Cobblestone256Decryptor`.
#[pyclass(module = "e2ebackup._core")]
pub struct Decryptor {
    inner: CoreDecryptor,
}

#[pymethods]
impl Decryptor {
    #[new]
    #[pyo3(signature = (key, context=None, *, algorithm="aes-256-gcm", threads=None))]
    fn new(
        key: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        algorithm: &str,
        threads: Option<i64>,
    ) -> BindingResult<Self> {
        let p = Params::new(key, context, algorithm, threads)?;
        let inner = CoreDecryptor::new(p.key.as_slice(), p.algorithm, p.context(), p.threads)?;
        Ok(Decryptor { inner })
    }

    /// Decrypts the next piece of ciphertext and returns the plaintext of the chunks
    /// authenticated so far.
    ///
    /// A chunk is opened and released only once a byte after it has arrived (only then is it
    /// known not to be the last) and its tag checks out; the last chunk is opened by
    /// `finalize()`, which proves the message was not truncated. A bad chunk raises
    /// `InvalidTag` and the decryptor stays failed (`StreamFailed` afterwards).
    fn update<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> BindingResult<Bound<'py, PyBytes>> {
        stream_update(&mut self.inner, py, data)
    }

    /// As `update`, writing into the writable buffer `buf` (at least `update_length(len(data))`
    /// bytes, not overlapping `data`); returns the number of bytes written.
    fn update_into(
        &mut self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        buf: &Bound<'_, PyAny>,
    ) -> BindingResult<usize> {
        stream_update_into(&mut self.inner, py, data, buf)
    }

    /// Bytes that `update` with `length` more bytes returns (what `update_into` needs).
    fn update_length(&self, length: i64) -> BindingResult<usize> {
        stream_update_length(&self.inner, length)
    }

    /// Ends the message: authenticates the final chunk and returns its plaintext.
    ///
    /// Raises `InvalidTag` if the message is truncated or its end was modified; only after this
    /// returns is the plaintext from `update` known to be the complete message. Any later call
    /// raises `AlreadyFinalized`.
    fn finalize<'py>(&mut self, py: Python<'py>) -> BindingResult<Bound<'py, PyBytes>> {
        stream_finalize(&mut self.inner, py)
    }
}

/// Opens runs of chunks of one message in any order: the engine of the seekable reader. Built
/// from the message's header, whose commitment it checks first.
#[pyclass(module = "e2ebackup._core", frozen)]
pub struct ChunkOpener {
    keys: MessageKeys,
    threads: usize,
}

#[pymethods]
impl ChunkOpener {
    #[new]
    #[pyo3(signature = (key, header, context=None, *, algorithm="aes-256-gcm", threads=None))]
    fn new(
        key: &Bound<'_, PyAny>,
        header: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        algorithm: &str,
        threads: Option<i64>,
    ) -> BindingResult<Self> {
        let p = Params::new(key, context, algorithm, threads)?;
        let header = ReadBuf::get(header, "header")?;
        if header.len() != HEADER_SIZE {
            return Err(Error::InvalidTag.into());
        }
        let keys = MessageKeys::from_header(
            p.key.as_slice(),
            p.algorithm,
            header.as_slice(),
            p.context(),
        )?;
        Ok(ChunkOpener {
            keys,
            threads: p.threads,
        })
    }

    /// Decrypts the consecutive chunks in `ciphertext`, the first of which is chunk number
    /// `first`; `last` says the run ends with the message's final chunk.
    fn open<'py>(
        &self,
        py: Python<'py>,
        first: i64,
        ciphertext: &Bound<'py, PyAny>,
        last: bool,
    ) -> BindingResult<Bound<'py, PyBytes>> {
        let ct = ReadBuf::get(ciphertext, "ciphertext")?;
        let len = chunked::run_plaintext_len(ct.len(), last)?;
        let first = non_negative(first, "first")?;
        new_bytes(py, len, |out| {
            self.keys
                .open_chunks(first, ct.as_slice(), last, out, self.threads)
        })
    }
}
