//! kubectl / client-go exec credential plugins (`users[].user.exec.command: credence`,
//! `args: [kubectl]`, optionally `--server URL`): the request is `KUBERNETES_EXEC_INFO`,
//! the answer an `ExecCredential` with `status.token` and `expirationTimestamp`.

use super::{Tool, check_value, request, rfc3339};
use crate::request::{CredentialRequest, Protocol};
use serde::Deserialize;
use std::process::ExitCode;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredential {
    api_version: String,
    kind: String,
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default)]
    interactive: bool,
    cluster: Option<Cluster>,
}

#[derive(Deserialize)]
struct Cluster {
    server: String,
}

const VERSIONS: &[&str] = &[
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

fn fail(message: &str) -> ExitCode {
    eprintln!("credence: {message}");
    ExitCode::from(1)
}

/// What kubectl asked for, and the `apiVersion` the answer must carry.
pub struct KubectlRequest {
    pub request: CredentialRequest,
    pub api_version: String,
}

/// `KUBERNETES_EXEC_INFO` (and a `--server URL` in the exec args) as the internal request.
pub fn parse_request(info: &str, args: &[String]) -> Result<KubectlRequest, String> {
    let exec: ExecCredential =
        serde_json::from_str(info).map_err(|e| format!("KUBERNETES_EXEC_INFO is not an ExecCredential: {e}"))?;
    if exec.kind != "ExecCredential" || !VERSIONS.contains(&exec.api_version.as_str()) {
        return Err(format!("unsupported {} {}", exec.kind, exec.api_version));
    }
    let flag_server = args.windows(2).find(|w| w[0] == "--server").map(|w| w[1].clone());
    let Some(server) = flag_server.or(exec.spec.cluster.map(|c| c.server)) else {
        return Err(
            "no cluster server URL: set `provideClusterInfo: true` or pass `--server URL` in the exec args".into(),
        );
    };
    check_value("server", &server)?;
    let mut request = request(&server, Protocol::Kubectl, "get")?;
    request.interactive = exec.spec.interactive;
    Ok(KubectlRequest {
        request,
        api_version: exec.api_version,
    })
}

pub fn run(args: &[String], mut tool: Tool) -> ExitCode {
    let info = match tool.var("KUBERNETES_EXEC_INFO") {
        Some(i) if i.len() <= super::MAX_INPUT => i,
        Some(_) => return fail("KUBERNETES_EXEC_INFO is too large"),
        None => return fail("KUBERNETES_EXEC_INFO is not set; run credence from a kubeconfig `exec` entry"),
    };
    let KubectlRequest {
        request: req,
        api_version,
    } = match parse_request(&info, args) {
        Ok(k) => k,
        Err(e) => return fail(&e),
    };
    let answer = match tool
        .resolver()
        .and_then(|r| r.resolve(&req, tool.prompts()).map_err(|e| e.to_string()))
    {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let token = super::authorization(&answer.credential)
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
        .unwrap_or_else(|| answer.credential.secret.expose().clone());
    let mut status = serde_json::json!({ "token": token });
    if let Some(t) = answer.credential.expires_at {
        status["expirationTimestamp"] = rfc3339(t).into();
    }
    let out = serde_json::json!({ "apiVersion": api_version, "kind": "ExecCredential", "status": status });
    if !tool.answer(format!("{out}\n").as_bytes()) {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
