//! Python API of OPAQUE (the key vault's password protocol): the server (setup, registration,
//! login) and the two client states. Every message is `bytes`; the KSF (Argon2id) and the
//! curve arithmetic run without the GIL, so a threaded vault serves logins in parallel.

use e2ebackup_core::kdf::Argon2Params;
use e2ebackup_core::opaque::{self, ClientLogin, ClientRegistration, ServerSetup};
use e2ebackup_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buffers::ReadBuf;
use crate::errors::BindingResult;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<OpaqueServer>()?;
    m.add_class::<OpaqueClientRegistration>()?;
    m.add_class::<OpaqueClientLogin>()?;
    m.add_function(wrap_pyfunction!(opaque_registration_finish, m)?)?;
    let i = opaque::KSF_INTEROP;
    m.add(
        "OPAQUE_KSF_INTEROP",
        (i.memory_kib, i.iterations, i.parallelism),
    )?;
    Ok(())
}

fn ksf(memory_kib: i64, iterations: i64, parallelism: i64) -> BindingResult<Argon2Params> {
    let p = |v: i64, name: &str| {
        u32::try_from(v).map_err(|_| Error::KdfLimit(format!("{name} is out of range: {v}")))
    };
    Ok(Argon2Params {
        memory_kib: p(memory_kib, "memory_kib")?,
        iterations: p(iterations, "iterations")?,
        parallelism: p(parallelism, "parallelism")?,
    })
}

fn used() -> Error {
    Error::AlreadyFinalized
}

/// The vault's side: a server setup (OPRF seed and static key pair) and the protocol steps.
#[pyclass(module = "e2ebackup._core", frozen)]
pub struct OpaqueServer {
    setup: ServerSetup,
}

#[pymethods]
impl OpaqueServer {
    /// A server from a serialized setup, or a new random one.
    #[new]
    #[pyo3(signature = (setup=None))]
    fn new(setup: Option<&Bound<'_, PyAny>>) -> BindingResult<Self> {
        let setup = match setup {
            Some(b) => ServerSetup::from_bytes(ReadBuf::get(b, "setup")?.as_slice())?,
            None => ServerSetup::generate()?,
        };
        Ok(OpaqueServer { setup })
    }

    /// The serialized setup: the vault's long-term secret.
    fn setup_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.setup.to_bytes())
    }

    /// The static public key that clients pin (32 bytes).
    #[getter]
    fn public_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.setup.public_key())
    }

    fn registration_response<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyAny>,
        credential_id: &Bound<'py, PyAny>,
    ) -> BindingResult<Bound<'py, PyBytes>> {
        let request = ReadBuf::get(request, "request")?;
        let id = ReadBuf::get(credential_id, "credential_id")?;
        let setup = &self.setup;
        let response =
            py.detach(|| setup.registration_response(request.as_slice(), id.as_slice()))?;
        Ok(PyBytes::new(py, &response))
    }

    /// `(response, sealed_state)`; `password_file=None` answers from a dummy record.
    #[pyo3(signature = (request, credential_id, password_file, context))]
    fn login_start<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyAny>,
        credential_id: &Bound<'py, PyAny>,
        password_file: Option<&Bound<'py, PyAny>>,
        context: &Bound<'py, PyAny>,
    ) -> BindingResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let request = ReadBuf::get(request, "request")?;
        let id = ReadBuf::get(credential_id, "credential_id")?;
        let file = password_file
            .map(|f| ReadBuf::get(f, "password_file"))
            .transpose()?;
        let context = ReadBuf::get(context, "context")?;
        let setup = &self.setup;
        let (response, state) = py.detach(|| {
            setup.login_start(
                file.as_ref().map(ReadBuf::as_slice),
                request.as_slice(),
                id.as_slice(),
                context.as_slice(),
            )
        })?;
        Ok((PyBytes::new(py, &response), PyBytes::new(py, &state)))
    }

    /// The session key (64 bytes), or `VaultLoginFailed`.
    fn login_finish<'py>(
        &self,
        py: Python<'py>,
        state: &Bound<'py, PyAny>,
        context: &Bound<'py, PyAny>,
        finalization: &Bound<'py, PyAny>,
    ) -> BindingResult<Bound<'py, PyBytes>> {
        let state = ReadBuf::get(state, "state")?;
        let context = ReadBuf::get(context, "context")?;
        let finalization = ReadBuf::get(finalization, "finalization")?;
        let setup = &self.setup;
        let key = py.detach(|| {
            setup.login_finish(
                state.as_slice(),
                context.as_slice(),
                finalization.as_slice(),
            )
        })?;
        Ok(PyBytes::new(py, key.as_slice()))
    }
}

