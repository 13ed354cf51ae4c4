//! The organisation's trust through the real binary: a policy bundle signed by a root key
//! pinned in a directory the user cannot write (here `CREDENCE_POLICY_DIR`, which every run
//! announces), k-of-n audits, the upgrade guard, key rotation and expiry warnings. Each way
//! a bundle is wrong fails closed with its own message.

use credence_signing::bundle::{Bundle, BundleFile};
use credence_signing::{SecretKey, StatementFile};
use credence_tests::{Home, Key, Run, manifest};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A home with static-token (instance `registry`, serving https://registry.example/) and
/// the organisation's policy directory, its root key pinned there.
struct Org {
    home: Home,
    root: Key,
    publisher: Key,
    dir: PathBuf,
}

const POLICY_ENV: &str = "CREDENCE_POLICY_DIR";

impl Org {
    /// static-token signed by `publisher`, which trust.toml does not know: only a bundle
    /// can make it run.
    fn new() -> Org {
        let home = Home::new();
        home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
        home.write_config(
            "[[provider]]\nname = \"registry\"\ncomponent = \"static-token.wasm\"\nserves = [\"https://registry.example/\"]\nsettings = { token = \"signed-token\" }\n",
        );
        let publisher = home.keygen("publisher");
        home.sign("static-token", &publisher, &[]);
        let root = home.keygen("org-root");
        let dir = home.home().parent().unwrap().join("etc-credence");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("root.pub"), format!("# Acme's root\n{}\n", root.public)).unwrap();
        Org {
            home,
            root,
            publisher,
            dir,
        }
    }

    fn env(&self) -> [(&str, &str); 1] {
        [(POLICY_ENV, self.dir.to_str().unwrap())]
    }

    fn run(&self, args: &[&str]) -> Run {
        let run = self.home.run_with(args, &self.env());
        // Every run under the override says so.
        assert!(run.stderr.contains("CREDENCE_POLICY_DIR="), "{run:#?}");
        run
    }

    fn get(&self) -> Run {
        self.run(&["get", "https://registry.example/"])
    }

    fn key_line(key: &Key, name: &str, role: &str, providers: &str) -> String {
        format!(
            "[[keys]]\nname = {name:?}\nrole = {role:?}\npublic-key = {:?}\nproviders = [{providers:?}]\n",
            key.public
        )
    }

    /// The bundle source with `body` after the header, the publisher trusted for
    /// static-token.
    fn source(&self, sequence: u64, body: &str) -> String {
        format!(
            "organisation = \"Acme security\"\nsequence = {sequence}\n{body}\n{}",
            Org::key_line(&self.publisher, "Acme build", "publisher", "static-token")
        )
    }

    /// `credence policy sign`; returns the bundle file.
    fn sign(&self, sequence: u64, body: &str) -> PathBuf {
        self.sign_source(&format!("policy-{sequence}"), &self.source(sequence, body))
    }

    /// `credence policy sign` of `text` as `<stem>.toml`, valid 90 days.
    fn sign_source(&self, stem: &str, text: &str) -> PathBuf {
        let src = self.home.home().parent().unwrap().join(format!("{stem}.toml"));
        std::fs::write(&src, text).unwrap();
        let out = src.with_extension("json");
        let run = self.home.sign_policy(&src, &self.root, 90, &out, &self.env());
        assert!(run.stderr.contains("CREDENCE_POLICY_DIR="), "{run:#?}");
        assert_eq!(run.code, Some(0), "{run:#?}");
        out
    }

    fn install(&self, bundle: &Path) -> Run {
        self.run(&["policy", "install", bundle.to_str().unwrap()])
    }

    fn sign_and_install(&self, sequence: u64, body: &str) {
        let run = self.install(&self.sign(sequence, body));
        assert_eq!(run.code, Some(0), "{run:#?}");
    }

    fn component_sha256(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(self.home.provider_file("static-token.wasm")).unwrap(),
        ))
    }
}

const ALLOW_STATIC: &str = "[[providers]]\nname = \"static-token\"\n";

