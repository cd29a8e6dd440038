//! Restore's small files (Linux): the binding of `e2ebackup_core::restore`. Converts a batch of
//! Python items, then has the core write the whole batch in one GIL release; a failure comes
//! back through the error funnel as an OSError naming the file.

use e2ebackup_core::restore::{self, FileName, NewFile, Outcome};
use pyo3::prelude::*;

use crate::buffers::ReadBuf;
use crate::errors::BindingResult;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(write_new_files, m)?)?;
    Ok(())
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
    // The views of each file's blobs, held here while the core reads them.
    let mut views: Vec<Vec<ReadBuf>> = Vec::new();
    let mut heads = Vec::new();
    for item in files.try_iter()? {
        let item = item?;
        let (name, blobs, mode, uid, gid, mtime_ns): (
            Vec<u8>,
            Bound<'_, PyAny>,
            u32,
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
        // Every name is checked before anything is written.
        heads.push((FileName::new(name)?, mode, owner, mtime_ns));
        views.push(blobs);
    }
    let batch: Vec<NewFile<'_>> = heads
        .into_iter()
        .zip(&views)
        .map(|((name, mode, owner, mtime_ns), blobs)| NewFile {
            name,
            parts: blobs.iter().map(ReadBuf::as_slice).collect(),
            mode,
            owner,
            mtime_ns,
        })
        .collect();
    let outcomes = py.detach(|| restore::write_new_files(folder, &batch))?;
    Ok(outcomes.into_iter().map(|o| o == Outcome::Placed).collect())
}
