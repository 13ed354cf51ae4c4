//! Provider trust end to end: signed providers run; every way a statement, a component,
//! a key or the policy can be wrong is refused with its own message and non-zero exit,
//! before anything is compiled.

use credence_tests::{Home, Reply, TestServer, manifest};

fn get(home: &Home) -> credence_tests::Run {
    home.run(&["get", "https://registry.example/"])
}

fn assert_refused(home: &Home, expected: &str) {
    let run = get(home);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("provider registry is refused"), "{}", run.stderr);
    assert!(
        run.stderr.contains(expected),
        "expected {expected:?} in:\n{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    assert_eq!(
        home.compiled_entries(),
        0,
        "a refused provider must never reach the compiler"
    );
}

#[test]
fn a_trusted_signed_provider_runs_without_any_flag() {
    let (home, _) = Home::signed_static_token();
    let run = get(&home);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "signed-token\n"), "{run:#?}");
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}

fn tamper(home: &Home, f: impl FnOnce(&mut Vec<u8>)) {
    let path = home.provider_file("static-token.wasm");
    let mut bytes = std::fs::read(&path).unwrap();
    f(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn one_flipped_bit_at_the_start_is_refused() {
    let (home, _) = Home::signed_static_token();
    tamper(&home, |b| b[0] ^= 1);
    assert_refused(&home, "the component does not match its statement");
}

#[test]
fn one_flipped_bit_in_the_middle_is_refused() {
    let (home, _) = Home::signed_static_token();
    tamper(&home, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x10
    });
    assert_refused(&home, "the component does not match its statement");
}

#[test]
fn one_flipped_bit_in_the_last_byte_is_refused() {
    let (home, _) = Home::signed_static_token();
    tamper(&home, |b| *b.last_mut().unwrap() ^= 0x80);
    assert_refused(&home, "the component does not match its statement");
}

#[test]
fn a_truncated_component_is_refused() {
    let (home, _) = Home::signed_static_token();
    tamper(&home, |b| b.truncate(b.len() - 1));
    assert_refused(&home, "the component does not match its statement");
}

#[test]
fn an_appended_byte_is_refused() {
    let (home, _) = Home::signed_static_token();
    tamper(&home, |b| b.push(0));
    assert_refused(&home, "the component does not match its statement");
}

#[test]
fn a_statement_for_another_component_is_refused() {
    let (home, key) = Home::signed_static_token();
    // Another component of the same world, signed under the same name.
    home.install("oauth-device", "hostile", &manifest("static-token", &[], &[]));
    home.sign("hostile", &key, &[]);
    std::fs::copy(
        home.provider_file("hostile.statement.json"),
        home.provider_file("static-token.statement.json"),
    )
    .unwrap();
    assert_refused(&home, "the component does not match its statement");
}

#[test]
fn a_signature_by_an_untrusted_key_is_refused() {
    let (home, _) = Home::signed_static_token();
    let stranger = home.keygen("stranger");
    home.sign("static-token", &stranger, &[]);
    assert_refused(
        &home,
        &format!(
            "no trusted publisher signature: key {} is not in the trust store",
            stranger.id
        ),
    );
}

#[test]
fn a_key_not_allowed_for_the_provider_name_is_refused() {
    let home = Home::new();
    home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
    home.write_config("[[provider]]\nname = \"registry\"\ncomponent = \"static-token.wasm\"\nserves = [\"https://registry.example/\"]\n");
    let key = home.keygen("narrow");
    home.trust(&key, "Other team", "publisher", "other-*");
    home.sign("static-token", &key, &[]);
    assert_refused(
        &home,
        "(Other team) is not allowed to sign for provider \"static-token\"",
    );
}

#[test]
fn a_revoked_key_is_refused() {
    let (home, key) = Home::signed_static_token();
    assert_eq!(home.run(&["trust", "revoke", &key.id]).code, Some(0));
    assert_refused(&home, &format!("key {} (Sample publisher) is revoked", key.id));
}

#[test]
fn a_revoked_statement_digest_is_refused() {
    let (home, key) = Home::signed_static_token();
    let digest = home.sign("static-token", &key, &[]);
    assert_eq!(home.run(&["trust", "revoke", &digest]).code, Some(0));
    assert_refused(&home, &format!("the statement {digest} is revoked"));
}

#[test]
fn an_expired_statement_is_refused() {
    let (home, key) = Home::signed_static_token();
    home.sign("static-token", &key, &["--expires-in-days", "0"]);
    assert_refused(&home, "the statement expired at");
}

#[test]
fn a_lower_sequence_than_one_already_seen_is_refused() {
    let (home, key) = Home::signed_static_token();
    home.sign("static-token", &key, &["--sequence", "5"]);
    assert_eq!(get(&home).code, Some(0));
    home.sign("static-token", &key, &["--sequence", "4"]);
    let run = get(&home);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr
            .contains("sequence 4 of provider \"static-token\" is below 5"),
        "{}",
        run.stderr
    );
    // `forget` clears credentials, not the rollback floor.
    home.run(&["forget"]);
    assert_eq!(get(&home).code, Some(3));
}

