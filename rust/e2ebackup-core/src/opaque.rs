//! OPAQUE (RFC 9807), the asymmetric password-authenticated key exchange behind the key vault:
//! the vault learns neither the password nor anything that allows an offline guess, and the
//! client gets an *export key* that the vault never sees.
//!
//! One cipher suite, opaque-ke's standard one, so that independent implementations built on the
//! same suite interoperate: Ristretto255 for the OPRF, TripleDH over Ristretto255 with SHA-512
//! for the key exchange, and Argon2id (v1.3, 16 zero bytes of salt, 64 bytes of output) as the
//! key-stretching function (KSF). The KSF runs on the client only; its cost parameters are the
//! client's choice and must be the same at registration and at every login, so callers record
//! them with the registration. [`KsfParams::INTEROP`] are opaque-ke's `Argon2::default()`
//! parameters, used by peers that take the crate's defaults.
//!
//! Every message crosses this module serialized, as bytes. Client states live in
//! [`ClientRegistration`] and [`ClientLogin`] (zeroized on drop by opaque-ke); the server's
//! login state is sealed under a key derived from the server setup ([`ServerSetup::login_start`]),
//! so it can be stored anywhere (a database shared by several vault processes) without letting a
//! reader of that store finish the login.

use opaque_ke::errors::{InternalError, ProtocolError};
use opaque_ke::generic_array::{ArrayLength, GenericArray};
use opaque_ke::ksf::Ksf;
use opaque_ke::rand::{CryptoRng, RngCore};
use opaque_ke::{
    CipherSuite, ClientLoginFinishParameters, ClientRegistrationFinishParameters,
    CredentialFinalization, CredentialRequest, CredentialResponse, Identifiers,
    RegistrationRequest, RegistrationResponse, RegistrationUpload, Ristretto255,
    ServerLoginParameters, ServerRegistration, TripleDh,
};
use zeroize::{Zeroize, Zeroizing};

use crate::chunked::{self, Algorithm};
use crate::error::{Error, Result};
use crate::kdf::{self, Argon2Params};

/// Bytes of the server's static public key (a Ristretto255 point).
pub const PUBLIC_KEY_SIZE: usize = 32;
/// Bytes of the export key (the OPRF hash's output, SHA-512).
pub const EXPORT_KEY_SIZE: usize = 64;
/// Bytes of the session key (the key exchange hash's output, SHA-512).
pub const SESSION_KEY_SIZE: usize = 64;
/// Bytes of a serialized server setup: OPRF seed (64), private key (32), dummy public key (32).
pub const SERVER_SETUP_SIZE: usize = 128;

/// The KSF's salt, fixed by opaque-ke's Argon2 KSF: 16 zero bytes (the OPRF output it
/// stretches is already unique per password and server).
const KSF_SALT: [u8; 16] = [0; 16];
const STATE_INFO: &[u8] = b"e2ebackup/v1/vault/login-state";
const STATE_CONTEXT: &[u8] = b"e2ebackup/v1/vault/login-state\x00";

/// The KSF's Argon2id cost parameters.
pub type KsfParams = Argon2Params;

/// opaque-ke's `Argon2::default()`: 19 MiB, 2 passes, 1 lane (argon2 0.5's defaults).
pub const KSF_INTEROP: KsfParams = Argon2Params {
    memory_kib: 19 * 1024,
    iterations: 2,
    parallelism: 1,
};

/// Argon2id as OPAQUE's KSF, computed by [`kdf::argon2id`] (lanes in parallel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Ksf(pub KsfParams);

impl Default for Argon2Ksf {
    fn default() -> Self {
        Argon2Ksf(KSF_INTEROP)
    }
}

impl Ksf for Argon2Ksf {
    fn hash<L: ArrayLength<u8>>(
        &self,
        input: GenericArray<u8, L>,
    ) -> std::result::Result<GenericArray<u8, L>, InternalError> {
        let mut output = GenericArray::default();
        let result = kdf::argon2id(&input, &KSF_SALT, self.0, &[], &[], &mut output);
        let mut input = input;
        input.as_mut_slice().zeroize();
        result.map_err(|_| InternalError::KsfError)?;
        Ok(output)
    }
}

