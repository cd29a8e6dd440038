//! Python API of the repository's bulk work: the keyed chunker and the blob codec. Both run
//! without the GIL, the codec across cores.

use std::collections::HashMap;

use e2ebackup_core::blob::{self, BlobKeys};
use e2ebackup_core::cdc::{CdcParams, Chunker as CoreChunker};
use e2ebackup_core::parallel::resolve_threads;
use e2ebackup_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buffers::{maybe_detach, ReadBuf};
use crate::errors::BindingResult;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Chunker>()?;
    m.add_class::<BlobCodec>()?;
    m.add_function(wrap_pyfunction!(looks_compressed, m)?)?;
    m.add("MAX_BLOB_SIZE", blob::MAX_BLOB)?;
    Ok(())
}

fn array<const N: usize>(obj: &Bound<'_, PyAny>, what: &str) -> BindingResult<[u8; N]> {
    let buf = ReadBuf::get(obj, what)?;
    buf.as_slice().try_into().map_err(|_| {
        Error::InvalidArgument(format!("{what} must be {N} bytes, got {}", buf.len())).into()
    })
}

/// Keyed content-defined chunker (FastCDC with a secret gear table).
#[pyclass(module = "e2ebackup._core")]
pub struct Chunker {
    inner: CoreChunker,
}

#[pymethods]
impl Chunker {
    #[new]
    #[pyo3(signature = (key, *, min_size=524288, avg_size=1048576, max_size=8388608))]
    fn new(
        key: &Bound<'_, PyAny>,
        min_size: usize,
        avg_size: usize,
        max_size: usize,
    ) -> BindingResult<Self> {
        let key = array::<32>(key, "key")?;
        let params = CdcParams {
            min: min_size,
            avg: avg_size,
            max: max_size,
        };
        Ok(Chunker {
            inner: CoreChunker::new(&key, params)?,
        })
    }

