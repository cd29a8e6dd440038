//! The one error funnel: every core error becomes an exception class defined in Python, in
//! `e2ebackup.errors`, so users catch one hierarchy.

use e2ebackup_core::Error;
use pyo3::exceptions::{PyOSError, PyOverflowError, PyValueError};
use pyo3::types::PyBytes;
use pyo3::{PyErr, Python};

pyo3::import_exception!(e2ebackup.errors, InvalidTag);
pyo3::import_exception!(e2ebackup.errors, AlreadyFinalized);
pyo3::import_exception!(e2ebackup.errors, StreamFailed);
pyo3::import_exception!(e2ebackup.errors, InvalidArgument);
pyo3::import_exception!(e2ebackup.errors, MessageTooLong);
pyo3::import_exception!(e2ebackup.errors, KeyMismatch);
pyo3::import_exception!(e2ebackup.errors, CorruptKeySlot);
pyo3::import_exception!(e2ebackup.errors, KdfLimitExceeded);
pyo3::import_exception!(e2ebackup.errors, VaultLoginFailed);
pyo3::import_exception!(e2ebackup.errors, VaultProtocolError);
pyo3::import_exception!(e2ebackup.errors, WhatsAppFormatError);
pyo3::import_exception!(e2ebackup.errors, WhatsAppTruncatedError);
pyo3::import_exception!(e2ebackup.errors, WhatsAppCorruptedError);

/// A core error or a Python error raised while converting arguments.
pub enum BindingError {
    Core(Error),
    Py(PyErr),
}

pub type BindingResult<T> = Result<T, BindingError>;

impl From<Error> for BindingError {
    fn from(e: Error) -> Self {
        BindingError::Core(e)
    }
}

impl From<PyErr> for BindingError {
    fn from(e: PyErr) -> Self {
        BindingError::Py(e)
    }
}

impl From<BindingError> for PyErr {
    fn from(e: BindingError) -> Self {
        let e = match e {
            BindingError::Py(e) => return e,
            BindingError::Core(e) => e,
        };
        let msg = e.to_string();
        match e {
            Error::InvalidTag => InvalidTag::new_err(msg),
            Error::AlreadyFinalized => AlreadyFinalized::new_err(msg),
            Error::StreamFailed => StreamFailed::new_err(msg),
            Error::MessageTooLong => MessageTooLong::new_err(msg),
            Error::InvalidKeyLength { .. }
            | Error::BufferTooSmall { .. }
            | Error::InvalidArgument(_) => InvalidArgument::new_err(msg),
            Error::Rng => PyValueError::new_err(msg),
            Error::KeyMismatch => KeyMismatch::new_err(msg),
            Error::CorruptSlot => CorruptKeySlot::new_err(msg),
            Error::KdfLimit(_) => KdfLimitExceeded::new_err(msg),
            Error::VaultLoginFailed => VaultLoginFailed::new_err(msg),
            Error::VaultProtocol(_) => VaultProtocolError::new_err(msg),
            Error::WhatsAppFormat(_) => WhatsAppFormatError::new_err(msg),
            Error::WhatsAppTruncated(_) => WhatsAppTruncatedError::new_err(msg),
            Error::WhatsAppCorrupted(_) => WhatsAppCorruptedError::new_err(msg),
            Error::WhatsAppWrongKey(_) => InvalidTag::new_err(msg),
            Error::Io {
                errno: Some(errno), ..
            } => PyOSError::new_err((errno, msg)),
            Error::Io { errno: None, .. } => PyOSError::new_err(msg),
            // As `OSError(errno, strerror, filename)`, the name as bytes.
            Error::NewFileFailed { errno, name, .. } => Python::attach(|py| {
                let text = std::io::Error::from_raw_os_error(errno).to_string();
                PyOSError::new_err((errno, text, PyBytes::new(py, &name).unbind()))
            }),
        }
    }
}

/// Converts a Python-side length to `usize`, for sizes that cannot be allocated anyway.
pub fn too_large(what: &str) -> PyErr {
    PyOverflowError::new_err(format!("{what} is too large for this platform"))
}
