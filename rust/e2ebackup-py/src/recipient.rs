//! Python API of recipient keys (X25519 + ML-KEM-768): the identity's private keys stay in
//! Rust and are wiped when the object goes; Python gets the public key and, per slot, the
//! key-encryption key that the slot layer wraps the data key under.

use e2ebackup_core::recipient::{self, Identity};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::buffers::ReadBuf;
use crate::errors::BindingResult;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RecipientIdentity>()?;
    m.add_function(wrap_pyfunction!(recipient_check, m)?)?;
    m.add_function(wrap_pyfunction!(recipient_encapsulate, m)?)?;
    m.add_function(wrap_pyfunction!(recipient_encapsulate_deterministic, m)?)?;
    m.add("RECIPIENT_SEED_SIZE", recipient::SEED_SIZE)?;
    m.add("RECIPIENT_PUBLIC_SIZE", recipient::PUBLIC_SIZE)?;
    m.add(
        "RECIPIENT_ENCAPSULATION_SIZE",
        recipient::ENCAPSULATION_SIZE,
    )?;
    Ok(())
}

/// The private half of a recipient key, from its 32-byte seed.
#[pyclass(module = "e2ebackup._core", frozen)]
pub struct RecipientIdentity {
    inner: Identity,
}

#[pymethods]
impl RecipientIdentity {
    #[new]
    fn new(seed: &Bound<'_, PyAny>) -> BindingResult<Self> {
        let seed = ReadBuf::get(seed, "seed")?;
        Ok(RecipientIdentity {
            inner: Identity::from_seed(seed.as_slice())?,
        })
    }

    /// The recipient (public key): `ek_M || pk_X`.
    fn public<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.public())
    }

    /// The key-encryption key of an encapsulation (`CorruptKeySlot` if it is malformed).
    fn decapsulate<'py>(
        &self,
        py: Python<'py>,
        enc: &Bound<'py, PyAny>,
    ) -> BindingResult<Bound<'py, PyBytes>> {
        let enc = ReadBuf::get(enc, "enc")?;
        let kek = py.detach(|| self.inner.decapsulate(enc.as_slice()))?;
        Ok(PyBytes::new(py, kek.as_ref()))
    }

    fn __repr__(&self) -> &'static str {
        "RecipientIdentity(<secret>)"
    }
}

/// Raises `InvalidArgument` unless `public` is a well-formed recipient key.
#[pyfunction]
fn recipient_check(public: &Bound<'_, PyAny>) -> BindingResult<()> {
    let public = ReadBuf::get(public, "public")?;
    recipient::check_public(public.as_slice())?;
    Ok(())
}

/// `(enc, kek)`: a fresh key-encryption key encapsulated to `public`.
#[pyfunction]
fn recipient_encapsulate<'py>(
    py: Python<'py>,
    public: &Bound<'py, PyAny>,
) -> BindingResult<Bound<'py, PyTuple>> {
    let public = ReadBuf::get(public, "public")?;
    let (enc, kek) = py.detach(|| recipient::encapsulate(public.as_slice()))?;
    let items = [PyBytes::new(py, &enc), PyBytes::new(py, kek.as_ref())];
    Ok(PyTuple::new(py, items)?)
}

/// [`recipient_encapsulate`] with its randomness given: test vectors only, like
/// `_encrypt_with_salt` (reusing `m` or `ephemeral` breaks the KEM).
#[pyfunction]
#[pyo3(name = "_recipient_encapsulate_deterministic")]
fn recipient_encapsulate_deterministic<'py>(
    py: Python<'py>,
    public: &Bound<'py, PyAny>,
    m: &Bound<'py, PyAny>,
    ephemeral: &Bound<'py, PyAny>,
) -> BindingResult<Bound<'py, PyTuple>> {
    let public = ReadBuf::get(public, "public")?;
    let m = ReadBuf::get(m, "m")?;
    let ephemeral = ReadBuf::get(ephemeral, "ephemeral")?;
    let as32 = |b: &[u8], name: &str| -> BindingResult<[u8; 32]> {
        b.try_into().map_err(|_| {
            e2ebackup_core::Error::InvalidArgument(format!("{name} must be 32 bytes")).into()
        })
    };
    let (m, ephemeral) = (
        as32(m.as_slice(), "m")?,
        as32(ephemeral.as_slice(), "ephemeral")?,
    );
    let (enc, kek) = recipient::encapsulate_deterministic(public.as_slice(), &m, &ephemeral)?;
    let items = [PyBytes::new(py, &enc), PyBytes::new(py, kek.as_ref())];
    Ok(PyTuple::new(py, items)?)
}