/// The password file to store, from a client's registration upload.
#[pyfunction]
fn opaque_registration_finish<'py>(
    py: Python<'py>,
    upload: &Bound<'py, PyAny>,
) -> BindingResult<Bound<'py, PyBytes>> {
    let upload = ReadBuf::get(upload, "upload")?;
    let file = opaque::registration_finish(upload.as_slice())?;
    Ok(PyBytes::new(py, &file))
}

/// A client registration: `request` goes to the server, `finish` takes its response.
#[pyclass(module = "e2ebackup._core")]
pub struct OpaqueClientRegistration {
    state: Option<ClientRegistration>,
    request: Vec<u8>,
}

#[pymethods]
impl OpaqueClientRegistration {
    #[new]
    fn new(py: Python<'_>, password: &Bound<'_, PyAny>) -> BindingResult<Self> {
        let password = ReadBuf::get(password, "password")?;
        let (state, request) = py.detach(|| ClientRegistration::start(password.as_slice()))?;
        Ok(OpaqueClientRegistration {
            state: Some(state),
            request,
        })
    }

    #[getter]
    fn request<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.request)
    }

    /// Runs the KSF without the GIL: `(upload, export_key, server_public_key)`.
    #[pyo3(signature = (password, response, *, memory_kib=19456, iterations=2, parallelism=1))]
    fn finish<'py>(
        &mut self,
        py: Python<'py>,
        password: &Bound<'py, PyAny>,
        response: &Bound<'py, PyAny>,
        memory_kib: i64,
        iterations: i64,
        parallelism: i64,
    ) -> BindingResult<(
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
    )> {
        let params = ksf(memory_kib, iterations, parallelism)?;
        let password = ReadBuf::get(password, "password")?;
        let response = ReadBuf::get(response, "response")?;
        let state = self.state.take().ok_or_else(used)?;
        let result =
            py.detach(|| state.finish(password.as_slice(), response.as_slice(), params))?;
        Ok((
            PyBytes::new(py, &result.upload),
            PyBytes::new(py, result.export_key.as_slice()),
            PyBytes::new(py, &result.server_public_key),
        ))
    }
}

/// A client login: `request` goes to the server, `finish` takes its response.
#[pyclass(module = "e2ebackup._core")]
pub struct OpaqueClientLogin {
    state: Option<ClientLogin>,
    request: Vec<u8>,
}

#[pymethods]
impl OpaqueClientLogin {
    #[new]
    fn new(py: Python<'_>, password: &Bound<'_, PyAny>) -> BindingResult<Self> {
        let password = ReadBuf::get(password, "password")?;
        let (state, request) = py.detach(|| ClientLogin::start(password.as_slice()))?;
        Ok(OpaqueClientLogin {
            state: Some(state),
            request,
        })
    }

    #[getter]
    fn request<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.request)
    }

    /// Runs the KSF without the GIL: `(finalization, session_key, export_key,
    /// server_public_key)`, or `VaultLoginFailed`.
    #[pyo3(signature = (password, response, *, memory_kib=19456, iterations=2, parallelism=1))]
    #[allow(clippy::type_complexity)]
    fn finish<'py>(
        &mut self,
        py: Python<'py>,
        password: &Bound<'py, PyAny>,
        response: &Bound<'py, PyAny>,
        memory_kib: i64,
        iterations: i64,
        parallelism: i64,
    ) -> BindingResult<(
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
    )> {
        let params = ksf(memory_kib, iterations, parallelism)?;
        let password = ReadBuf::get(password, "password")?;
        let response = ReadBuf::get(response, "response")?;
        let state = self.state.take().ok_or_else(used)?;
        let result =
            py.detach(|| state.finish(password.as_slice(), response.as_slice(), params))?;
        Ok((
            PyBytes::new(py, &result.finalization),
            PyBytes::new(py, result.session_key.as_slice()),
            PyBytes::new(py, result.export_key.as_slice()),
            PyBytes::new(py, &result.server_public_key),
        ))
    }
}
