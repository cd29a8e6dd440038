//! Python API of WhatsApp crypt15 backups: whole-file decrypt and encrypt with the GIL released,
//! and the header parser behind `whatsapp info`.
//!
//! Sources and sinks are file descriptors (the fast path: the core reads and writes them itself,
//! without the GIL) or Python binary file objects (`read(n)` / `write(b)`, called with the GIL
//! taken back for each block). A Python exception raised by a file object or by the progress
//! callback (including KeyboardInterrupt, checked every 16 MiB) stops the work and is re-raised
//! as is.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};

use e2ebackup_core::whatsapp::prefix::encode_header;
use e2ebackup_core::whatsapp::{
    self, BackupInfo, BackupKey, DecryptOptions, EncryptOptions, Header, Layout, Payload, Version,
};
use e2ebackup_core::Error;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::buffers::ReadBuf;
use crate::errors::BindingResult;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(whatsapp_decrypt, m)?)?;
    m.add_function(wrap_pyfunction!(whatsapp_encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(whatsapp_parse_header, m)?)?;
    Ok(())
}

/// The first Python exception raised while the core ran without the GIL.
#[derive(Clone, Default)]
struct Stash(Arc<Mutex<Option<PyErr>>>);

impl Stash {
    fn keep(&self, e: PyErr) -> io::Error {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        io::Error::other("a Python exception stopped the work")
    }

    fn take(&self) -> Option<PyErr> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The error to raise: a stashed Python exception first, else the core's.
    fn finish<T>(&self, result: e2ebackup_core::Result<T>) -> BindingResult<T> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => match self.take() {
                Some(py_err) => Err(py_err.into()),
                None => Err(e.into()),
            },
        }
    }
}

/// A source or sink: a borrowed file descriptor, or a Python file object.
enum Stream {
    Fd(ManuallyDrop<File>),
    Object(Py<PyAny>, Stash),
}

impl Stream {
    fn new(obj: &Bound<'_, PyAny>, stash: &Stash) -> PyResult<Self> {
        if let Ok(fd) = obj.extract::<i32>() {
            if fd < 0 {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "a file descriptor cannot be negative",
                ));
            }
            // SAFETY: the caller lends an open descriptor for the duration of the call;
            // ManuallyDrop keeps us from closing it.
            let file = unsafe { File::from_raw_fd(fd) };
            return Ok(Stream::Fd(ManuallyDrop::new(file)));
        }
        Ok(Stream::Object(obj.clone().unbind(), stash.clone()))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Fd(f) => f.read(buf),
            Stream::Object(obj, stash) => Python::attach(|py| {
                let data = obj.call_method1(py, "read", (buf.len(),))?;
                let data = data.bind(py).cast::<PyBytes>()?.as_bytes();
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok(n)
            })
            .map_err(|e: PyErr| stash.keep(e)),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Fd(f) => f.write(buf),
            Stream::Object(obj, stash) => Python::attach(|py| {
                let n = obj.call_method1(py, "write", (PyBytes::new(py, buf),))?;
                // Raw streams may write less; None means "would block", which we do not use.
                Ok(n.extract::<Option<usize>>(py)?.unwrap_or(buf.len()))
            })
            .map_err(|e: PyErr| stash.keep(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Fd(_) => Ok(()),
            Stream::Object(obj, stash) => Python::attach(|py| {
                obj.call_method0(py, "flush")?;
                Ok(())
            })
            .map_err(|e: PyErr| stash.keep(e)),
        }
    }
}

/// The progress hook: checks for KeyboardInterrupt, then calls `progress(bytes)`.
fn progress_hook(
    progress: Option<Py<PyAny>>,
    stash: Stash,
) -> impl FnMut(u64) -> e2ebackup_core::Result<()> + Send {
    move |done| {
        Python::attach(|py| {
            py.check_signals()?;
            if let Some(cb) = &progress {
                cb.call1(py, (done,))?;
            }
            Ok(())
        })
        .map_err(|e: PyErr| stash.keep(e).into())
    }
}

