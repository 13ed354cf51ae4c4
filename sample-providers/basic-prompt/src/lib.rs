//! Asks the user for a user name and password on the terminal, through credence's
//! `prompt` capability (the provider never sees the terminal itself).

wit_bindgen::generate!({ path: "../../wit/v0.1", world: "provider" });

use credence::provider::prompt::{self, InputKind, PromptError};
use exports::credence::provider::credential_provider::{
    CachePolicy, Credential, CredentialError, CredentialRequest, Guest,
};

struct BasicPrompt;

fn ask(message: &str, kind: InputKind) -> Result<String, CredentialError> {
    prompt::ask(message, kind).map_err(|e| match e {
        PromptError::NotInteractive => CredentialError::NeedsInteraction(
            "basic-prompt asks for a user name and password; run the tool interactively".into(),
        ),
        PromptError::Cancelled => CredentialError::Denied("the user cancelled the prompt".into()),
        PromptError::Unavailable(why) => CredentialError::Failed(format!("cannot prompt: {why}")),
    })
}

impl Guest for BasicPrompt {
    fn get_credential(req: CredentialRequest) -> Result<Credential, CredentialError> {
        if !req.interactive {
            return Err(CredentialError::NeedsInteraction(
                "basic-prompt asks for a user name and password; run the tool interactively".into(),
            ));
        }
        let retry = if req.is_retry { " (the last one was refused)" } else { "" };
        let username = match &req.username_hint {
            Some(user) => user.clone(),
            None => ask(&format!("User name for {}{retry}", req.url), InputKind::Text)?,
        };
        let password = ask(&format!("Password for {username} at {}{retry}", req.url), InputKind::Secret)?;
        Ok(Credential {
            username: Some(username),
            secret: password,
            headers: Vec::new(),
            expires_at: None,
            cache: CachePolicy::Session,
            new_state: None,
        })
    }
}

export!(BasicPrompt);
