//! Zero-copy access to any C-contiguous Python buffer (bytes, bytearray, memoryview, numpy
//! arrays, mmap), usable while the GIL is released, and fresh `bytes` filled off the GIL.

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{too_large, BindingResult};

/// Above this many bytes the GIL is released while working (as blake3-py and hashlib do).
pub const RELEASE_GIL_ABOVE: usize = 2048;

fn get_buffer(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<PyUntypedBuffer> {
    let buf = PyUntypedBuffer::get(obj).map_err(|_| {
        let type_name = obj
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        PyTypeError::new_err(format!(
            "{what} must be a bytes-like object (bytes, bytearray, memoryview, numpy array, \
             mmap...), not {type_name}"
        ))
    })?;
    if !buf.is_c_contiguous() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a C-contiguous buffer"
        )));
    }
    Ok(buf)
}

/// A read-only view of a caller's buffer. The buffer export keeps the memory alive and stops a
/// `bytearray` from being resized while we hold the pointer.
pub struct ReadBuf {
    _export: PyUntypedBuffer,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer stays valid for as long as the export is held, whichever thread reads it;
// the view is only read.
unsafe impl Send for ReadBuf {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for ReadBuf {}

impl ReadBuf {
    pub fn get(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Self> {
        let export = get_buffer(obj, what)?;
        let ptr = export.buf_ptr() as *const u8;
        let len = export.len_bytes();
        Ok(ReadBuf {
            _export: export,
            ptr,
            len,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: a C-contiguous export of `len` bytes at `ptr`, alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn range(&self) -> (usize, usize) {
        (self.ptr as usize, self.ptr as usize + self.len)
    }
}

/// A writable view of a caller's buffer.
pub struct WriteBuf {
    _export: PyUntypedBuffer,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: as for `ReadBuf`; the `&mut` accessor gives exclusive access on our side.
unsafe impl Send for WriteBuf {}

impl WriteBuf {
    pub fn get(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Self> {
        let export = get_buffer(obj, what)?;
        if export.readonly() {
            return Err(PyTypeError::new_err(format!(
                "{what} must be a writable buffer (bytearray, memoryview of one, numpy array...)"
            )));
        }
        let ptr = export.buf_ptr() as *mut u8;
        let len = export.len_bytes();
        Ok(WriteBuf {
            _export: export,
            ptr,
            len,
        })
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: a writable C-contiguous export of `len` bytes at `ptr`, alive as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Rejects an output that shares memory with an input: chunks would be overwritten before
    /// they are read.
    pub fn check_disjoint(&self, input: &ReadBuf) -> PyResult<()> {
        let (a0, a1) = (self.ptr as usize, self.ptr as usize + self.len);
        let (b0, b1) = input.range();
        if self.len > 0 && input.len() > 0 && a0 < b1 && b0 < a1 {
            return Err(PyValueError::new_err(
                "the output buffer must not overlap the input",
            ));
        }
        Ok(())
    }
}

/// Runs `f`, without the GIL when the work is large enough to be worth it.
pub fn maybe_detach<T, F>(py: Python<'_>, work: usize, f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    if work > RELEASE_GIL_ABOVE {
        py.detach(f)
    } else {
        f()
    }
}

/// A new `bytes` of exactly `len` bytes, filled by `fill` (without the GIL for large sizes).
///
/// The object is allocated uninitialised and its pages are first touched by the worker threads
/// that write the ciphertext, not zeroed here first: for large outputs the page faults cost as
/// much as the cipher, and this spreads them over the cores.
pub fn new_bytes<'py, F>(py: Python<'py>, len: usize, fill: F) -> BindingResult<Bound<'py, PyBytes>>
where
    F: FnOnce(&mut [u8]) -> e2ebackup_core::Result<usize> + Send,
{
    let py_len = ffi::Py_ssize_t::try_from(len).map_err(|_| too_large("output"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised bytes object of `py_len` bytes.
    let raw = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), py_len) };
    // SAFETY: `raw` is a new reference or NULL with an exception set.
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, raw)? };
    // SAFETY: `obj` is a bytes object, so this is its data pointer.
    let data = unsafe { ffi::PyBytes_AsString(obj.as_ptr()) } as usize;
    advise_huge_pages(data, len);
    let written = maybe_detach(py, len, move || {
        // SAFETY: nobody else can see the new object yet; `len` bytes are ours to write, and
        // `fill` only writes them (u8 has no invalid values, and nothing reads them first).
        let out = unsafe { std::slice::from_raw_parts_mut(data as *mut u8, len) };
        fill(out)
    })?;
    debug_assert_eq!(written, len);
    // SAFETY: PyBytes_FromStringAndSize returned a bytes object.
    Ok(unsafe { obj.cast_into_unchecked::<PyBytes>() })
}

/// Asks Linux to back a large fresh buffer with transparent huge pages (where THP is in
/// `madvise` mode): one fault per 2 MiB instead of per 4 KiB. Only advice: failure changes
/// nothing but speed.
fn advise_huge_pages(addr: usize, len: usize) {
    const HUGE_PAGE: usize = 2 << 20;
    if len < 4 * HUGE_PAGE || !cfg!(target_os = "linux") {
        return;
    }
    let start = addr.next_multiple_of(HUGE_PAGE);
    let end = (addr + len) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        #[cfg(target_os = "linux")]
        // SAFETY: madvise only changes how the kernel backs these pages of our own allocation.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}