fn backup_key(key: &Bound<'_, PyAny>, kind: &str) -> BindingResult<BackupKey> {
    let key = ReadBuf::get(key, "key")?;
    Ok(match kind {
        "crypt15" => BackupKey::crypt15(key.as_slice())?,
        "crypt14" => BackupKey::crypt14(key.as_slice())?,
        other => {
            return Err(Error::InvalidArgument(format!(
                "key_kind must be 'crypt15' or 'crypt14', not {other:?}"
            ))
            .into())
        }
    })
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::Crypt15 => "crypt15",
        Version::Crypt14 => "crypt14",
    }
}

fn header_dict<'py>(py: Python<'py>, h: &Header) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let p = &h.prefix;
    d.set_item("header_length", h.len)?;
    d.set_item("flag_byte", h.flag_byte)?;
    if let Ok((version, iv)) = p.cipher() {
        d.set_item("version", version_name(version))?;
        d.set_item("iv", PyBytes::new(py, &iv))?;
    }
    d.set_item("key_type", p.key_type)?;
    d.set_item("key_type_v2", p.key_type_v2)?;
    d.set_item("unknown_fields", PyList::new(py, &p.unknown_fields)?)?;
    d.set_item("prefix", PyBytes::new(py, &h.prefix_raw))?;
    if let Some(c) = &p.c14 {
        let c14 = PyDict::new(py);
        c14.set_item("cipher_version", PyBytes::new(py, &c.cipher_version))?;
        c14.set_item("key_version", PyBytes::new(py, &c.key_version))?;
        c14.set_item("server_salt", PyBytes::new(py, &c.server_salt))?;
        c14.set_item("google_id", PyBytes::new(py, &c.google_id))?;
        d.set_item("c14", c14)?;
    }
    if let Some(i) = &p.info {
        let info = PyDict::new(py);
        info.set_item("app_version", i.app_version.as_deref())?;
        info.set_item("jid_suffix", i.jid_suffix.as_deref())?;
        info.set_item("backup_version", i.backup_version)?;
        info.set_item("features", PyList::new(py, &i.features)?)?;
        info.set_item("unknown_fields", PyList::new(py, &i.unknown_fields)?)?;
        info.set_item("raw", PyBytes::new(py, &i.raw))?;
        d.set_item("info", info)?;
    }
    Ok(d)
}

/// Parses the header at the start of `data`. Returns `None` if more bytes are needed (at the
/// end of the file that means it is truncated: `WhatsAppTruncatedError` when `at_eof`).
#[pyfunction]
#[pyo3(signature = (data, *, at_eof=false))]
fn whatsapp_parse_header<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    at_eof: bool,
) -> BindingResult<Option<Bound<'py, PyDict>>> {
    let data = ReadBuf::get(data, "data")?;
    let mut cursor = data.as_slice();
    let mut buf = Vec::new();
    // With the data in memory, read_header's only "input" is the slice: at its end it reports
    // truncation, which is only true if the caller says the file ends there too.
    match whatsapp::read_header(&mut cursor, &mut buf, data.len()) {
        Ok(h) => Ok(Some(header_dict(py, &h)?)),
        Err(Error::WhatsAppTruncated(_)) if !at_eof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Decrypts a crypt15/crypt14 backup from `src` into `dst` (descriptors or binary file objects).
/// `dst` receives unauthenticated data until this returns: it must be a temporary file that the
/// caller deletes on any error.
#[pyfunction]
#[pyo3(signature = (key, key_kind, src, dst, *, decompress=true, progress=None))]
fn whatsapp_decrypt<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    key_kind: &str,
    src: &Bound<'py, PyAny>,
    dst: &Bound<'py, PyAny>,
    decompress: bool,
    progress: Option<Py<PyAny>>,
) -> BindingResult<Bound<'py, PyDict>> {
    let key = backup_key(key, key_kind)?;
    let stash = Stash::default();
    let mut input = Stream::new(src, &stash)?;
    let mut output = Stream::new(dst, &stash)?;
    let mut hook = progress_hook(progress, stash.clone());
    let options = DecryptOptions { decompress };
    let result =
        py.detach(|| whatsapp::decrypt(&key, &mut input, &mut output, &options, &mut hook));
    let report = stash.finish(result)?;
    let d = header_dict(py, &report.header)?;
    d.set_item("version", version_name(report.version))?;
    d.set_item(
        "layout",
        match report.layout {
            Layout::SingleFile => "single-file",
            Layout::MultiFile => "multi-file",
        },
    )?;
    d.set_item(
        "payload",
        match report.payload {
            Payload::Zlib => "zlib",
            Payload::Zip => "zip",
            Payload::Raw => "raw",
        },
    )?;
    d.set_item("input_length", report.input_len)?;
    d.set_item("output_length", report.output_len)?;
    Ok(d)
}

