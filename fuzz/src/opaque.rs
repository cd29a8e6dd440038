//! OPAQUE messages (rust/e2ebackup-core/src/opaque.rs): every message a vault or a client
//! receives is parsed from attacker-chosen bytes, and login steps run on garbage. Any failure is
//! `VaultProtocol` or `VaultLoginFailed`; an honest run agrees on its keys; a flipped bit in any
//! message of a login makes it fail.

use std::sync::OnceLock;

use e2ebackup_core::opaque::{
    registration_finish, ClientLogin, ClientRegistration, KsfParams, ServerSetup,
};
use e2ebackup_core::Error;

use crate::input::Input;

/// The cheapest KSF the limits allow: the fuzzer is after parsing, not Argon2.
const KSF: KsfParams = KsfParams {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

/// A fixed, valid server setup: OPRF seed, private key 1, and the Ristretto255 base point as
/// the dummy record's public key. Fixed so that the server side is deterministic.
fn server() -> &'static ServerSetup {
    static SETUP: OnceLock<ServerSetup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let mut bytes = vec![7u8; 64];
        let mut private = [0u8; 32];
        private[0] = 1;
        bytes.extend_from_slice(&private);
        bytes.extend_from_slice(&RISTRETTO_BASEPOINT);
        ServerSetup::from_bytes(&bytes).expect("the fixed server setup is valid")
    })
}

const RISTRETTO_BASEPOINT: [u8; 32] = [
    0xe2, 0xf2, 0xae, 0x0a, 0x6a, 0xbc, 0x4e, 0x71, 0xa8, 0x84, 0xa9, 0x61, 0xc5, 0x00, 0x51, 0x5f,
    0x58, 0xe3, 0x0b, 0x6a, 0xa5, 0x82, 0xdd, 0x8d, 0xb6, 0xa6, 0x59, 0x45, 0xe0, 0x8d, 0x2d, 0x76,
];

fn refused<T>(result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(Error::VaultProtocol(_) | Error::VaultLoginFailed) => None,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

/// A length-prefixed field: one length byte, then that many bytes.
fn field<'a>(input: &mut Input<'a>) -> &'a [u8] {
    let n = usize::from(input.u8());
    input.bytes(n)
}

pub fn opaque_messages(data: &[u8]) {
    let server = server();
    let mut input = Input::new(data);
    let mode = input.u8();
    let credential_id = field(&mut input).to_vec();
    match mode % 8 {
        0 => {
            let setup = refused(ServerSetup::from_bytes(input.rest()));
            if let Some(setup) = setup {
                assert_eq!(&setup.to_bytes()[..], &data[data.len() - 128..]);
            }
        }
        1 => {
            let _ = refused(server.registration_response(input.rest(), &credential_id));
        }
        2 => {
            let file = field(&mut input).to_vec();
            let context = field(&mut input).to_vec();
            let with_file = mode & 8 != 0;
            let request = input.rest();
            let password_file = with_file.then_some(&file[..]);
            let _ = refused(server.login_start(password_file, request, &credential_id, &context));
        }
        3 => {
            let state = field(&mut input).to_vec();
            let context = field(&mut input).to_vec();
            let finalization = input.rest();
            let session = refused(server.login_finish(&state, &context, finalization));
            assert!(session.is_none(), "a login finished from garbage");
        }
        4 => {
            let _ = refused(registration_finish(input.rest()));
        }
        5 => {
            let password = field(&mut input).to_vec();
            let (client, _) = ClientRegistration::start(&password).expect("start");
            let _ = refused(client.finish(&password, input.rest(), KSF));
        }
        6 => {
            let password = field(&mut input).to_vec();
            let (client, _) = ClientLogin::start(&password).expect("start");
            let login = refused(client.finish(&password, input.rest(), KSF));
            assert!(login.is_none(), "a client login finished on garbage");
        }
        _ => honest_run(server, &credential_id, &mut input),
    }
}

/// Registration and login with the input's passwords; then the same login with one bit of one
/// message flipped.
fn honest_run(server: &ServerSetup, credential_id: &[u8], input: &mut Input<'_>) {
    let password = field(input).to_vec();
    let guess = field(input).to_vec();
    let (which, flip) = (input.u8() % 4, input.u16());

    let (client, request) = ClientRegistration::start(&password).expect("start");
    let response = server
        .registration_response(&request, credential_id)
        .expect("response");
    let registered = client
        .finish(&password, &response, KSF)
        .expect("registration");
    assert_eq!(registered.server_public_key, server.public_key());
    let file = registration_finish(&registered.upload).expect("upload");

    let login = |tamper: Option<(u8, u16)>, password: &[u8]| -> Result<[u8; 64], Error> {
        let bend = |step: u8, mut message: Vec<u8>| {
            if let Some((_, flip)) = tamper.filter(|t| t.0 == step) {
                let at = usize::from(flip) % (message.len() * 8);
                message[at / 8] ^= 1 << (at % 8);
            }
            message
        };
        let (client, request) = ClientLogin::start(password).expect("start");
        let request = bend(0, request);
        let (response, state) = server.login_start(Some(&file), &request, credential_id, b"ctx")?;
        let state = bend(1, state);
        let response = bend(2, response);
        let result = client.finish(password, &response, KSF)?;
        let finalization = bend(3, result.finalization.clone());
        let session = server.login_finish(&state, b"ctx", &finalization)?;
        assert_eq!(
            *session, *result.session_key,
            "the two sides disagree on the session key"
        );
        assert_eq!(
            *result.export_key, *registered.export_key,
            "another export key"
        );
        Ok(*result.export_key)
    };
    login(None, &password).expect("an honest login succeeds");
    let tampered = login(Some((which, flip)), &password);
    assert!(
        refused(tampered).is_none(),
        "a login with a flipped bit (message {which}) passed"
    );
    if guess != password {
        assert!(
            refused(login(None, &guess)).is_none(),
            "a wrong password logged in"
        );
    }
}