/// The cipher suite: Ristretto255 OPRF, TripleDH(Ristretto255, SHA-512), Argon2id KSF.
pub struct Suite;

impl CipherSuite for Suite {
    type OprfCs = Ristretto255;
    type KeyExchange = TripleDh<Ristretto255, sha2::Sha512>;
    type Ksf = Argon2Ksf;
}

/// The OS CSPRNG in the shape opaque-ke wants. `fill_bytes` cannot fail in that trait, so a
/// failure is remembered and every result of an operation that saw one is thrown away
/// ([`with_rng`]): nothing made from the zeros it then returns ever leaves this module.
struct OsRng {
    failed: bool,
}

impl RngCore for OsRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if crate::rand::fill(dest).is_err() {
            dest.zeroize();
            self.failed = true;
        }
    }

    fn try_fill_bytes(
        &mut self,
        dest: &mut [u8],
    ) -> std::result::Result<(), opaque_ke::rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for OsRng {}

fn with_rng<T>(f: impl FnOnce(&mut OsRng) -> Result<T>) -> Result<T> {
    let mut rng = OsRng { failed: false };
    let result = f(&mut rng);
    if rng.failed {
        return Err(Error::Rng);
    }
    result
}

/// Maps opaque-ke's errors: a failed login is [`Error::VaultLoginFailed`], a message that does
/// not parse is [`Error::VaultProtocol`] naming what was being read.
fn protocol<T>(what: &str) -> impl FnOnce(ProtocolError<T>) -> Error + '_ {
    move |e| match e {
        ProtocolError::InvalidLoginError => Error::VaultLoginFailed,
        ProtocolError::LibraryError(InternalError::KsfError) => {
            Error::VaultProtocol("the key-stretching function failed".into())
        }
        ProtocolError::ReflectedValueError => Error::VaultProtocol(format!(
            "{what}: the server reflected the client's OPRF value"
        )),
        _ => Error::VaultProtocol(format!("{what} is malformed")),
    }
}

fn copy_key<const N: usize>(src: &mut [u8]) -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    out.copy_from_slice(src);
    src.zeroize();
    out
}

fn public_key_bytes(pk: &opaque_ke::keypair::PublicKey<Ristretto255>) -> [u8; PUBLIC_KEY_SIZE] {
    let mut out = [0u8; PUBLIC_KEY_SIZE];
    out.copy_from_slice(&pk.serialize());
    out
}

fn ksf(params: KsfParams) -> Result<Argon2Ksf> {
    params.check()?;
    Ok(Argon2Ksf(params))
}

// -- server -------------------------------------------------------------------------------------

/// The server's long-term secret: the OPRF seed, the static key pair and the dummy record's
/// public key. Whoever holds it (and a record) can run offline guesses against that record; it
/// never leaves the vault's key file.
pub struct ServerSetup {
    inner: opaque_ke::ServerSetup<Suite>,
    state_key: Zeroizing<[u8; 32]>,
}

impl ServerSetup {
    /// A new random setup.
    pub fn generate() -> Result<Self> {
        let inner = with_rng(|rng| Ok(opaque_ke::ServerSetup::<Suite>::new(rng)))?;
        Self::wrap(inner)
    }