type InfoFields = (
    Option<String>,
    Option<String>,
    Option<u64>,
    Vec<(u32, bool)>,
);

/// Writes `src` (a SQLite database, or a ZIP archive with `multi_file`) as a crypt15 backup to
/// `dst`; returns the new header as `whatsapp_parse_header` would. The prefix's info message is `info_raw` as is (copied from a reference backup), or
/// built from `info_fields` (app version, phone-number suffix, backup version, features), or
/// left out. `iv` is for tests only.
#[pyfunction]
#[pyo3(signature = (
    key, src, dst, *, info_raw=None, info_fields=None, level=2, multi_file=false, iv=None,
    progress=None
))]
#[allow(clippy::too_many_arguments)]
fn whatsapp_encrypt<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    src: &Bound<'py, PyAny>,
    dst: &Bound<'py, PyAny>,
    info_raw: Option<&Bound<'py, PyAny>>,
    info_fields: Option<InfoFields>,
    level: u32,
    multi_file: bool,
    iv: Option<&Bound<'py, PyAny>>,
    progress: Option<Py<PyAny>>,
) -> BindingResult<Bound<'py, PyDict>> {
    let key = backup_key(key, "crypt15")?;
    let info = match (info_raw, info_fields) {
        (Some(_), Some(_)) => {
            return Err(
                Error::InvalidArgument("give info_raw or info_fields, not both".into()).into(),
            )
        }
        (Some(raw), None) => {
            let raw = ReadBuf::get(raw, "info_raw")?.as_slice().to_vec();
            if raw.is_empty() {
                None
            } else {
                Some(BackupInfo {
                    raw,
                    ..Default::default()
                })
            }
        }
        (None, Some((app_version, jid_suffix, backup_version, features))) => Some(BackupInfo {
            app_version,
            jid_suffix,
            backup_version,
            features,
            ..Default::default()
        }),
        (None, None) => None,
    };
    let iv = match iv {
        None => None,
        Some(iv) => Some(
            ReadBuf::get(iv, "iv")?
                .as_slice()
                .try_into()
                .map_err(|_| Error::InvalidArgument("iv must be 16 bytes".into()))?,
        ),
    };
    let options = EncryptOptions {
        info,
        iv,
        level,
        multi_file,
    };
    let stash = Stash::default();
    let mut input = Stream::new(src, &stash)?;
    let mut output = Stream::new(dst, &stash)?;
    let mut hook = progress_hook(progress, stash.clone());
    let result =
        py.detach(|| whatsapp::encrypt(&key, &mut input, &mut output, &options, &mut hook));
    let report = stash.finish(result)?;
    let header = Header {
        len: encode_header(&report.prefix)?.len(),
        prefix_raw: report.prefix.encode(),
        prefix: report.prefix,
        flag_byte: false,
    };
    let d = header_dict(py, &header)?;
    d.set_item("input_length", report.input_len)?;
    d.set_item("output_length", report.output_len)?;
    Ok(d)
}
