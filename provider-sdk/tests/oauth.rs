//! The OAuth helpers against the mock host: RFC 8628 polling, PKCE exchange, refresh with
//! rotation.

use credence_provider::mock::MockHost;
use credence_provider::oauth::{Client, SignIn};
use credence_provider::{CachePolicy, Error, Request};

const TOKEN: &str = "https://login.example/token";
const DEVICE: &str = "https://login.example/device";

fn client() -> Client<'static> {
    Client {
        token_endpoint: TOKEN,
        client_id: "cli",
        client_secret: None,
        scope: Some("repo"),
    }
}

fn device() -> SignIn<'static> {
    SignIn::Device {
        device_endpoint: DEVICE,
    }
}

const DEVICE_ANSWER: &str = r#"{"device_code":"dc","user_code":"ABCD-1234","verification_uri":"https://login.example/activate","expires_in":900,"interval":5}"#;

#[test]
fn device_flow_polls_at_the_interval_and_slows_down_by_five_seconds() {
    let mut host = MockHost::new();
    host.respond("POST", DEVICE, 200, DEVICE_ANSWER)
        .respond("POST", TOKEN, 400, r#"{"error":"authorization_pending"}"#)
        .respond("POST", TOKEN, 200, r#"{"error":"authorization_pending"}"#)
        .respond("POST", TOKEN, 400, r#"{"error":"slow_down"}"#)
        .respond(
            "POST",
            TOKEN,
            200,
            r#"{"access_token":"at-1","expires_in":3600,"refresh_token":"rt-1"}"#,
        );
    let req = Request::for_url("https://git.example/repo.git");
    let started = host.now;
    let c = client().credential(&mut host, &req, &device(), "oauth2").unwrap();
    assert_eq!(host.waits, vec![5000, 5000, 5000, 10000]);
    assert_eq!(host.device_codes.len(), 1, "the code is shown once");
    assert_eq!(host.device_codes[0].user_code, "ABCD-1234");
    assert_eq!(host.dismissed, 1);
    assert_eq!(c.secret, "at-1");
    assert_eq!(c.headers, vec![("Authorization".to_owned(), "Bearer at-1".to_owned())]);
    assert_eq!(c.cache, CachePolicy::UntilExpiry);
    // Counted from before the sign-in, never overestimated.
    assert!(c.expires_at.unwrap() <= host.now + 3600 && c.expires_at.unwrap() >= started + 3600);
    let state = String::from_utf8(c.new_state.unwrap()).unwrap();
    assert!(state.contains("rt-1") && !state.contains("at-1"), "{state}");
    let poll = host.form_of(1);
    assert!(poll.contains(&(
        "grant_type".into(),
        "urn:ietf:params:oauth:grant-type:device_code".into()
    )));
    assert!(poll.contains(&("device_code".into(), "dc".into())));
    assert!(poll.contains(&("client_id".into(), "cli".into())));
    assert!(host.script_done());
}

#[test]
fn an_expired_device_code_is_a_clear_denial() {
    let mut host = MockHost::new();
    host.respond("POST", DEVICE, 200, DEVICE_ANSWER)
        .respond("POST", TOKEN, 400, r#"{"error":"expired_token"}"#);
    let err = client()
        .credential(
            &mut host,
            &Request::for_url("https://git.example/"),
            &device(),
            "oauth2",
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Denied(m) if m.contains("expired") && m.contains("run the command again")),
        "{err}"
    );
    assert_eq!(host.dismissed, 1);
}

#[test]
fn access_denied_ends_the_device_flow() {
    let mut host = MockHost::new();
    host.respond("POST", DEVICE, 200, DEVICE_ANSWER)
        .respond("POST", TOKEN, 400, r#"{"error":"access_denied"}"#);
    let err = client()
        .credential(
            &mut host,
            &Request::for_url("https://git.example/"),
            &device(),
            "oauth2",
        )
        .unwrap_err();
    assert!(matches!(err, Error::Denied(_)));
}

#[test]
fn a_non_interactive_request_never_calls_the_device_endpoint() {
    let mut host = MockHost::new();
    let req = Request::for_url("https://git.example/").non_interactive();
    let err = client().credential(&mut host, &req, &device(), "oauth2").unwrap_err();
    assert!(matches!(err, Error::NeedsInteraction(_)));
    assert!(host.requests.is_empty());
}

#[test]
fn a_kept_refresh_token_is_used_once_and_replaced_by_the_rotated_one() {
    let mut host = MockHost::new();
    host.respond(
        "POST",
        TOKEN,
        200,
        r#"{"access_token":"at-2","expires_in":60,"refresh_token":"rt-2"}"#,
    );
    let req = Request::for_url("https://git.example/").with_state(Some(br#"{"refresh_token":"rt-1"}"#.to_vec()));
    let c = client().credential(&mut host, &req, &device(), "oauth2").unwrap();
    assert_eq!(c.secret, "at-2");
    let form = host.form_of(0);
    assert!(form.contains(&("grant_type".into(), "refresh_token".into())));
    assert!(form.contains(&("refresh_token".into(), "rt-1".into())));
    assert!(host.device_codes.is_empty(), "no prompt for a refresh");
    assert_eq!(c.new_state.unwrap(), br#"{"refresh_token":"rt-2"}"#.to_vec());
}

#[test]
fn a_refused_refresh_token_signs_in_again() {
    let mut host = MockHost::new();
    host.respond("POST", TOKEN, 400, r#"{"error":"invalid_grant"}"#)
        .respond("POST", DEVICE, 200, DEVICE_ANSWER)
        .respond("POST", TOKEN, 200, r#"{"access_token":"at-3","refresh_token":"rt-3"}"#);
    let req = Request::for_url("https://git.example/").with_state(Some(br#"{"refresh_token":"old"}"#.to_vec()));
    let c = client().credential(&mut host, &req, &device(), "oauth2").unwrap();
    assert_eq!(c.secret, "at-3");
    assert!(host.script_done());
}

#[test]
fn the_code_is_exchanged_with_the_verifier_and_the_same_redirect_uri() {
    let mut host = MockHost::new();
    host.authorize_with("the-code")
        .respond("POST", TOKEN, 200, r#"{"access_token":"at-4","expires_in":300}"#);
    let sign_in = SignIn::AuthorizationCode {
        authorization_endpoint: "https://login.example/authorize",
        redirect_path: "/callback",
        expected_issuer: Some("https://login.example"),
        params: vec![("prompt", "select_account")],
    };
    let c = client()
        .credential(&mut host, &Request::for_url("https://git.example/"), &sign_in, "oauth2")
        .unwrap();
    assert_eq!(c.secret, "at-4");
    let asked = &host.authorize_requests[0];
    assert!(asked.params.contains(&("client_id".into(), "cli".into())));
    assert!(asked.params.contains(&("prompt".into(), "select_account".into())));
    assert!(!asked.params.iter().any(|(k, _)| k == "state" || k == "code_challenge"));
    let form = host.form_of(0);
    assert!(form.contains(&("code".into(), "the-code".into())));
    assert!(form.contains(&("redirect_uri".into(), "http://127.0.0.1:49152/callback".into())));
    assert!(form.contains(&(
        "code_verifier".into(),
        "mock-verifier-of-forty-three-characters-00".into()
    )));
}

#[test]
fn a_missing_setting_names_itself_and_the_config_table() {
    let req = Request::for_url("https://git.example/");
    let err = req.setting("client-id").unwrap_err();
    assert!(
        matches!(&err, Error::Failed(m) if m.contains("`client-id`") && m.contains("[provider.settings]")),
        "{err}"
    );
}