    /// A setup from [`ServerSetup::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != SERVER_SETUP_SIZE {
            return Err(Error::VaultProtocol(format!(
                "a server setup is {SERVER_SETUP_SIZE} bytes, got {}",
                bytes.len()
            )));
        }
        let inner = opaque_ke::ServerSetup::<Suite>::deserialize(bytes)
            .map_err(protocol("the server setup"))?;
        Self::wrap(inner)
    }

    fn wrap(inner: opaque_ke::ServerSetup<Suite>) -> Result<Self> {
        let mut serialized = inner.serialize();
        let mut state_key = Zeroizing::new([0u8; 32]);
        let derived = kdf::hkdf_sha256(&serialized, &[], STATE_INFO, state_key.as_mut_slice());
        serialized.as_mut_slice().zeroize();
        derived?;
        Ok(ServerSetup { inner, state_key })
    }

    /// The serialized setup ([`SERVER_SETUP_SIZE`] bytes): secret.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut serialized = self.inner.serialize();
        let out = Zeroizing::new(serialized.to_vec());
        serialized.as_mut_slice().zeroize();
        out
    }

    /// The static public key that clients pin.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_SIZE] {
        public_key_bytes(self.inner.keypair().public())
    }

    /// Registration, server side: the response to a client's registration request for the
    /// record `credential_id`. Stateless.
    pub fn registration_response(&self, request: &[u8], credential_id: &[u8]) -> Result<Vec<u8>> {
        let request = RegistrationRequest::<Suite>::deserialize(request)
            .map_err(protocol("the registration request"))?;
        let result = ServerRegistration::<Suite>::start(&self.inner, request, credential_id)
            .map_err(protocol("the registration request"))?;
        Ok(result.message.serialize().to_vec())
    }

    /// Login, server side: the credential response for `credential_id`, and the server's state,
    /// sealed under a key derived from this setup and bound to `context` (say the login's and
    /// the record's ids). With `password_file` `None` (no such record), the response comes
    /// from a dummy record and looks like a real one; the login then always fails.
    pub fn login_start(
        &self,
        password_file: Option<&[u8]>,
        request: &[u8],
        credential_id: &[u8],
        context: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let request = CredentialRequest::<Suite>::deserialize(request)
            .map_err(protocol("the credential request"))?;
        let file = password_file
            .map(|f| {
                ServerRegistration::<Suite>::deserialize(f).map_err(protocol("the password file"))
            })
            .transpose()?;
        let result = with_rng(|rng| {
            opaque_ke::ServerLogin::start(
                rng,
                &self.inner,
                file,
                request,
                credential_id,
                ServerLoginParameters::default(),
            )
            .map_err(protocol("the credential request"))
        })?;
        let response = result.message.serialize().to_vec();
        let mut state = result.state.serialize();
        let sealed = self.seal_state(&state, context);
        state.as_mut_slice().zeroize();
        Ok((response, sealed?))
    }

    /// Login, server side: checks the client's finalization against the sealed state from
    /// [`ServerSetup::login_start`]. The session key on success; [`Error::VaultLoginFailed`]
    /// for a wrong password, an unknown record or a state sealed for another `context`.
    pub fn login_finish(
        &self,
        sealed_state: &[u8],
        context: &[u8],
        finalization: &[u8],
    ) -> Result<Zeroizing<[u8; SESSION_KEY_SIZE]>> {
        let finalization = CredentialFinalization::<Suite>::deserialize(finalization)
            .map_err(protocol("the credential finalization"))?;
        let state = self.open_state(sealed_state, context)?;
        let state = opaque_ke::ServerLogin::<Suite>::deserialize(&state)
            .map_err(protocol("the login state"))?;
        let mut result = state
            .finish(finalization, ServerLoginParameters::default())
            .map_err(protocol("the credential finalization"))?;
        Ok(copy_key(&mut result.session_key))
    }

    fn seal_state(&self, state: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        let ctx = [STATE_CONTEXT, context].concat();
        let len = usize::try_from(chunked::ciphertext_len(state.len() as u64)?)
            .map_err(|_| Error::MessageTooLong)?;
        let mut out = vec![0u8; len];
        chunked::encrypt_into(
            self.state_key.as_slice(),
            Algorithm::Aes256Gcm,
            &ctx,
            state,
            &mut out,
            1,
        )?;
        Ok(out)
    }

    fn open_state(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let ctx = [STATE_CONTEXT, context].concat();
        let len =
            chunked::plaintext_len(sealed.len() as u64).map_err(|_| Error::VaultLoginFailed)?;
        let len = usize::try_from(len).map_err(|_| Error::VaultLoginFailed)?;
        let mut out = Zeroizing::new(vec![0u8; len]);
        chunked::decrypt_into(
            self.state_key.as_slice(),
            Algorithm::Aes256Gcm,
            &ctx,
            sealed,
            &mut out,
            1,
        )
        .map_err(|_| Error::VaultLoginFailed)?;
        Ok(out)
    }
}

