//! Attacks on the trust chain, each through the real binary and named after the attack:
//! a planted or copied compiled component, a validly signed provider swapped in under
//! another instance's file, verify/inspect disagreeing with the gate, the rollback floor
//! raised by a refused install or lost with its file, revocations that revoke nothing,
//! stored credentials outliving the trust that made them, loose or special files, unsigned
//! code standing in for signed, thresholds that one signature satisfies, statements in a
//! shape the format forbids, and credentials crossing from one tool to another.

use credence_tests::{Home, Key, Reply, TestServer, component, manifest};
use std::path::{Path, PathBuf};

fn get(home: &Home) -> credence_tests::Run {
    home.run(&["get", "https://registry.example/"])
}

fn assert_ok(home: &Home) {
    let run = get(home);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "signed-token\n"), "{run:#?}");
}

fn assert_refused(run: &credence_tests::Run, code: i32, needle: &str) {
    assert_eq!(run.code, Some(code), "{run:#?}");
    assert!(run.stderr.contains(needle), "expected {needle:?} in:\n{}", run.stderr);
    assert!(run.stdout.is_empty(), "{run:#?}");
}

fn cache_entries(home: &Home) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(home.cache().join("credence/cwasm"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// ---- 1. the compiled-component cache -------------------------------------------------

#[test]
fn a_compiled_entry_copied_over_another_providers_entry_does_not_run() {
    let home = Home::new();
    home.install_signed(&[("static-token", &[], &[]), ("hostile", &[], &[])]);
    home.write_config(
        r#"
[[provider]]
name = "a"
component = "static-token.wasm"
serves = ["https://a.example/"]
settings = { token = "token-of-a" }
[[provider]]
name = "b"
component = "hostile.wasm"
serves = ["https://b.example/"]
settings = { attack = "not-mine", token = "b-settings-read-by-the-wrong-code" }
"#,
    );
    assert_eq!(home.run(&["get", "https://a.example/"]).stdout, "token-of-a\n");
    let a_entry = cache_entries(&home).remove(0);
    let b = home.run(&["get", "https://b.example/"]);
    assert_eq!(b.code, Some(1), "b declines: {b:#?}");
    let b_entry = cache_entries(&home).into_iter().find(|p| *p != a_entry).unwrap();

    // static-token's native code under hostile's name: it would read b's settings.
    std::fs::copy(&a_entry, &b_entry).unwrap();
    // The agent loaded b already; the next one loads it from the tampered cache.
    home.stop_agent();
    let run = home.run(&["get", "https://b.example/"]);
    assert!(!run.stdout.contains("b-settings"), "the copied code ran: {run:#?}");
    assert_eq!(run.code, Some(1), "hostile itself ran and declined: {run:#?}");
    assert!(
        run.stderr.contains("tag does not match this component and engine"),
        "{}",
        run.stderr
    );
    // a's entry is untouched and still used.
    assert_eq!(home.run(&["get", "https://a.example/"]).stdout, "token-of-a\n");
}

#[cfg(unix)]
#[test]
fn a_cache_dir_others_could_write_is_discarded_not_fixed_and_used() {
    let (home, _) = Home::signed_static_token();
    assert_ok(&home);
    let dir = home.cache().join("credence/cwasm");
    let entry = cache_entries(&home).remove(0);
    // Another user, while the directory was world-writable, planted an entry.
    chmod(&dir, 0o777);
    let planted = dir.join("planted.cwasm");
    std::fs::copy(&entry, &planted).unwrap();
    home.stop_agent();
    let run = get(&home);
    assert_eq!(run.stdout, "signed-token\n", "{run:#?}");
    assert!(run.stderr.contains("was open to others"), "{}", run.stderr);
    assert!(
        !planted.exists(),
        "every entry of a directory others could write is discarded"
    );
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(cache_entries(&home).len(), 1, "recompiled: {:?}", cache_entries(&home));
}

// ---- 2. the config pins the provider an instance runs ---------------------------------

#[test]
fn a_validly_signed_other_provider_swapped_in_under_an_instances_file_is_refused() {
    let (home, _) = Home::signed_static_token();
    assert_ok(&home);
    // A key trusted only for "hostile" signs hostile; it is put where static-token was.
    let other = home.keygen("other");
    home.trust(&other, "Other publisher", "publisher", "hostile");
    home.install("hostile", "hostile", &manifest("hostile", &[], &[]));
    home.sign("hostile", &other, &[]);
    for ext in ["wasm", "statement.json"] {
        std::fs::copy(
            home.provider_file(&format!("hostile.{ext}")),
            home.provider_file(&format!("static-token.{ext}")),
        )
        .unwrap();
    }
    let run = get(&home);
    assert_refused(
        &run,
        3,
        "the config expects provider \"static-token\", and static-token.wasm is provider \"hostile\"",
    );
}

#[test]
fn a_component_signed_by_another_publisher_than_the_pinned_one_is_refused() {
    let (home, key) = Home::signed_static_token();
    let second = home.keygen("second");
    home.trust(&second, "Second publisher", "publisher", "static-token");
    home.write_config(&format!(
        "[[provider]]\nname = \"registry\"\nprovider = \"static-token\"\npublisher = \"{}\"\ncomponent = \"static-token.wasm\"\nserves = [\"https://registry.example/\"]\nsettings = {{ token = \"signed-token\" }}\n",
        key.id.to_uppercase()
    ));
    assert_ok(&home);
    home.sign("static-token", &second, &["--sequence", "2"]);
    let run = get(&home);
    assert_refused(
        &run,
        3,
        &format!(
            "the config pins publisher key {}, and static-token.wasm is signed by {}",
            key.id, second.id
        ),
    );
}

// ---- 3. verify, inspect and providers give the gate's verdict -------------------------

#[test]
fn verify_inspect_and_providers_refuse_a_signed_component_with_forbidden_imports() {
    let home = Home::new();
    home.install_signed(&[("net-escape", &[], &[])]);
    home.write_config(
        "[[provider]]\nname = \"escape\"\ncomponent = \"net-escape.wasm\"\nserves = [\"https://r.example/\"]\n",
    );
    let wasm = home.provider_file("net-escape.wasm");
    let verify = home.run(&["verify", wasm.to_str().unwrap()]);
    assert_eq!(verify.code, Some(1), "{verify:#?}");
    assert!(
        verify.stdout.contains("refused: it imports wasi:sockets"),
        "{verify:#?}"
    );
    let inspect = home.run(&["inspect", wasm.to_str().unwrap()]);
    assert_eq!(inspect.code, Some(1), "{inspect:#?}");
    assert!(
        inspect.stdout.contains("verdict    refused: it imports wasi:sockets"),
        "{}",
        inspect.stdout
    );
    let json = home.run(&["inspect", "--json", wasm.to_str().unwrap()]);
    assert_eq!(json.code, Some(1));
    assert!(json.json()["verdict"].as_str().unwrap().starts_with("refused"));
    let providers = home.run(&["providers"]);
    assert_eq!(providers.code, Some(3), "{providers:#?}");
    assert!(providers.stdout.contains("status:  refused"), "{}", providers.stdout);
}

#[test]
fn inspect_of_bytes_that_no_longer_parse_reports_the_digest_mismatch_first() {
    let (home, _) = Home::signed_static_token();
    let wasm = home.provider_file("static-token.wasm");
    let bytes = std::fs::read(&wasm).unwrap();
    std::fs::write(&wasm, &bytes[..bytes.len() / 3]).unwrap();
    let run = home.run(&["inspect", wasm.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stdout.contains("MISMATCH the statement is for sha256"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("verdict    refused: the component does not match its statement"),
        "{}",
        run.stdout
    );
    // The author who rebuilt it is told to sign again, not only to "reinstall" it.
    let get = home.run(&["get", "https://registry.example/"]);
    assert_ne!(get.code, Some(0), "{get:#?}");
    assert!(
        get.stderr.contains("if you built it, sign it again (`credence sign"),
        "{}",
        get.stderr
    );
}

// ---- 4. and 5. the rollback floor ------------------------------------------------------

#[test]
fn a_refused_sequence_9_install_does_not_raise_the_floor_for_the_genuine_release() {
    let home = Home::new();
    let key = home.keygen("publisher");
    home.trust(&key, "Sample publisher", "publisher", "static-token");
    let downloads = home.dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    // A release numbered 9 that imports sockets, signed with the real key (a compromised
    // build): `install` must refuse it without remembering its number.
    let evil = downloads.join("evil.wasm");
    std::fs::copy(component("net-escape"), &evil).unwrap();
    // net-escape is built on the 0.1 bindings: its manifest says so, as its author's would.
    let evil_manifest = manifest("static-token", &[], &[]).replace("provider@0.2.0", "provider@0.1.0");
    std::fs::write(evil.with_extension("manifest.toml"), evil_manifest).unwrap();
    let sign = |path: &Path, seq: &str| {
        let run = home.run(&[
            "sign",
            path.to_str().unwrap(),
            "--key",
            key.secret.to_str().unwrap(),
            "--sequence",
            seq,
        ]);
        assert_eq!(run.code, Some(0), "{run:#?}");
    };
    sign(&evil, "9");
    let refused = home.run(&["install", evil.to_str().unwrap()]);
    assert_ne!(refused.code, Some(0), "{refused:#?}");
    assert!(refused.stderr.contains("imports wasi:sockets"), "{}", refused.stderr);

    let genuine = downloads.join("static-token.wasm");
    std::fs::copy(component("static-token"), &genuine).unwrap();
    std::fs::write(
        genuine.with_extension("manifest.toml"),
        manifest("static-token", &[], &[]),
    )
    .unwrap();
    sign(&genuine, "2");
    let installed = home.run(&["install", genuine.to_str().unwrap()]);
    assert_eq!(installed.code, Some(0), "{installed:#?}");
    home.write_config(
        "[[provider]]\nname = \"registry\"\nserves = [\"https://registry.example/\"]\ncomponent = \"static-token.wasm\"\nsettings = { token = \"signed-token\" }\n",
    );
    assert_ok(&home);
}

#[test]
fn deleting_corrupting_or_loosening_the_floor_does_not_readmit_an_old_release() {
    let (home, key) = Home::signed_static_token();
    // A second provider with a floor of its own, which no change below may drop.
    home.install("hostile", "hostile", &manifest("hostile", &[], &[]));
    let other = home.keygen("other");
    home.trust(&other, "Other", "publisher", "hostile");
    home.sign("hostile", &other, &["--sequence", "7"]);
    let mut config = std::fs::read_to_string(home.home().join("config.toml")).unwrap();
    config.push_str("[[provider]]\nname = \"h\"\ncomponent = \"hostile.wasm\"\nserves = [\"https://h.example/\"]\nsettings = { attack = \"not-mine\" }\n");
    home.write_config(&config);
    home.sign("static-token", &key, &["--sequence", "5"]);
    assert_ok(&home);
    assert_eq!(home.run(&["get", "https://h.example/"]).code, Some(1));

    let old = home.provider_file("static-token.statement.json");
    let saved = std::fs::read(&old).unwrap();
    home.sign("static-token", &key, &["--sequence", "1"]);
    let rollback = "sequence 1 of provider \"static-token\" is below 5";
    assert_refused(&get(&home), 3, rollback);

    // Where the floor used to live: deleting, corrupting or loosening it changes nothing.
    let legacy = home.state().join("credence/sequences.json");
    let _ = std::fs::remove_file(&legacy);
    assert_refused(&get(&home), 3, rollback);
    std::fs::write(&legacy, b"{ not json").unwrap();
    assert_refused(&get(&home), 3, rollback);

    // The floor is in the trust store: corrupt it and nothing runs, with the next step.
    let trust = home.home().join("trust.toml");
    let text = std::fs::read_to_string(&trust).unwrap();
    assert!(text.contains("[floor]"), "{text}");
    assert!(
        text.contains("static-token = 5") && text.contains("hostile = 7"),
        "{text}"
    );
    std::fs::write(&trust, text.replace("static-token = 5", "static-token = \"five\"")).unwrap();
    let corrupt = get(&home);
    assert_refused(&corrupt, 3, "is not a valid trust store, so no provider runs");
    assert!(corrupt.stderr.contains("credence trust list"), "{}", corrupt.stderr);
    #[cfg(unix)]
    {
        std::fs::write(&trust, &text).unwrap();
        chmod(&trust, 0o666);
        assert_refused(&get(&home), 3, &format!("chmod go-w {}", trust.display()));
        chmod(&trust, 0o600);
    }
    std::fs::write(&trust, &text).unwrap();
    assert_refused(&get(&home), 3, rollback);

    // Raising one floor keeps the others.
    std::fs::write(&old, saved).unwrap();
    assert_ok(&home);
    let list = home.run(&["trust", "list", "--json"]).json();
    assert_eq!(list["floor"]["static-token"], 5, "{list}");
    assert_eq!(list["floor"]["hostile"], 7, "{list}");
}

// ---- 6. revocations ---------------------------------------------------------------------

#[test]
fn an_upper_case_revocation_revokes_and_a_junk_one_is_refused() {
    let (home, key) = Home::signed_static_token();
    assert_ok(&home);
    let trust = home.home().join("trust.toml");
    let text = std::fs::read_to_string(&trust).unwrap();
    let edited = text.replacen("keys = []", &format!("keys = [\"{}\"]", key.id.to_uppercase()), 1);
    assert_ne!(edited, text, "{text}");
    std::fs::write(&trust, &edited).unwrap();
    assert_refused(&get(&home), 3, &format!("key {} (Sample publisher) is revoked", key.id));

    let junk = text.replacen("statements = []", "statements = [\"not-a-digest\"]", 1);
    assert_ne!(junk, text);
    std::fs::write(&trust, junk).unwrap();
    assert_refused(
        &get(&home),
        3,
        "revoked.statements: a statement digest is 64 hex digits, not \"not-a-digest\"",
    );
    std::fs::write(&trust, &text).unwrap();
    let bad = home.run(&["trust", "revoke", "xyz"]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    assert_ok(&home);
}

// ---- 7. stored credentials and the gate -----------------------------------------------

fn token_server() -> TestServer {
    TestServer::start(|req| {
        if req.method != "POST" || req.url != "/token" {
            return Reply::json(404, "{}");
        }
        Reply::json(200, r#"{"access_token":"tok-exchanged","expires_in":3600}"#)
    })
}

/// token-exchange (until-expiry credentials) as instance `feed`, signed and trusted.
fn exchange_home(server: &TestServer) -> (Home, Key, String) {
    let home = Home::new();
    home.install(
        "token-exchange",
        "token-exchange",
        &manifest("token-exchange", &[server.origin()], &[]),
    );
    home.write_config(&format!(
        "[[provider]]\nname = \"feed\"\ncomponent = \"token-exchange.wasm\"\nserves = [\"https://feed.example/\"]\ngrant-origins = [\"{o}\"]\n[provider.settings]\ntoken-url = \"{o}/token\"\nclient-id = \"ci\"\nclient-secret = \"cs\"\n",
        o = server.origin()
    ));
    let key = home.keygen("publisher");
    home.trust(&key, "Feed publisher", "publisher", "token-exchange");
    let digest = home.sign("token-exchange", &key, &[]);
    (home, key, digest)
}

fn stored_entries(home: &Home) -> usize {
    std::fs::read_dir(home.state().join("credence/state/feed/credentials"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_stored_credential_is_not_served_after_revocation_removal_replacement_or_a_deleted_trust_store() {
    let server = token_server();
    type Attack = fn(&Home, &Key, &str) -> (&'static str, bool);
    let attacks: [(&str, Attack); 5] = [
        ("trust revoke <key>", |home, key, _| {
            assert_eq!(home.run(&["trust", "revoke", &key.id]).code, Some(0));
            ("is revoked", true)
        }),
        ("trust revoke <digest>", |home, _, digest| {
            assert_eq!(home.run(&["trust", "revoke", &digest.to_uppercase()]).code, Some(0));
            ("is revoked in the trust store", true)
        }),
        ("trust remove <key>", |home, key, _| {
            assert_eq!(home.run(&["trust", "remove", &key.id]).code, Some(0));
            ("is not in the trust store", true)
        }),
        ("component replaced", |home, _, _| {
            std::fs::copy(component("static-token"), home.provider_file("token-exchange.wasm")).unwrap();
            ("does not match its statement", false)
        }),
        ("trust.toml deleted", |home, _, _| {
            std::fs::remove_file(home.home().join("trust.toml")).unwrap();
            ("is not in the trust store", false)
        }),
    ];
    for (name, attack) in attacks {
        let (home, key, digest) = exchange_home(&server);
        let url = "https://feed.example/v3/index.json";
        assert_eq!(home.run(&["get", url, "--json"]).json()["source"], "provider", "{name}");
        assert_eq!(home.run(&["get", url, "--json"]).json()["source"], "stored", "{name}");
        assert_eq!(stored_entries(&home), 1, "{name}");
        let (message, deletes) = attack(&home, &key, &digest);
        if deletes {
            assert_eq!(
                stored_entries(&home),
                0,
                "{name}: the trust command deletes what it invalidates"
            );
        }
        let run = home.run(&["get", url, "--json"]);
        assert_eq!(run.code, Some(3), "{name}: {run:#?}");
        assert!(run.stderr.contains(message), "{name}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{name}: {run:#?}");
        assert_eq!(
            stored_entries(&home),
            0,
            "{name}: a credential that may not be served is deleted"
        );
    }
}

// ---- 8. and 9. files credence trusts ----------------------------------------------------

#[cfg(unix)]
#[test]
fn trust_config_providers_and_home_that_others_can_write_are_refused() {
    let (home, _) = Home::signed_static_token();
    assert_ok(&home);
    let cases = [
        (home.home().join("trust.toml"), 0o600, 0o666, 3),
        (home.home().join("config.toml"), 0o644, 0o646, 2),
        (home.home().join("providers"), 0o755, 0o775, 3),
        (home.home(), 0o755, 0o777, 2),
    ];
    for (path, good, loose, code) in cases {
        chmod(&path, loose);
        let run = get(&home);
        chmod(&path, good);
        assert_refused(&run, code, &format!("chmod go-w {}", path.display()));
    }
    assert_ok(&home);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let trust = home.home().join("trust.toml");
        std::os::unix::fs::chown(&trust, Some(65534), None).unwrap();
        let run = get(&home);
        std::os::unix::fs::chown(&trust, Some(0), None).unwrap();
        assert_refused(&run, 3, "belongs to uid 65534");
    }
}

#[cfg(unix)]
#[test]
fn a_fifo_statement_or_a_component_linked_to_dev_zero_neither_hangs_nor_fills_memory() {
    let (home, _) = Home::signed_static_token();
    let statement = home.provider_file("static-token.statement.json");
    std::fs::remove_file(&statement).unwrap();
    let c = std::ffi::CString::new(statement.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let wasm = home.provider_file("static-token.wasm");
    for args in [
        vec!["get", "https://registry.example/"],
        vec!["verify", wasm.to_str().unwrap()],
        vec!["providers"],
    ] {
        let run = home.run(&args);
        assert_ne!(run.code, Some(0), "{args:?}: {run:#?}");
        assert!(run.elapsed.as_secs() < 20, "{args:?} hung: {run:#?}");
        assert!(
            format!("{}{}", run.stdout, run.stderr).contains("is not a regular file (a FIFO)"),
            "{args:?}: {run:#?}"
        );
    }
    std::fs::remove_file(&statement).unwrap();
    std::fs::remove_file(&wasm).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &wasm).unwrap();
    let run = get(&home);
    assert_refused(&run, 3, "is not a regular file (a device)");
}

// ---- 10. --allow-unsigned ------------------------------------------------------------

#[test]
fn allow_unsigned_still_verifies_a_statement_that_is_present() {
    let (home, _) = Home::signed_static_token();
    assert_ok(&home);
    // Unsigned code put in place of the signed component, the statement left beside it.
    std::fs::copy(component("hostile"), home.provider_file("static-token.wasm")).unwrap();
    let run = home.run(&["--allow-unsigned", "get", "https://registry.example/"]);
    assert_refused(&run, 3, "the component does not match its statement");
    // Without a statement it runs, and the warning names it.
    std::fs::copy(component("static-token"), home.provider_file("static-token.wasm")).unwrap();
    std::fs::remove_file(home.provider_file("static-token.statement.json")).unwrap();
    let run = home.run(&["--allow-unsigned", "get", "https://registry.example/"]);
    assert_eq!(run.stdout, "signed-token\n", "{run:#?}");
    assert!(run.stderr.contains("provider registry runs UNSIGNED"), "{}", run.stderr);
}

// ---- 11. policy thresholds ----------------------------------------------------------------

#[test]
fn two_required_auditors_are_not_satisfied_by_one_auditor_or_a_repeated_signature() {
    let (home, _) = Home::signed_static_token();
    let auditor = home.keygen("auditor");
    home.trust(&auditor, "Security team", "auditor", "static-token");
    let statement = home.provider_file("static-token.statement.json");
    let countersign = |key: &Key| {
        let run = home.run(&[
            "countersign",
            statement.to_str().unwrap(),
            "--key",
            key.secret.to_str().unwrap(),
        ]);
        assert_eq!(run.code, Some(0), "{run:#?}");
    };
    countersign(&auditor);
    // The policy as a user writes it: the list form, one auditor role per required auditor.
    let trust = home.home().join("trust.toml");
    let mut table: toml::Table = std::fs::read_to_string(&trust).unwrap().parse().unwrap();
    table.insert(
        "policy".into(),
        toml::toml! { require = ["publisher", "auditor", "auditor"] }.into(),
    );
    std::fs::write(&trust, table.to_string()).unwrap();
    let one = "the policy requires 2 distinct trusted auditors and 1 countersigned";
    assert_refused(&get(&home), 3, one);
    let shown = home.run(&["trust", "list"]);
    assert!(
        shown.stdout.contains("require 1 publisher + 2 distinct auditors"),
        "{}",
        shown.stdout
    );

    // The same auditor's signature listed twice.
    let original = std::fs::read(&statement).unwrap();
    let mut file: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let sigs = file["signatures"].as_array_mut().unwrap();
    let dup = sigs[1].clone();
    sigs.push(dup);
    std::fs::write(&statement, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    assert_refused(&get(&home), 3, "signed twice");
    std::fs::write(&statement, &original).unwrap();

    // The table form says the same, and the CLI writes it.
    let policy = home.run(&["trust", "policy", "--require", "publisher,auditor=2"]);
    assert_eq!(policy.code, Some(0), "{policy:#?}");
    assert!(std::fs::read_to_string(&trust).unwrap().contains("auditor = 2"));
    assert_refused(&get(&home), 3, one);

    let second = home.keygen("auditor2");
    home.trust(&second, "Second auditor", "auditor", "static-token");
    countersign(&second);
    assert_ok(&home);
}

// ---- 12. the smaller ones ------------------------------------------------------------------

/// Every object in `v` as the array of its values (serde's positional form of a struct).
fn positional(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m.values().map(positional).collect(),
        other => other.clone(),
    }
}

#[test]
fn a_statement_written_with_positional_arrays_is_refused() {
    let (home, _) = Home::signed_static_token();
    let path = home.provider_file("static-token.statement.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    file["statement"] = positional(&file["statement"]);
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    assert_refused(&get(&home), 3, "the statement is not in credence's format");
}

#[test]
fn an_auditor_key_named_as_publisher_is_refused_naming_its_role() {
    let home = Home::new();
    home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
    home.write_config("[[provider]]\nname = \"registry\"\ncomponent = \"static-token.wasm\"\nserves = [\"https://registry.example/\"]\n");
    let auditor = home.keygen("auditor");
    home.trust(&auditor, "Security team", "auditor", "static-token");
    home.sign("static-token", &auditor, &[]);
    assert_refused(
        &get(&home),
        3,
        &format!(
            "the key the statement names, {} (Security team), is trusted as auditor, not as publisher",
            auditor.id
        ),
    );
}

#[test]
fn signing_a_component_without_the_provider_export_warns() {
    let home = Home::new();
    let key = home.keygen("publisher");
    let empty = home.provider_file("empty.wasm");
    // The smallest component: a header and nothing in it.
    std::fs::write(&empty, b"\0asm\x0d\x00\x01\x00").unwrap();
    std::fs::write(empty.with_extension("manifest.toml"), manifest("empty", &[], &[])).unwrap();
    let run = home.run(&["sign", empty.to_str().unwrap(), "--key", key.secret.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr.contains("WARNING")
            && run
                .stderr
                .contains("exports no credence:provider/credential-provider@0.2.x (nor @0.1.x)"),
        "{}",
        run.stderr
    );
}

// ---- 16. stored credentials stay with their tool -----------------------------------------

#[test]
fn a_credential_stored_for_credence_get_is_not_served_to_git() {
    let server = token_server();
    let (home, _, _) = exchange_home(&server);
    let first = home.run(&["get", "https://feed.example/", "--json"]);
    assert_eq!(first.json()["source"], "provider");
    assert_eq!(
        home.run(&["get", "https://feed.example/", "--json"]).json()["source"],
        "stored"
    );
    assert_eq!(server.hits(), 1);
    let git = home.run_stdin(&["git", "get"], b"protocol=https\nhost=feed.example\n\n", &[]);
    assert_eq!(git.code, Some(0), "{git:#?}");
    assert!(git.stdout.contains("password=tok-exchanged"), "{git:#?}");
    assert_eq!(
        server.hits(),
        2,
        "git's request ran the provider: the generic answer is not git's"
    );
    let again = home.run_stdin(&["git", "get"], b"protocol=https\nhost=feed.example\n\n", &[]);
    assert_eq!(again.code, Some(0));
    assert_eq!(server.hits(), 2, "git's own stored answer serves git");
}

/// The stored path skips reading `trust.toml` while the file is provably unchanged: what
/// changes without touching it (time passing a key's `not-after`, the providers directory
/// opened to others) must still stop a stored credential.
#[test]
fn a_stored_credential_is_not_served_once_its_key_expires_or_its_providers_dir_is_opened() {
    let server = token_server();
    let (home, key, _) = exchange_home(&server);
    // Trust the key again, until two seconds from now.
    assert_eq!(home.run(&["trust", "remove", &key.id]).code, Some(0));
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let run = home.run(&[
        "trust",
        "add",
        &key.public,
        "--name",
        "Feed publisher",
        "--role",
        "publisher",
        "--providers",
        "token-exchange",
        "--not-after",
        &until.to_string(),
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let url = "https://feed.example/";
    assert_eq!(home.run(&["get", url, "--json"]).json()["source"], "provider");
    assert_eq!(home.run(&["get", url, "--json"]).json()["source"], "stored");
    #[cfg(unix)]
    {
        let providers = home.home().join("providers");
        chmod(&providers, 0o777);
        let run = home.run(&["get", url, "--json"]);
        chmod(&providers, 0o755);
        assert_refused(&run, 3, &format!("chmod go-w {}", providers.display()));
    }
    assert_eq!(home.run(&["get", url, "--json"]).json()["source"], "provider");
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let run = home.run(&["get", url, "--json"]);
    assert_refused(&run, 3, &format!("key {} (Feed publisher) expired", key.id));
    assert_eq!(stored_entries(&home), 0);
}

/// A long-running host (the NuGet plugin, later the agent) must see a revocation made
/// while it runs, for a provider run and for what it stored.
#[test]
fn a_revocation_reaches_a_nuget_plugin_that_is_already_running() {
    let server = token_server();
    let (home, key, _) = exchange_home(&server);
    let mut nuget = credence_tests::NuGet::session(&home, &[]);
    let ask = |n: &mut credence_tests::NuGet, id: &str| {
        n.request(
            id,
            "GetAuthenticationCredentials",
            serde_json::json!({"Uri": "https://feed.example/v3/index.json", "IsRetry": false, "IsNonInteractive": true, "CanShowDialog": false}),
        )["Payload"]
            .clone()
    };
    assert_eq!(ask(&mut nuget, "r1")["ResponseCode"], "Success");
    assert_eq!(ask(&mut nuget, "r2")["ResponseCode"], "Success");
    assert_eq!(server.hits(), 1, "the second answer is the stored one");
    assert_eq!(home.run(&["trust", "revoke", &key.id]).code, Some(0));
    let after = ask(&mut nuget, "r3");
    assert_eq!(after["ResponseCode"], "Error", "{after}");
    assert_eq!(server.hits(), 1, "the revoked provider never ran again");
    // Also when the plugin itself had stored nothing: forget, then ask again.
    assert_eq!(home.run(&["forget"]).code, Some(0));
    let fresh = ask(&mut nuget, "r4");
    assert_eq!(fresh["ResponseCode"], "Error", "{fresh}");
    assert_eq!(server.hits(), 1);
}

/// A signed statement whose settings gain an earlier duplicate: a last-wins reader keeps the
/// signed entry (and the signature verifies), a first-wins reader sees `secret = false`.
#[test]
fn a_statement_naming_one_setting_twice_is_refused_although_its_signature_would_verify() {
    let home = Home::new();
    let key = home.keygen("publisher");
    home.trust(&key, "Publisher", "publisher", "static-token");
    let declared = "[settings.token]\nrequired = true\nsecret = true\n";
    home.install(
        "static-token",
        "static-token",
        &format!("{}{declared}", manifest("static-token", &[], &[])),
    );
    home.sign("static-token", &key, &[]);
    let wasm = home.provider_file("static-token.wasm");
    let verify = || home.run(&["verify", wasm.to_str().unwrap()]);
    assert_eq!(verify().code, Some(0), "{:#?}", verify());
    let path = home.provider_file("static-token.statement.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let signed = "\"settings\": {\n";
    assert!(text.contains(signed), "{text}");
    let forged = text.replacen(
        signed,
        "\"settings\": {\n\"token\": {\"description\": \"\", \"required\": true, \"secret\": false},\n",
        1,
    );
    std::fs::write(&path, forged).unwrap();
    let run = verify();
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stdout.contains("named twice") || run.stderr.contains("named twice"),
        "{run:#?}"
    );
}

// ---- world of the manifest ---------------------------------------------------------------

#[test]
fn a_component_built_for_another_world_than_its_manifest_declares_is_refused_by_sign_and_at_load() {
    // A 0.1 component (the hostile one) under a manifest that claims world 0.2.0, whose
    // ceiling could name 0.2's sign-in prompts: `sign` refuses to vouch for it, and the
    // loading gate refuses to run it even unsigned.
    let home = Home::new();
    let key = home.keygen("publisher");
    home.trust(&key, "Publisher", "publisher", "*");
    let claims_0_2 = manifest("hostile", &[], &["authorize"]).replace("provider@0.1.0", "provider@0.2.0");
    home.install("hostile", "hostile", &claims_0_2);
    let component = home.provider_file("hostile.wasm");
    let sign = home.run(&[
        "sign",
        component.to_str().unwrap(),
        "--key",
        key.secret.to_str().unwrap(),
    ]);
    assert_eq!(sign.code, Some(2), "{sign:#?}");
    assert!(
        sign.stderr
            .contains("but its signed manifest declares world credence:provider/provider@0.2.0"),
        "{}",
        sign.stderr
    );
    assert!(
        !home.provider_file("hostile.statement.json").exists(),
        "no statement was written"
    );
    home.write_config("[[provider]]\nname = \"hostile\"\nserves = [\"https://evil.example/\"]\nsettings = { attack = \"not-mine\" }\n");
    let run = home.run(&["--allow-unsigned", "get", "https://evil.example/"]);
    assert_refused(
        &run,
        3,
        "build it against that world's WIT, or declare the world it was built for",
    );
}
