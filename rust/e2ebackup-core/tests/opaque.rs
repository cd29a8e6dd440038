//! OPAQUE through the serialized API: registration, login, the export key, failures.

use e2ebackup_core::opaque::{
    self, ClientLogin, ClientRegistration, KsfParams, ServerSetup, EXPORT_KEY_SIZE, KSF_INTEROP,
    PUBLIC_KEY_SIZE, SERVER_SETUP_SIZE,
};
use e2ebackup_core::Error;

/// Cheap KSF parameters: these tests are about the protocol, not about Argon2.
const FAST: KsfParams = KsfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};
const ID: &[u8] = b"record-0001";

fn register(setup: &ServerSetup, password: &[u8], ksf: KsfParams) -> (Vec<u8>, [u8; 64]) {
    let (state, request) = ClientRegistration::start(password).unwrap();
    let response = setup.registration_response(&request, ID).unwrap();
    let result = state.finish(password, &response, ksf).unwrap();
    assert_eq!(result.server_public_key, setup.public_key());
    let file = opaque::registration_finish(&result.upload).unwrap();
    (file, *result.export_key)
}

fn login(
    setup: &ServerSetup,
    file: Option<&[u8]>,
    password: &[u8],
    ksf: KsfParams,
) -> Result<([u8; 64], [u8; 64]), Error> {
    let (state, request) = ClientLogin::start(password).unwrap();
    let (response, sealed) = setup.login_start(file, &request, ID, b"login-1").unwrap();
    let result = state.finish(password, &response, ksf)?;
    assert_eq!(result.server_public_key, setup.public_key());
    let server_key = setup
        .login_finish(&sealed, b"login-1", &result.finalization)
        .unwrap();
    assert_eq!(*server_key, *result.session_key);
    Ok((*result.export_key, *result.session_key))
}

#[test]
fn register_then_login_gives_the_same_export_key() {
    let setup = ServerSetup::generate().unwrap();
    let (file, export) = register(&setup, b"correct horse", FAST);
    assert_eq!(export.len(), EXPORT_KEY_SIZE);
    let (export2, session) = login(&setup, Some(&file), b"correct horse", FAST).unwrap();
    assert_eq!(export, export2);
    let (_, session2) = login(&setup, Some(&file), b"correct horse", FAST).unwrap();
    assert_ne!(session, session2, "every login has its own session key");
}

#[test]
fn interop_ksf_parameters_work() {
    let setup = ServerSetup::generate().unwrap();
    let (file, export) = register(&setup, b"pw", KSF_INTEROP);
    let (export2, _) = login(&setup, Some(&file), b"pw", KSF_INTEROP).unwrap();
    assert_eq!(export, export2);
}

#[test]
fn wrong_password_or_ksf_fails_on_the_client() {
    let setup = ServerSetup::generate().unwrap();
    let (file, _) = register(&setup, b"right", FAST);
    assert_eq!(
        login(&setup, Some(&file), b"wrong", FAST).unwrap_err(),
        Error::VaultLoginFailed
    );
    let other = KsfParams {
        iterations: 2,
        ..FAST
    };
    assert_eq!(
        login(&setup, Some(&file), b"right", other).unwrap_err(),
        Error::VaultLoginFailed
    );
}

#[test]
fn unknown_record_answers_like_a_real_one_and_fails() {
    let setup = ServerSetup::generate().unwrap();
    let (file, _) = register(&setup, b"pw", FAST);
    let (_, request) = ClientLogin::start(b"pw").unwrap();
    let (real, _) = setup.login_start(Some(&file), &request, ID, b"c").unwrap();
    let (dummy, _) = setup.login_start(None, &request, ID, b"c").unwrap();
    assert_eq!(real.len(), dummy.len());
    assert_eq!(
        login(&setup, None, b"pw", FAST).unwrap_err(),
        Error::VaultLoginFailed
    );
}

#[test]
fn another_server_cannot_complete_the_login() {
    let setup = ServerSetup::generate().unwrap();
    let impostor = ServerSetup::generate().unwrap();
    let (file, _) = register(&setup, b"pw", FAST);
    // The impostor holds a stolen password file but not the setup: the envelope does not open.
    assert_eq!(
        login(&impostor, Some(&file), b"pw", FAST).unwrap_err(),
        Error::VaultLoginFailed
    );
}

#[test]
fn server_state_is_bound_to_its_context_and_finalization_is_checked() {
    let setup = ServerSetup::generate().unwrap();
    let (file, _) = register(&setup, b"pw", FAST);
    let (state, request) = ClientLogin::start(b"pw").unwrap();
    let (response, sealed) = setup
        .login_start(Some(&file), &request, ID, b"ctx")
        .unwrap();
    let result = state.finish(b"pw", &response, FAST).unwrap();
    assert_eq!(
        setup
            .login_finish(&sealed, b"other", &result.finalization)
            .unwrap_err(),
        Error::VaultLoginFailed
    );
    let mut bad = result.finalization.clone();
    bad[0] ^= 1;
    assert_eq!(
        setup.login_finish(&sealed, b"ctx", &bad).unwrap_err(),
        Error::VaultLoginFailed
    );
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(setup
        .login_finish(&tampered, b"ctx", &result.finalization)
        .is_err());
    assert!(setup
        .login_finish(&sealed, b"ctx", &result.finalization)
        .is_ok());
    // A state sealed by another setup does not open.
    let other = ServerSetup::generate().unwrap();
    assert!(other
        .login_finish(&sealed, b"ctx", &result.finalization)
        .is_err());
}

#[test]
fn setup_round_trips_and_malformed_input_is_a_typed_error() {
    let setup = ServerSetup::generate().unwrap();
    let bytes = setup.to_bytes();
    assert_eq!(bytes.len(), SERVER_SETUP_SIZE);
    let again = ServerSetup::from_bytes(&bytes).unwrap();
    assert_eq!(again.public_key(), setup.public_key());
    assert_eq!(setup.public_key().len(), PUBLIC_KEY_SIZE);
    let (file, export) = register(&setup, b"pw", FAST);
    assert_eq!(login(&again, Some(&file), b"pw", FAST).unwrap().0, export);

    assert!(matches!(
        ServerSetup::from_bytes(&bytes[..10]),
        Err(Error::VaultProtocol(_))
    ));
    assert!(matches!(
        setup.registration_response(&[1, 2, 3], ID),
        Err(Error::VaultProtocol(_))
    ));
    assert!(matches!(
        opaque::registration_finish(&[0; 7]),
        Err(Error::VaultProtocol(_))
    ));
    let (_, request) = ClientLogin::start(b"pw").unwrap();
    assert!(matches!(
        setup.login_start(Some(&[9; 5]), &request, ID, b""),
        Err(Error::VaultProtocol(_))
    ));
    let (state, _) = ClientLogin::start(b"pw").unwrap();
    assert!(matches!(
        state.finish(b"pw", &[0; 3], FAST),
        Err(Error::VaultProtocol(_))
    ));
    let (state, request) = ClientRegistration::start(b"pw").unwrap();
    let response = setup.registration_response(&request, ID).unwrap();
    let weak = KsfParams {
        memory_kib: 1,
        ..FAST
    };
    assert!(matches!(
        state.finish(b"pw", &response, weak),
        Err(Error::KdfLimit(_))
    ));
}