fn assert_refused(run: &Run, expected: &str) {
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert!(
        run.stderr.contains(expected),
        "expected {expected:?} in:\n{}",
        run.stderr
    );
}

fn assert_answers(run: &Run) {
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "signed-token\n"), "{run:#?}");
}

#[test]
fn the_bundle_decides_which_providers_run_and_says_why_it_refuses() {
    let org = Org::new();
    // Without the bundle nothing trusts the publisher.
    assert_refused(&org.get(), "root key is pinned in");
    org.sign_and_install(1, "[[providers]]\nname = \"other\"\n");
    let run = org.get();
    assert_refused(
        &run,
        "the policy of Acme security (policy bundle sequence 1) does not allow it: provider \"static-token\" is not in its list of allowed providers",
    );
    assert!(run.stderr.contains("`credence policy show`"), "{}", run.stderr);

    org.sign_and_install(2, "[[providers]]\nname = \"static-token\"\nversions = \">=0.2\"\n");
    assert_refused(
        &org.get(),
        "version 0.1.0 of \"static-token\" is outside the versions it allows (>=0.2)",
    );

    let other = "ab".repeat(32);
    org.sign_and_install(
        3,
        &format!("[[providers]]\nname = \"static-token\"\nsha256 = \"{other}\"\n"),
    );
    assert_refused(&org.get(), &format!("and it pins {other}"));

    let sha = org.component_sha256();
    org.sign_and_install(
        4,
        &format!("[[providers]]\nname = \"static-*\"\nversions = \"^0.1\"\nsha256 = \"{sha}\"\n"),
    );
    assert_answers(&org.get());
    let show = org.run(&["policy", "show"]);
    assert_eq!(show.code, Some(0), "{show:#?}");
    assert!(
        show.stdout.contains("policy bundle of Acme security sequence 4"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains(&format!("static-*  versions ^0.1  sha256 {sha}")),
        "{}",
        show.stdout
    );

    // Unsigned code never runs under a bundle that says so, --allow-unsigned or not.
    std::fs::remove_file(org.home.provider_file("static-token.statement.json")).unwrap();
    let run = org.run(&["--allow-unsigned", "get", "https://registry.example/"]);
    assert!(
        run.stderr
            .contains("the policy of Acme security (policy bundle sequence 4) lets no unsigned provider run"),
        "{run:#?}"
    );
    assert_ne!(run.code, Some(0));
}

#[test]
fn a_trust_toml_key_counts_only_when_the_bundle_allows_local_keys() {
    let org = Org::new();
    // The publisher in trust.toml only; the bundle trusts another key.
    org.home
        .trust(&org.publisher, "My own publisher", "publisher", "static-token");
    let stranger = org.home.keygen("stranger");
    let again = org.home.keygen("another");
    let body = |local: bool| {
        format!(
            "local-keys = {local}\n{ALLOW_STATIC}{}",
            Org::key_line(&stranger, "Someone", "publisher", "x")
        )
    };
    let write = |sequence: u64, local: bool| {
        let text = format!(
            "organisation = \"Acme security\"\nsequence = {sequence}\n{}",
            body(local)
        );
        let out = org.sign_source(&format!("p{sequence}"), &text);
        assert_eq!(org.install(&out).code, Some(0));
    };
    write(1, false);
    let add = org.run(&[
        "trust",
        "add",
        &again.public,
        "--name",
        "Another",
        "--role",
        "publisher",
        "--providers",
        "static-token",
    ]);
    assert_eq!(add.code, Some(0), "{add:#?}");
    assert!(
        add.stderr
            .contains("lets no key from trust.toml count, so this key signs nothing here"),
        "{add:#?}"
    );
    assert_refused(
        &org.get(),
        "is in trust.toml, and the policy bundle of Acme security (policy bundle sequence 1) lets no key from trust.toml count",
    );
    let list = org.run(&["trust", "list"]);
    assert!(list.stdout.contains("DOES NOT COUNT"), "{}", list.stdout);
    write(2, true);
    assert_answers(&org.get());
}

#[test]
fn a_tampered_older_or_expired_bundle_and_a_writable_policy_dir_each_fail_closed_with_their_own_message() {
    let org = Org::new();
    let five = org.sign(5, ALLOW_STATIC);
    assert_eq!(org.install(&five).code, Some(0));
    assert_answers(&org.get());
    let installed = org.dir.join("policy.json");

    // Tampered: one field changed after signing.
    let text = std::fs::read_to_string(&five).unwrap();
    let tampered = text.replace("\"sequence\": 5", "\"sequence\": 6");
    assert_ne!(tampered, text);
    std::fs::write(&installed, &tampered).unwrap();
    let tampered_message = "was changed after it was signed";
    assert_refused(&org.get(), tampered_message);
    let t = org.home.home().parent().unwrap().join("tampered.json");
    std::fs::write(&t, &tampered).unwrap();
    let verify = org.run(&["policy", "verify", t.to_str().unwrap()]);
    assert_eq!(verify.code, Some(1), "{verify:#?}");
    assert!(verify.stdout.contains(tampered_message), "{verify:#?}");

    // Older: a validly signed sequence 4 after 5 was seen, put in place by hand or by install.
    let four = org.sign(4, ALLOW_STATIC);
    std::fs::copy(&four, &installed).unwrap();
    let older_message = "has sequence 4, older than sequence 5 already seen on this machine";
    assert_refused(&org.get(), older_message);
    let install = org.install(&four);
    assert_eq!(install.code, Some(2), "{install:#?}");
    assert!(install.stderr.contains(older_message), "{install:#?}");

    // Expired: signed long ago (made here with the library, as a stale copy would be).
    let secret = SecretKey::parse(&std::fs::read_to_string(&org.root.secret).unwrap()).unwrap();
    let expired = |on_expiry: &str| {
        let source = org.source(7, &format!("on-expiry = \"{on_expiry}\"\n{ALLOW_STATIC}"));
        let bundle = Bundle::from_source(&source, 1_700_000_000, Some(1_700_086_400), None).unwrap();
        let mut file = BundleFile {
            bundle,
            signatures: Vec::new(),
        };
        file.sign(&secret);
        file.to_pretty()
    };
    std::fs::write(&installed, expired("refuse")).unwrap();
    let expired_message = "the policy bundle of Acme security expired at 1700086400";
    assert_refused(&org.get(), expired_message);
    // ... unless the bundle says to warn.
    std::fs::write(&installed, expired("warn")).unwrap();
    let run = org.get();
    assert_answers(&run);
    assert!(
        run.stderr.contains(expired_message) && run.stderr.contains("on-expiry = \"warn\""),
        "{run:#?}"
    );

    // A policy directory its group can write: the pinned key itself cannot be trusted.
    // (Sequence 7 was seen, so the next good bundle is 8.)
    assert_refused(
        &{
            std::fs::copy(&five, &installed).unwrap();
            org.get()
        },
        "older than sequence 7",
    );
    std::fs::copy(org.sign(8, ALLOW_STATIC), &installed).unwrap();
    assert_answers(&org.get());
    std::fs::set_permissions(&org.dir, std::fs::Permissions::from_mode(0o775)).unwrap();
    let writable_message = "the organisation's policy directory cannot be trusted, so no provider runs";
    let run = org.get();
    assert_refused(&run, writable_message);
    assert!(run.stderr.contains("is writable by its group"), "{run:#?}");
    let show = org.run(&["policy", "show"]);
    assert_eq!(show.code, Some(1), "{show:#?}");
    assert!(show.stdout.contains(writable_message), "{show:#?}");

    // Four refusals, four different messages.
    let messages = [tampered_message, older_message, expired_message, writable_message];
    for (i, a) in messages.iter().enumerate() {
        for b in &messages[i + 1..] {
            assert!(!a.contains(b) && !b.contains(a));
        }
    }
}

/// Adds `key`'s signature to the installed statement.
fn countersign(org: &Org, key: &Key) {
    let statement = org.home.provider_file("static-token.statement.json");
    let run = org.run(&[
        "countersign",
        statement.to_str().unwrap(),
        "--key",
        key.secret.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
}

#[test]
fn two_distinct_auditors_scoped_to_the_name_are_needed_and_inspect_shows_what_is_missing() {
    let org = Org::new();
    let (a, b, elsewhere) = (
        org.home.keygen("aud-a"),
        org.home.keygen("aud-b"),
        org.home.keygen("aud-c"),
    );
    org.sign_and_install(
        1,
        &format!(
            "[policy]\nrequire = {{ publisher = 1, auditor = 2 }}\n{ALLOW_STATIC}{}{}{}",
            Org::key_line(&a, "Auditor A", "auditor", "static-token"),
            Org::key_line(&b, "Auditor B", "auditor", "static-token"),
            Org::key_line(&elsewhere, "Auditor C", "auditor", "other-*"),
        ),
    );
    let statement = org.home.provider_file("static-token.statement.json");
    let component = org.home.provider_file("static-token.wasm");
    let inspect = || org.run(&["inspect", component.to_str().unwrap()]);

    countersign(&org, &a);
    assert_refused(
        &org.get(),
        "the policy requires 2 distinct trusted auditors and 1 countersigned",
    );
    let shown = inspect();
    assert_eq!(shown.code, Some(1), "{shown:#?}");
    assert!(
        shown.stdout.contains(&format!(
            "auditor   1 of 2: {} (Auditor A); MISSING 1 more distinct trusted auditor",
            a.id
        )),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains(&format!("publisher 1 of 1: {} (Acme build)", org.publisher.id)),
        "{}",
        shown.stdout
    );

    // The same auditor's signature twice is one signature, and the file saying otherwise is
    // refused whole.
    let good = std::fs::read_to_string(&statement).unwrap();
    let mut file: serde_json::Value = serde_json::from_str(&good).unwrap();
    let sigs = file["signatures"].as_array_mut().unwrap();
    let again = sigs.iter().find(|s| s["key_id"] == a.id.as_str()).unwrap().clone();
    sigs.push(again);
    std::fs::write(&statement, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    assert_refused(&org.get(), &format!("key {} signed twice", a.id));
    std::fs::write(&statement, &good).unwrap();

    // An auditor trusted for other names does not count for this one.
    countersign(&org, &elsewhere);
    assert_refused(
        &org.get(),
        "the policy requires 2 distinct trusted auditors and 1 countersigned",
    );
    let shown = inspect();
    assert!(
        shown.stdout.contains(&format!(
            "key {} (Auditor C) is not allowed to sign for provider \"static-token\"",
            elsewhere.id
        )),
        "{}",
        shown.stdout
    );

    countersign(&org, &b);
    assert_answers(&org.get());
    let shown = inspect();
    assert_eq!(shown.code, Some(0), "{shown:#?}");
    let line = shown
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("auditor   2 of 2:"))
        .unwrap_or_else(|| panic!("{}", shown.stdout));
    assert!(
        line.contains(&a.id) && line.contains(&b.id) && !line.contains("MISSING"),
        "{line}"
    );
    let json = org.run(&["inspect", component.to_str().unwrap(), "--json"]).json();
    assert_eq!(json["requirements"][1]["missing"], 0, "{json}");
    assert_eq!(json["organisation"], "Acme security (policy bundle sequence 1)");
}

/// Signs a release of static-token (sequence, manifest extra lines) into a staging dir and
/// returns the component there.
fn stage(org: &Org, sequence: u64, origins: &[String], prompts: &[&str]) -> PathBuf {
    let dir = org.home.home().parent().unwrap().join(format!("release-{sequence}"));
    std::fs::create_dir_all(&dir).unwrap();
    let component = dir.join("static-token.wasm");
    std::fs::copy(credence_tests::component("static-token"), &component).unwrap();
    std::fs::write(
        dir.join("static-token.manifest.toml"),
        manifest("static-token", origins, prompts),
    )
    .unwrap();
    let run = org.run(&[
        "sign",
        component.to_str().unwrap(),
        "--key",
        org.publisher.secret.to_str().unwrap(),
        "--sequence",
        &sequence.to_string(),
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    component
}

fn installed_sequence(org: &Org) -> u64 {
    let bytes = std::fs::read(org.home.provider_file("static-token.statement.json")).unwrap();
    StatementFile::parse(&bytes).unwrap().statement.provider.sequence
}

#[test]
fn a_release_that_may_newly_do_more_waits_for_approval_while_the_approved_one_answers() {
    let org = Org::new();
    org.sign_and_install(1, ALLOW_STATIC);
    let two = stage(&org, 2, &[], &[]);
    let run = org.run(&["install", two.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(installed_sequence(&org), 2);
    assert_answers(&org.get());

    // Sequence 3 adds an origin and a prompt kind.
    let three = stage(&org, 3, &["https://new.example".into()], &["ask"]);
    let run = org.run(&["install", three.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr.contains("is pending and the approved one keeps answering"),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("origins: none -> adds https://new.example"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("prompts: none -> adds ask"), "{run:#?}");
    assert!(run.stderr.contains("`credence approve static-token`"), "{run:#?}");
    assert_eq!(installed_sequence(&org), 2, "the approved release stays in place");
    let listed = org.run(&["providers"]);
    assert!(
        listed
            .stdout
            .contains("pending: 0.1.0 (sequence 3) may do more, and waits: `credence approve static-token`"),
        "{listed:#?}"
    );
    assert_answers(&org.get());
    // The pending release did not raise the rollback floor: sequence 2 is still admitted.
    let verify = org.run(&["verify", org.home.provider_file("static-token.wasm").to_str().unwrap()]);
    assert_eq!(verify.code, Some(0), "{verify:#?}");

    // Approving needs a terminal or --yes; without, nothing changes.
    let run = org.run(&["approve", "static-token"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("--yes"), "{run:#?}");
    assert_eq!(installed_sequence(&org), 2);

    let run = org.run(&["approve", "static-token", "--yes"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout
            .contains("static-token 0.1.0 (sequence 3) would replace 0.1.0 (sequence 2)"),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("origins: none -> adds https://new.example"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("prompts: none -> adds ask"), "{run:#?}");
    assert_eq!(installed_sequence(&org), 3);
    assert_answers(&org.get());
    let again = org.run(&["approve", "static-token", "--yes"]);
    assert!(
        again.stderr.contains("no release of static-token is waiting"),
        "{again:#?}"
    );

    // Sequence 4 drops the prompt: narrower, so it is installed at once.
    let four = stage(&org, 4, &["https://new.example".into()], &[]);
    let run = org.run(&["install", four.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(!run.stderr.contains("pending"), "{run:#?}");
    assert_eq!(installed_sequence(&org), 4);
    assert_answers(&org.get());
}

#[test]
fn a_rotated_key_hands_on_trust_and_stops_counting_for_statements_issued_after_its_grace() {
    let org = Org::new();
    org.sign_and_install(1, ALLOW_STATIC);
    assert_answers(&org.get());
    let old_release = stage(&org, 2, &[], &[]);
    let successor = org.home.keygen("publisher-2");
    let rotation = org.home.home().parent().unwrap().join("rotation.json");
    let run = org.run(&[
        "trust",
        "rotate",
        "--from",
        org.publisher.secret.to_str().unwrap(),
        "--to",
        successor.secret.to_str().unwrap(),
        "--grace-days",
        "0",
        "--out",
        rotation.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    // Under a bundle that lets nothing in trust.toml add a key, a rotation kept there does
    // not count: the successor comes with the bundle.
    let run = org.run(&["trust", "rotate", rotation.to_str().unwrap()]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr
            .contains("lets nothing in trust.toml add a key, rotations included"),
        "{run:#?}"
    );
    org.sign_and_install(2, &format!("local-keys = true\n{ALLOW_STATIC}"));
    let run = org.run(&["trust", "rotate", rotation.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr.contains(&format!("hands its trust to {}", successor.id)),
        "{run:#?}"
    );
    let list = org.run(&["trust", "list"]);
    assert!(
        list.stdout.contains(&format!("rotated to {}", successor.id)),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains(&format!("successor of {}", org.publisher.id)),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains(&format!(
            "rotation {} -> {} (0 grace days): in force",
            org.publisher.id, successor.id
        )),
        "{}",
        list.stdout
    );

    // The successor signs for the same names.
    let new_release = stage(&org, 3, &[], &[]);
    let dir = new_release.parent().unwrap();
    let run = org.run(&[
        "sign",
        new_release.to_str().unwrap(),
        "--key",
        successor.secret.to_str().unwrap(),
        "--sequence",
        "3",
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let verify = |c: &Path| org.run(&["verify", c.to_str().unwrap()]);
    let v = verify(&new_release);
    assert_eq!(v.code, Some(0), "{v:#?}");
    assert!(v.stdout.contains(&successor.id), "{v:#?}");
    // What the old key signed before the rotation still verifies.
    assert_eq!(verify(&old_release).code, Some(0));
    assert_answers(&org.get());

    // After the grace period (none here), a new statement by the old key does not count.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let late = stage(&org, 5, &[], &[]);
    let v = verify(&late);
    assert_eq!(v.code, Some(1), "{v:#?}");
    assert!(v.stdout.contains(&format!("was rotated to {}", successor.id)), "{v:#?}");
    let _ = dir;

    // A rotation the retiring key did not sign is refused.
    let stranger = org.home.keygen("stranger");
    let forged = org.home.home().parent().unwrap().join("forged.json");
    let run = org.run(&[
        "trust",
        "rotate",
        "--from",
        stranger.secret.to_str().unwrap(),
        "--to",
        successor.secret.to_str().unwrap(),
        "--out",
        forged.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0));
    let run = org.run(&["trust", "rotate", forged.to_str().unwrap()]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("is not trusted here"), "{run:#?}");
}

#[test]
fn what_expires_within_fourteen_days_is_announced_once_a_day_and_listed_first() {
    let home = Home::new();
    home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
    home.write_config(
        "[[provider]]\nname = \"registry\"\ncomponent = \"static-token.wasm\"\nserves = [\"https://registry.example/\"]\nsettings = { token = \"signed-token\" }\n",
    );
    let key = home.keygen("publisher");
    let soon = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3 * 86_400
        - 60)
        .to_string();
    let run = home.run(&[
        "trust",
        "add",
        &key.public,
        "--name",
        "Short-lived",
        "--role",
        "publisher",
        "--providers",
        "static-token",
        "--not-after",
        &soon,
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    home.sign("static-token", &key, &["--expires-in-days", "5"]);

    let first = home.run(&["get", "https://registry.example/"]);
    assert_eq!(
        (first.code, first.stdout.as_str()),
        (Some(0), "signed-token\n"),
        "{first:#?}"
    );
    assert!(
        first
            .stderr
            .contains(&format!("key {} (Short-lived) expires in 3 days", key.id)),
        "{first:#?}"
    );
    assert!(
        first
            .stderr
            .contains("the statement of provider static-token expires in 5 days"),
        "{first:#?}"
    );
    let second = home.run(&["get", "https://registry.example/"]);
    assert_eq!(second.code, Some(0));
    assert!(!second.stderr.contains("expires in"), "once a day: {second:#?}");

    let audit = home.run(&["audit", "--json"]);
    let warnings: Vec<serde_json::Value> = audit
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["outcome"] == "expiry-warning")
        .collect();
    assert_eq!(warnings.len(), 2, "{}", audit.stdout);

    let list = home.run(&["trust", "list"]);
    let mut lines = list.stdout.lines();
    assert_eq!(lines.next(), Some("EXPIRING SOON"), "{}", list.stdout);
    assert!(lines.next().unwrap().contains("expires in 3 days"), "{}", list.stdout);
}
