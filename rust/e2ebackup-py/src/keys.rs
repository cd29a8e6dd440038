//! Python API of the key layer: password KDFs, HKDF and key wrapping. The KDFs run without the
//! GIL, so derivations in several Python threads run at once.

use e2ebackup_core::kdf::{self, Argon2Params, ScryptParams};
use e2ebackup_core::keyslot;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use zeroize::Zeroizing;

use crate::buffers::ReadBuf;
use crate::errors::BindingResult;
use e2ebackup_core::Error;

/// A KDF parameter from Python: out-of-range values are the limit error, not an overflow.
fn param<T: TryFrom<i64>>(value: i64, name: &str) -> BindingResult<T> {
    T::try_from(value)
        .map_err(|_| Error::KdfLimit(format!("{name} is out of range: {value}")).into())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(argon2id, m)?)?;
    m.add_function(wrap_pyfunction!(scrypt, m)?)?;
    m.add_function(wrap_pyfunction!(hkdf_sha256, m)?)?;
    m.add_function(wrap_pyfunction!(wrap_key, m)?)?;
    m.add_function(wrap_pyfunction!(unwrap_key, m)?)?;
    m.add("WRAPPED_KEY_SIZE", keyslot::WRAPPED_SIZE)?;
    Ok(())
}

fn derive<'py, F>(py: Python<'py>, length: i64, f: F) -> BindingResult<Bound<'py, PyBytes>>
where
    F: FnOnce(&mut [u8]) -> e2ebackup_core::Result<()> + Send,
{
    let length = usize::try_from(length)
        .ok()
        .filter(|&n| n <= 8160)
        .ok_or_else(|| Error::InvalidArgument(format!("length must be 0 to 8160, got {length}")))?;
    let mut out = Zeroizing::new(vec![0u8; length]);
    py.detach(|| f(out.as_mut_slice()))?;
    Ok(PyBytes::new(py, &out))
}

/// Argon2id (RFC 9106). Defaults are RFC 9106's second recommendation: 64 MiB, t=3, p=4.
#[pyfunction]
// One argument per Python keyword: a parameter struct would not be a Python API.
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (password, salt, *, memory_kib=65536, iterations=3, parallelism=4, length=32, secret=None, associated_data=None))]
fn argon2id<'py>(
    py: Python<'py>,
    password: &Bound<'py, PyAny>,
    salt: &Bound<'py, PyAny>,
    memory_kib: i64,
    iterations: i64,
    parallelism: i64,
    length: i64,
    secret: Option<&Bound<'py, PyAny>>,
    associated_data: Option<&Bound<'py, PyAny>>,
) -> BindingResult<Bound<'py, PyBytes>> {
    let password = ReadBuf::get(password, "password")?;
    let salt = ReadBuf::get(salt, "salt")?;
    let secret = secret.map(|b| ReadBuf::get(b, "secret")).transpose()?;
    let ad = associated_data
        .map(|b| ReadBuf::get(b, "associated_data"))
        .transpose()?;
    let params = Argon2Params {
        memory_kib: param(memory_kib, "memory_kib")?,
        iterations: param(iterations, "iterations")?,
        parallelism: param(parallelism, "parallelism")?,
    };
    derive(py, length, |out| {
        let secret = secret.as_ref().map_or(&[][..], ReadBuf::as_slice);
        let ad = ad.as_ref().map_or(&[][..], ReadBuf::as_slice);
        kdf::argon2id(
            password.as_slice(),
            salt.as_slice(),
            params,
            secret,
            ad,
            out,
        )
    })
}

/// scrypt (RFC 7914) with N = 2**log2_n.
#[pyfunction]
#[pyo3(signature = (password, salt, *, log2_n=17, r=8, p=1, length=32))]
fn scrypt<'py>(
    py: Python<'py>,
    password: &Bound<'py, PyAny>,
    salt: &Bound<'py, PyAny>,
    log2_n: i64,
    r: i64,
    p: i64,
    length: i64,
) -> BindingResult<Bound<'py, PyBytes>> {
    let password = ReadBuf::get(password, "password")?;
    let salt = ReadBuf::get(salt, "salt")?;
    let params = ScryptParams {
        log2_n: param(log2_n, "log2_n")?,
        r: param(r, "r")?,
        p: param(p, "p")?,
    };
    derive(py, length, |out| {
        kdf::scrypt(password.as_slice(), salt.as_slice(), params, out)
    })
}

/// HKDF-SHA-256 (RFC 5869), extract and expand.
#[pyfunction]
#[pyo3(signature = (ikm, *, info, salt=None, length=32))]
fn hkdf_sha256<'py>(
    py: Python<'py>,
    ikm: &Bound<'py, PyAny>,
    info: &Bound<'py, PyAny>,
    salt: Option<&Bound<'py, PyAny>>,
    length: i64,
) -> BindingResult<Bound<'py, PyBytes>> {
    let ikm = ReadBuf::get(ikm, "ikm")?;
    let info = ReadBuf::get(info, "info")?;
    let salt = salt.map(|s| ReadBuf::get(s, "salt")).transpose()?;
    let salt = salt.as_ref().map_or(&[][..], ReadBuf::as_slice);
    derive(py, length, |out| {
        kdf::hkdf_sha256(ikm.as_slice(), salt, info.as_slice(), out)
    })
}

/// Seals a 32-byte data key under a 32-byte key-encryption key, bound to `context`.
#[pyfunction]
fn wrap_key<'py>(
    py: Python<'py>,
    kek: &Bound<'py, PyAny>,
    data_key: &Bound<'py, PyAny>,
    context: &Bound<'py, PyAny>,
) -> BindingResult<Bound<'py, PyBytes>> {
    let kek = ReadBuf::get(kek, "kek")?;
    let data_key = ReadBuf::get(data_key, "data_key")?;
    let context = ReadBuf::get(context, "context")?;
    let wrapped = keyslot::wrap(kek.as_slice(), data_key.as_slice(), context.as_slice())?;
    Ok(PyBytes::new(py, &wrapped))
}

/// Opens a wrapped key: `KeyMismatch` for the wrong key, `CorruptKeySlot` for a damaged slot.
#[pyfunction]
fn unwrap_key<'py>(
    py: Python<'py>,
    kek: &Bound<'py, PyAny>,
    wrapped: &Bound<'py, PyAny>,
    context: &Bound<'py, PyAny>,
) -> BindingResult<Bound<'py, PyBytes>> {
    let kek = ReadBuf::get(kek, "kek")?;
    let wrapped = ReadBuf::get(wrapped, "wrapped")?;
    let context = ReadBuf::get(context, "context")?;
    let key = keyslot::unwrap(kek.as_slice(), wrapped.as_slice(), context.as_slice())?;
    Ok(PyBytes::new(py, key.as_ref()))
}
