//! Trades the CI job's identity token (`workload-identity`, e.g. GitHub Actions OIDC) for a
//! registry token at the registry's trusted-publishing exchange: a fleet of CI jobs gets
//! short-lived registry tokens with no stored secret and no credence server.
//!
//! Settings: `exchange-url` (required: POST `{"jwt": "<id token>"}`, answered with
//! `{"token": "...", "expires_in": N}`), `audience` (required: the audience the registry
//! expects, granted to the instance with `grant-id-token`), `username` (optional).

use credence_provider::http::{json, post_json};
use credence_provider::{Credential, Error, Host, Provider, Request, Result};

struct CiExchange;

#[derive(serde::Deserialize)]
struct Exchanged {
    token: String,
    expires_in: Option<u64>,
}

impl Provider for CiExchange {
    fn get_credential(req: &Request, host: &mut dyn Host) -> Result<Credential> {
        let asked_at = host.now();
        let jwt = host.id_token(req.setting("audience")?)?;
        let response = post_json(host, req.setting("exchange-url")?, &serde_json::json!({ "jwt": jwt }), &[])?;
        if response.status != 200 {
            return Err(Error::denied(format!("the exchange refused the job's identity (HTTP {})", response.status)));
        }
        let exchanged: Exchanged = json(&response)?;
        Ok(Credential::bearer(&exchanged.token)
            .with_username(req.optional_setting("username"))
            .expiring(exchanged.expires_in.map(|s| asked_at + s)))
    }
}

credence_provider::provider!(CiExchange);