/// Registration, server side, last step: the password file to store, from the client's upload.
/// Stateless; the file holds no secret that allows guessing without the server setup.
pub fn registration_finish(upload: &[u8]) -> Result<Vec<u8>> {
    let upload = RegistrationUpload::<Suite>::deserialize(upload)
        .map_err(protocol("the registration upload"))?;
    Ok(ServerRegistration::<Suite>::finish(upload)
        .serialize()
        .to_vec())
}

// -- client -------------------------------------------------------------------------------------

/// What a client has after registering: the upload for the server, the export key and the
/// server's static public key (to compare with a pinned one before uploading anything).
pub struct RegistrationResult {
    pub upload: Vec<u8>,
    pub export_key: Zeroizing<[u8; EXPORT_KEY_SIZE]>,
    pub server_public_key: [u8; PUBLIC_KEY_SIZE],
}

/// What a client has after a login the server's answer vouched for: the finalization for the
/// server, the session key it shares with the server, the export key and the server's static
/// public key as recorded at registration.
pub struct LoginResult {
    pub finalization: Vec<u8>,
    pub session_key: Zeroizing<[u8; SESSION_KEY_SIZE]>,
    pub export_key: Zeroizing<[u8; EXPORT_KEY_SIZE]>,
    pub server_public_key: [u8; PUBLIC_KEY_SIZE],
}

/// A registration in progress, client side (blinding state; zeroized on drop).
pub struct ClientRegistration(opaque_ke::ClientRegistration<Suite>);

impl ClientRegistration {
    /// The registration request for the server, and the state to finish with.
    pub fn start(password: &[u8]) -> Result<(Self, Vec<u8>)> {
        let result = with_rng(|rng| {
            opaque_ke::ClientRegistration::<Suite>::start(rng, password)
                .map_err(protocol("the password"))
        })?;
        Ok((Self(result.state), result.message.serialize().to_vec()))
    }

    /// Runs the KSF (the slow part) and seals the envelope: the upload, the export key and the
    /// server's public key. `password` and `ksf` must be those of every later login.
    pub fn finish(
        self,
        password: &[u8],
        response: &[u8],
        ksf_params: KsfParams,
    ) -> Result<RegistrationResult> {
        let ksf = ksf(ksf_params)?;
        let response = RegistrationResponse::<Suite>::deserialize(response)
            .map_err(protocol("the registration response"))?;
        let mut result = with_rng(|rng| {
            self.0
                .finish(
                    rng,
                    password,
                    response,
                    ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
                )
                .map_err(protocol("the registration response"))
        })?;
        Ok(RegistrationResult {
            upload: result.message.serialize().to_vec(),
            export_key: copy_key(&mut result.export_key),
            server_public_key: public_key_bytes(&result.server_s_pk),
        })
    }
}

/// A login in progress, client side (blinding and key-exchange state; zeroized on drop).
pub struct ClientLogin(opaque_ke::ClientLogin<Suite>);

impl ClientLogin {
    /// The credential request for the server, and the state to finish with.
    pub fn start(password: &[u8]) -> Result<(Self, Vec<u8>)> {
        let result = with_rng(|rng| {
            opaque_ke::ClientLogin::<Suite>::start(rng, password).map_err(protocol("the password"))
        })?;
        Ok((Self(result.state), result.message.serialize().to_vec()))
    }

    /// Runs the KSF and opens the envelope. [`Error::VaultLoginFailed`] for a wrong password,
    /// a server without this record, or a server that is not the one of the registration.
    pub fn finish(
        self,
        password: &[u8],
        response: &[u8],
        ksf_params: KsfParams,
    ) -> Result<LoginResult> {
        let ksf = ksf(ksf_params)?;
        let response = CredentialResponse::<Suite>::deserialize(response)
            .map_err(protocol("the credential response"))?;
        let mut result = with_rng(|rng| {
            self.0
                .finish(
                    rng,
                    password,
                    response,
                    ClientLoginFinishParameters::new(None, Identifiers::default(), Some(&ksf)),
                )
                .map_err(protocol("the credential response"))
        })?;
        Ok(LoginResult {
            finalization: result.message.serialize().to_vec(),
            session_key: copy_key(&mut result.session_key),
            export_key: copy_key(&mut result.export_key),
            server_public_key: public_key_bytes(&result.server_s_pk),
        })
    }
}