    /// Offsets within `data` just past each chunk that ended in it.
    fn feed(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> BindingResult<Vec<usize>> {
        let data = ReadBuf::get(data, "data")?;
        let inner = &mut self.inner;
        Ok(maybe_detach(py, data.len(), || inner.feed(data.as_slice())))
    }

    /// Forgets a partial chunk, to start a new file.
    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// Ids, compression and encryption of repository blobs.
#[pyclass(module = "e2ebackup._core", frozen)]
pub struct BlobCodec {
    keys: BlobKeys,
}

#[pymethods]
impl BlobCodec {
    #[new]
    fn new(
        id_key: &Bound<'_, PyAny>,
        enc_key: &Bound<'_, PyAny>,
        repo_id: &Bound<'_, PyAny>,
    ) -> BindingResult<Self> {
        let keys = BlobKeys::new(
            array(id_key, "id_key")?,
            array(enc_key, "enc_key")?,
            array(repo_id, "repo_id")?,
        );
        Ok(BlobCodec { keys })
    }

    /// The blob id (keyed BLAKE3) of `data`.
    fn id<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> BindingResult<Bound<'py, PyBytes>> {
        let data = ReadBuf::get(data, "data")?;
        let id = maybe_detach(py, data.len(), || self.keys.id(data.as_slice()));
        Ok(PyBytes::new(py, &id))
    }

    /// Ids of many blobs, computed in parallel.
    #[pyo3(signature = (blobs, *, threads=None))]
    fn ids<'py>(
        &self,
        py: Python<'py>,
        blobs: &Bound<'py, PyAny>,
        threads: Option<usize>,
    ) -> BindingResult<Vec<Bound<'py, PyBytes>>> {
        let threads = resolve_threads(threads)?;
        let bufs = buffers(blobs)?;
        let ids = py.detach(|| {
            let slices: Vec<&[u8]> = bufs.iter().map(ReadBuf::as_slice).collect();
            self.keys.ids(&slices, threads)
        })?;
        Ok(ids.iter().map(|id| PyBytes::new(py, id)).collect())
    }

    /// Seals many blobs of one type in parallel: a list of `(id, sealed)` in input order.
    /// `ids`, from `ids()`, saves computing them again; `compress[i] = False` stores blob `i`
    /// without trying zstd.
    #[pyo3(signature = (kind, blobs, *, ids=None, compress=None, threads=None))]
    fn seal_many<'py>(
        &self,
        py: Python<'py>,
        kind: u8,
        blobs: &Bound<'py, PyAny>,
        ids: Option<&Bound<'py, PyAny>>,
        compress: Option<Vec<bool>>,
        threads: Option<usize>,
    ) -> BindingResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
        let threads = resolve_threads(threads)?;
        let bufs = buffers(blobs)?;
        let ids = ids
            .map(|l| {
                l.try_iter()?
                    .map(|i| array::<32>(&i?, "id"))
                    .collect::<BindingResult<Vec<_>>>()
            })
            .transpose()?;
        let sealed = py.detach(|| {
            let slices: Vec<&[u8]> = bufs.iter().map(ReadBuf::as_slice).collect();
            self.keys
                .seal_many(kind, &slices, ids.as_deref(), compress.as_deref(), threads)
        })?;
        Ok(sealed
            .into_iter()
            .map(|(id, ct)| (PyBytes::new(py, &id), PyBytes::new(py, &ct)))
            .collect())
    }

    /// Decrypts and checks one blob; `InvalidTag` if it was modified, moved or swapped.
    fn open<'py>(
        &self,
        py: Python<'py>,
        kind: u8,
        id: &Bound<'py, PyAny>,
        sealed: &Bound<'py, PyAny>,
    ) -> BindingResult<Bound<'py, PyBytes>> {
        let id = array::<32>(id, "id")?;
        let sealed = ReadBuf::get(sealed, "sealed")?;
        let data = maybe_detach(py, sealed.len(), || {
            self.keys.open(kind, &id, sealed.as_slice())
        })?;
        Ok(PyBytes::new(py, &data))
    }

    /// Opens many blobs held in one buffer, with one release of the GIL: blob `i` has id
    /// `ids[i]` and lies at `spans[i] = (offset, length)` of `sealed`. A blob named again is
    /// opened once (the same bytes object is returned); once `limit` plaintext bytes are opened,
    /// the blobs not opened yet are None. `InvalidTag` if any does not open.
    #[pyo3(signature = (kind, ids, spans, sealed, *, limit=usize::MAX))]
    fn open_many<'py>(
        &self,
        py: Python<'py>,
        kind: u8,
        ids: &Bound<'py, PyAny>,
        spans: Vec<(usize, usize)>,
        sealed: &Bound<'py, PyAny>,
        limit: usize,
    ) -> BindingResult<Vec<Option<Bound<'py, PyBytes>>>> {
        let ids = ids
            .try_iter()?
            .map(|i| array::<32>(&i?, "id"))
            .collect::<BindingResult<Vec<_>>>()?;
        let sealed = ReadBuf::get(sealed, "sealed")?;
        if ids.len() != spans.len() {
            return Err(Error::InvalidArgument("one span per id".into()).into());
        }
        let buf = sealed.as_slice();
        if spans
            .iter()
            .any(|&(offset, length)| offset.checked_add(length).is_none_or(|e| e > buf.len()))
        {
            return Err(Error::InvalidArgument("a span lies outside the buffer".into()).into());
        }
        let slots = py.detach(|| {
            let mut first: HashMap<[u8; 32], usize> = HashMap::new();
            let mut slots = Vec::with_capacity(ids.len());
            let mut held = 0usize;
            for (i, (id, &(offset, length))) in ids.iter().zip(&spans).enumerate() {
                if let Some(&j) = first.get(id) {
                    slots.push(Slot::Same(j));
                } else if held >= limit {
                    slots.push(Slot::Later);
                } else {
                    let data = self.keys.open(kind, id, &buf[offset..offset + length])?;
                    held += data.len();
                    first.insert(*id, i);
                    slots.push(Slot::Opened(data));
                }
            }
            Ok::<_, Error>(slots)
        })?;
        let mut out: Vec<Option<Bound<'py, PyBytes>>> = Vec::with_capacity(slots.len());
        for slot in slots {
            let item = match slot {
                Slot::Opened(data) => Some(PyBytes::new(py, &data)),
                Slot::Same(j) => out[j].clone(),
                Slot::Later => None,
            };
            out.push(item);
        }
        Ok(out)
    }
}

/// What `open_many` made of one blob.
enum Slot {
    Opened(Vec<u8>),
    Same(usize),
    Later,
}

fn buffers(seq: &Bound<'_, PyAny>) -> PyResult<Vec<ReadBuf>> {
    seq.try_iter()?.map(|b| ReadBuf::get(&b?, "blob")).collect()
}

/// Whether `data` starts like an already-compressed format (JPEG, PNG, MP4, ZIP...).
#[pyfunction]
fn looks_compressed(data: &Bound<'_, PyAny>) -> BindingResult<bool> {
    Ok(blob::looks_compressed(
        ReadBuf::get(data, "data")?.as_slice(),
    ))
}
