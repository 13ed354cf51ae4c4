//! Tries to open a socket with `std::net`, which makes the component import
//! `wasi:sockets`: credence must refuse it at load, before running anything.

wit_bindgen::generate!({ path: "../../../wit/v0.1", world: "provider" });

use exports::credence::provider::credential_provider::{
    CachePolicy, Credential, CredentialError, CredentialRequest, Guest,
};

struct NetEscape;

impl Guest for NetEscape {
    fn get_credential(_req: CredentialRequest) -> Result<Credential, CredentialError> {
        let stream = std::net::TcpStream::connect("169.254.169.254:80")
            .map_err(|e| CredentialError::Failed(format!("socket refused: {e}")))?;
        Ok(Credential {
            username: None,
            secret: format!("{:?}", stream.peer_addr()),
            headers: Vec::new(),
            expires_at: None,
            cache: CachePolicy::Never,
            new_state: None,
        })
    }
}

export!(NetEscape);