#[test]
fn a_capability_ceiling_edited_after_signing_is_refused() {
    let (home, _) = Home::signed_static_token();
    let path = home.provider_file("static-token.statement.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace("\"origins\": []", "\"origins\": [\"https://evil.example\"]");
    assert_ne!(text, edited);
    std::fs::write(&path, edited).unwrap();
    assert_refused(&home, "does not match the statement");
}

#[test]
fn a_policy_requiring_an_auditor_refuses_a_publisher_only_statement() {
    let (home, _) = Home::signed_static_token();
    assert_eq!(
        home.run(&["trust", "policy", "--require", "publisher,auditor"]).code,
        Some(0)
    );
    assert_refused(
        &home,
        "no trusted auditor signature: no auditor has countersigned the statement",
    );

    // The security team countersigns the same statement: no re-signing by the publisher.
    let auditor = home.keygen("security-team");
    home.trust(&auditor, "Security team", "auditor", "*");
    let statement = home.provider_file("static-token.statement.json");
    let run = home.run(&[
        "countersign",
        statement.to_str().unwrap(),
        "--key",
        auditor.secret.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(get(&home).code, Some(0));
}

#[test]
fn an_origin_outside_the_signed_ceiling_is_denied_even_when_granted() {
    let target = TestServer::start(|_| Reply::json(200, "{}"));
    let home = Home::new();
    home.install("hostile", "hostile", &manifest("hostile", &[], &[]));
    let key = home.keygen("publisher");
    home.trust(&key, "p", "publisher", "hostile");
    home.sign("hostile", &key, &[]);
    home.write_config(&format!(
        "[[provider]]\nname = \"h\"\ncomponent = \"hostile.wasm\"\nserves = [\"https://evil.example/\"]\ngrant-origins = [\"{o}\"]\nsettings = {{ attack = \"undeclared-host\", target = \"{o}/x\" }}\n",
        o = target.origin()
    ));
    let run = home.run(&["get", "https://evil.example/"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("is not an allowed origin (allowed: none)"),
        "{}",
        run.stderr
    );
    assert_eq!(target.hits(), 0);
}

#[test]
fn a_wildcard_port_in_the_signed_ceiling_admits_granted_loopback_origins() {
    let server = TestServer::start(|_| Reply::json(200, r#"{"access_token":"wild","expires_in":3600}"#));
    let home = Home::new();
    let m = manifest("token-exchange", &[], &[]) + "wildcard-origins = [\"http://127.0.0.1:*\"]\n";
    home.install("token-exchange", "token-exchange", &m);
    let key = home.keygen("publisher");
    home.trust(&key, "p", "publisher", "token-exchange");
    home.sign("token-exchange", &key, &[]);
    home.write_config(&format!(
        "[[provider]]\nname = \"t\"\ncomponent = \"token-exchange.wasm\"\nserves = [\"https://feed.example/\"]\ngrant-origins = [\"{o}\"]\nsettings = {{ token-url = \"{o}/token\", client-id = \"c\", client-secret = \"s\" }}\n",
        o = server.origin()
    ));
    let run = home.run(&["get", "https://feed.example/"]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "wild\n"), "{run:#?}");
    let inspect = home.run(&["inspect", home.provider_file("token-exchange.wasm").to_str().unwrap()]);
    assert!(
        inspect
            .stdout
            .contains("WILDCARD ORIGINS (any matching host or port!): http://127.0.0.1:*"),
        "{}",
        inspect.stdout
    );
}

#[test]
fn verify_exits_zero_only_when_the_policy_is_satisfied() {
    let (home, _) = Home::signed_static_token();
    let component = home.provider_file("static-token.wasm");
    let ok = home.run(&["verify", component.to_str().unwrap()]);
    assert_eq!(ok.code, Some(0), "{ok:#?}");
    assert!(
        ok.stdout
            .starts_with("verified: static-token 0.1.0 (sequence 1), signed by publisher"),
        "{}",
        ok.stdout
    );
    tamper(&home, |b| b.push(1));
    let bad = home.run(&["verify", component.to_str().unwrap()]);
    assert_eq!(bad.code, Some(1), "{bad:#?}");
    assert!(
        bad.stdout
            .starts_with("refused: the component does not match its statement"),
        "{}",
        bad.stdout
    );
}

#[test]
fn inspect_shows_a_reviewer_identity_signatures_ceiling_and_imports() {
    let (home, key) = Home::signed_static_token();
    let stranger = home.keygen("stranger");
    let statement = home.provider_file("static-token.statement.json");
    home.run(&[
        "countersign",
        statement.to_str().unwrap(),
        "--key",
        stranger.secret.to_str().unwrap(),
    ]);
    let component = home.provider_file("static-token.wasm");
    let run = home.run(&["inspect", component.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let j = run.json();
    assert_eq!(j["provider"], "static-token");
    assert_eq!(j["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(j["signatures"][0]["key_id"], key.id.as_str());
    assert_eq!(j["signatures"][0]["trusted"], true);
    assert_eq!(j["signatures"][1]["trusted"], false);
    assert!(
        j["signatures"][1]["check"]
            .as_str()
            .unwrap()
            .contains("not in the trust store")
    );
    assert!(
        j["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("wasi:cli/environment@"))
    );
    assert!(j["exports"].as_array().unwrap().iter().any(|e| {
        e.as_str()
            .unwrap()
            .starts_with("credence:provider/credential-provider@")
    }));
    assert_eq!(j["verdict"], "trusted");
    let text = home.run(&["inspect", component.to_str().unwrap()]);
    assert!(text.stdout.contains("capability ceiling (signed)"), "{}", text.stdout);
    assert!(text.stdout.contains("verdict    trusted"), "{}", text.stdout);
    assert_eq!(home.compiled_entries(), 0, "inspect compiles nothing");
}

#[test]
fn install_verifies_copies_and_precompiles() {
    let home = Home::new();
    let staging = home.dir.path().join("download");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(credence_tests::component("static-token"), staging.join("st.wasm")).unwrap();
    std::fs::write(staging.join("st.manifest.toml"), manifest("static-token", &[], &[])).unwrap();
    let key = home.keygen("publisher");
    let run = home.run(&[
        "sign",
        staging.join("st.wasm").to_str().unwrap(),
        "--key",
        key.secret.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");

    let untrusted = home.run(&["install", staging.join("st.wasm").to_str().unwrap()]);
    assert_eq!(untrusted.code, Some(2), "{untrusted:#?}");
    assert!(!home.provider_file("static-token.wasm").exists());

    home.trust(&key, "p", "publisher", "static-token");
    let run = home.run(&["install", staging.join("st.wasm").to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(home.provider_file("static-token.wasm").is_file());
    assert!(home.provider_file("static-token.statement.json").is_file());
    assert_eq!(home.compiled_entries(), 1, "precompiled at install");
    home.write_config("[[provider]]\nname = \"static-token\"\nserves = [\"https://r.example/\"]\nsettings = { token = \"installed\" }\n");
    let get = home.run_with(&["get", "https://r.example/"], &[("CREDENCE_LOG", "credence=debug")]);
    assert_eq!(get.stdout, "installed\n", "{get:#?}");
    assert!(
        get.stderr.contains("loaded precompiled component from cache"),
        "{}",
        get.stderr
    );
}

#[test]
fn secret_keys_are_private_and_never_printed() {
    let home = Home::new();
    let key = home.keygen("k");
    let secret = std::fs::read_to_string(&key.secret).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key.secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let b64 = secret.trim().split(':').nth(1).unwrap();
    assert!(!key.public.contains(b64));
    let again = home.run(&["keygen", key.secret.with_extension("").to_str().unwrap()]);
    assert_eq!(again.code, Some(2), "never overwrites a key: {again:#?}");
}

#[test]
fn trust_add_of_a_trusted_key_widens_its_scopes_in_place_and_refuses_a_second_role() {
    let home = Home::new();
    let key = home.keygen("pub");
    home.trust(&key, "acme", "publisher", "static-token");
    let add = |role: &str, providers: &str| {
        home.run(&[
            "trust",
            "add",
            &key.public,
            "--name",
            "acme",
            "--role",
            role,
            "--providers",
            providers,
        ])
    };

    let again = add("publisher", "static-token");
    assert_eq!(again.code, Some(0), "adding it again is no error: {again:#?}");
    assert!(again.stderr.contains("nothing changed"), "{}", again.stderr);

    let wider = add("publisher", "token-exchange,static-token");
    assert_eq!(wider.code, Some(0), "{wider:#?}");
    assert!(
        wider.stderr.contains("may now sign for static-token, token-exchange"),
        "{}",
        wider.stderr
    );
    let list = home.run(&["trust", "list", "--json"]);
    let listed = list.json();
    let keys = listed["keys"].as_array().expect("a list of keys");
    assert_eq!(keys.len(), 1, "still one entry: {keys:?}");
    assert_eq!(
        keys[0]["providers"],
        serde_json::json!(["static-token", "token-exchange"]),
        "{keys:?}"
    );
    // What it widened counts: a statement for token-exchange by this key now verifies.
    home.install(
        "token-exchange",
        "token-exchange",
        &manifest("token-exchange", &[], &[]),
    );
    home.sign("token-exchange", &key, &[]);
    let verify = home.run(&["verify", home.provider_file("token-exchange.wasm").to_str().unwrap()]);
    assert_eq!(verify.code, Some(0), "{verify:#?}");

    let auditor = add("auditor", "static-token");
    assert_eq!(auditor.code, Some(2), "{auditor:#?}");
    assert!(
        auditor.stderr.contains("is trusted as publisher already")
            && auditor.stderr.contains(&format!("`credence trust remove {}`", key.id)),
        "{}",
        auditor.stderr
    );
}

#[test]
fn inspect_of_an_unsigned_component_shows_its_imports_and_declared_ceiling_and_the_sign_command() {
    let home = Home::new();
    home.install(
        "token-exchange",
        "token-exchange",
        &manifest("token-exchange", &["https://login.example".to_owned()], &[]),
    );
    let wasm = home.provider_file("token-exchange.wasm");
    let run = home.run(&["inspect", wasm.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "the gate refuses it as it is: {run:#?}");
    for needle in [
        "statement  none (",
        "declared ceiling, from ",
        "nobody signed it yet",
        "  origins  https://login.example",
        "imports (read from the component)",
        "credence:provider/http@0.1.0",
        "verdict    refused: not signed",
        "`credence sign ",
    ] {
        assert!(run.stdout.contains(needle), "{needle:?} in:\n{}", run.stdout);
    }
    let json = home.run(&["inspect", wasm.to_str().unwrap(), "--json"]);
    assert_eq!(json.code, Some(1));
    let v = json.json();
    assert_eq!(v["signed"], false);
    assert_eq!(
        v["declared_ceiling"]["origins"],
        serde_json::json!(["https://login.example"])
    );
    assert!(
        v["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "credence:provider/http@0.1.0"),
        "{v}"
    );
}
