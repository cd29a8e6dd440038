//! `e2ebackup._core`: the PyO3 binding of `e2ebackup-core`.
//!
//! Deliberately thin: argument conversion, GIL release and error translation. Every byte of
//! cryptography happens in the core crate.

mod buffers;
mod chunked;
mod errors;
mod keys;
mod opaque;
mod recipient;
mod repo;
#[cfg(target_os = "linux")]
mod restore;
mod whatsapp;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    chunked::register(m)?;
    keys::register(m)?;
    whatsapp::register(m)?;
    opaque::register(m)?;
    repo::register(m)?;
    recipient::register(m)?;
    #[cfg(target_os = "linux")]
    restore::register(m)?;
    m.add("CHUNK_SIZE", e2ebackup_core::chunked::CHUNK_SIZE)?;
    m.add("HEADER_SIZE", e2ebackup_core::chunked::HEADER_SIZE)?;
    m.add("TAG_SIZE", e2ebackup_core::chunked::TAG_SIZE)?;
    m.add("KEY_SIZE", e2ebackup_core::chunked::KEY_SIZE)?;
    Ok(())
}
