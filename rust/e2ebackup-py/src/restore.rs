//! Restore's small files, written without the GIL: a batch of complete, already authenticated
//! files put into one folder, each as an unnamed file (`O_TMPFILE`) that gets its name only when
//! whole (`linkat` through `/proc/self/fd`, which never replaces a name that exists). Python
//! checks every blob and every size before a file is handed over, so nothing here decides what
//! is trusted: this is only the system calls, one batch per GIL release instead of a dozen
//! Python calls per file.

use std::ffi::CString;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buffers::ReadBuf;
use crate::errors::BindingResult;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(write_new_files, m)?)?;
    Ok(())
}

/// One file of a batch: its name in the folder, its content, its metadata.
struct NewFile {
    name: CString,
    blobs: Vec<ReadBuf>,
    mode: libc::mode_t,
    owner: Option<(u32, u32)>,
    mtime: libc::timespec,
}

/// A failed system call: the error number and the file it was for.
struct Failure {
    errno: i32,
    name: Vec<u8>,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
    }
}

fn check_name(name: Vec<u8>) -> PyResult<CString> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(not_a_name(&name));
    }
    CString::new(name).map_err(|e| not_a_name(&e.into_vec()))
}

fn not_a_name(name: &[u8]) -> PyErr {
    PyValueError::new_err(format!(
        "{:?} is not a file name",
        String::from_utf8_lossy(name)
    ))
}

/// Writes all of `data` at the file's current position.
fn write_all(fd: libc::c_int, mut data: &[u8]) -> Result<(), i32> {
    while !data.is_empty() {
        // SAFETY: `data` is a valid slice for its length; `fd` is a descriptor we opened.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let errno = last_errno();
            if errno == libc::EINTR {
                continue;
            }
            return Err(errno);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Content, owner, mode and times of the open unnamed file `fd`, then its name; Ok(false) if
/// the name was taken (nothing replaced).
fn fill_and_link(folder: libc::c_int, fd: libc::c_int, file: &NewFile) -> Result<bool, i32> {
    for blob in &file.blobs {
        write_all(fd, blob.as_slice())?;
    }
    if let Some((uid, gid)) = file.owner {
        // Before the mode (chown clears setuid); a failure is ignored, as tar does.
        // SAFETY: plain system call on our descriptor.
        unsafe { libc::fchown(fd, uid, gid) };
    }
    // SAFETY: plain system calls on our descriptor; `times` outlives the call.
    if unsafe { libc::fchmod(fd, file.mode) } != 0 {
        return Err(last_errno());
    }
    let times = [file.mtime, file.mtime];
    // SAFETY: as above.
    if unsafe { libc::futimens(fd, times.as_ptr()) } != 0 {
        return Err(last_errno());
    }
    let proc_path = CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| libc::EINVAL)?;
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            folder,
            file.name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked != 0 {
        let errno = last_errno();
        return if errno == libc::EEXIST {
            Ok(false)
        } else {
            Err(errno)
        };
    }
    Ok(true)
}

fn write_one(folder: libc::c_int, file: &NewFile) -> Result<bool, i32> {
    let flags = libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC;
    // SAFETY: "." is NUL-terminated; `folder` is the caller's open folder descriptor.
    let fd = unsafe { libc::openat(folder, c".".as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(last_errno());
    }
    let result = fill_and_link(folder, fd, file);
    // SAFETY: our descriptor, closed once. An unnamed file that was never linked vanishes here.
    unsafe { libc::close(fd) };
    result
}

/// Writes complete files into the folder open as `folder`: for each `(name, blobs, mode, uid,
/// gid, mtime_ns)` (`uid < 0`: owner left as it is) an unnamed file holding the blobs one after
/// another, its owner, mode and times set through the descriptor, then linked at `name`.
/// Returns, per file, True if placed and False if `name` already existed (left untouched).
/// Raises OSError at the first other failure (the files before it are placed; the failing one
/// leaves nothing).
#[pyfunction]
fn write_new_files(
    py: Python<'_>,
    folder: i32,
    files: &Bound<'_, PyAny>,
) -> BindingResult<Vec<bool>> {
    let mut batch = Vec::new();
    for item in files.try_iter()? {
        let item = item?;
        let (name, blobs, mode, uid, gid, mtime_ns): (
            Vec<u8>,
            Bound<'_, PyAny>,
            libc::mode_t,
            i64,
            i64,
            i64,
        ) = item.extract()?;
        let blobs = blobs
            .try_iter()?
            .map(|b| ReadBuf::get(&b?, "blob"))
            .collect::<PyResult<Vec<_>>>()?;
        let owner = if uid >= 0 {
            let id = |v: i64| u32::try_from(v).unwrap_or(u32::MAX); // -1: left as it is
            Some((id(uid), id(gid)))
        } else {
            None
        };
        batch.push(NewFile {
            name: check_name(name)?,
            blobs,
            mode,
            owner,
            mtime: timespec(mtime_ns),
        });
    }
    let result = py.detach(|| {
        let mut placed = Vec::with_capacity(batch.len());
        for file in &batch {
            match write_one(folder, file) {
                Ok(done) => placed.push(done),
                Err(errno) => {
                    return Err(Failure {
                        errno,
                        name: file.name.as_bytes().to_vec(),
                    })
                }
            }
        }
        Ok(placed)
    });
    result.map_err(|f| {
        let message = std::io::Error::from_raw_os_error(f.errno).to_string();
        let name = PyBytes::new(py, &f.name).unbind();
        PyOSError::new_err((f.errno, message, name)).into()
    })
}
