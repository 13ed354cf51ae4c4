//! Fixed test vectors: a known key, statement and signature that must verify forever.
//! If one of these changes, every statement ever signed stops verifying.

use credence_signing::statement::{Capabilities, ComponentRef, ProviderId, SignedLimits};
use credence_signing::trust::{ExpiredPolicy, Policy};
use credence_signing::verify::Input;
use credence_signing::{Refusal, Role, SecretKey, Statement, StatementFile, TrustStore, TrustedKey, verify};

const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0credence test vector component";
const SEED: [u8; 32] = [0x42; 32];
const PUBLIC: &str = "credence-ed25519-pub:IVL40Zt5HSRFMkLhXy6rbLfP+ntqXtMAl5YOBpiB2xI=";
const KEY_ID: &str = "ede4d05a3dc79cf314839740a56a8cd7";
const DIGEST: &str = "35129d84651e83e1f2d3d5e5575a1744e33d3eebbe5dfbcb84839216d93dfe73";
const SIGNATURE: &str = "EWYNjBbWzlqah0/hqPITsB4W6ZV3ngFSfDTMGCy++mQNRq33xSdDqVLVKEZW/gqqzwatpu98bNAO0aR1+uRsDQ==";

fn statement() -> Statement {
    Statement {
        capabilities: Capabilities {
            id_token: false,
            limits: SignedLimits {
                cpu_ms: None,
                interactive_wall_ms: None,
                memory_mib: Some(32),
                wall_ms: None,
            },
            origins: vec!["https://login.example.com".into()],
            prompts: vec!["ask".into()],
            settings: Default::default(),
            wildcard_origins: vec![],
            world: "credence:provider/provider@0.1.0".into(),
        },
        component: ComponentRef {
            sha256: sha256_hex(COMPONENT),
            size: COMPONENT.len() as u64,
        },
        expires_at: None,
        format: "credence-statement-v1".into(),
        issued_at: 1_790_000_000,
        key_id: KEY_ID.into(),
        provider: ProviderId {
            name: "token-exchange".into(),
            sequence: 1,
            version: "0.1.0".into(),
        },
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn store() -> TrustStore {
    TrustStore {
        key: vec![TrustedKey {
            name: "vector".into(),
            role: Role::Publisher,
            public_key: PUBLIC.into(),
            providers: vec!["token-*".into()],
            not_after: None,
            origin: Default::default(),
            successor_of: None,
            retired: None,
        }],
        revoked: Default::default(),
        policy: Policy {
            require: Default::default(),
            expired: Some(ExpiredPolicy::Refuse),
        },
        floor: Default::default(),
        rotation: Vec::new(),
        org: None,
    }
}

fn file_text() -> String {
    let file = StatementFile {
        statement: statement(),
        signatures: vec![credence_signing::statement::SignatureEntry {
            key_id: KEY_ID.into(),
            signature: SIGNATURE.into(),
        }],
    };
    file.to_pretty()
}

#[test]
fn the_known_key_has_the_known_public_key_and_id() {
    let key = SecretKey::from_seed(SEED);
    assert_eq!(key.public().to_string(), PUBLIC);
    assert_eq!(key.public().key_id().0, KEY_ID);
}

#[test]
fn the_known_statement_has_the_known_canonical_digest() {
    let s = statement();
    assert_eq!(hex::encode(s.digest()), DIGEST);
    let canonical = String::from_utf8(s.canonical()).unwrap();
    assert!(canonical.starts_with(r#"{"capabilities":{"limits":{"cpu_ms":null,"memory_mib":32,"wall_ms":null},"origins":["https://login.example.com"]"#), "{canonical}");
}

#[test]
fn the_known_signature_verifies_forever() {
    let v = verify(Input {
        component: COMPONENT,
        statement: file_text().as_bytes(),
        trust: &store(),
        highest_sequence: None,
        now: 1_800_000_000,
    })
    .expect("the test vector must verify");
    assert_eq!(v.ceiling.name, "token-exchange");
    assert_eq!(v.signers[0].key_id.0, KEY_ID);
}

#[test]
fn signing_is_deterministic() {
    let mut f = StatementFile {
        statement: statement(),
        signatures: vec![],
    };
    f.sign(&SecretKey::from_seed(SEED));
    assert_eq!(f.signatures[0].signature, SIGNATURE);
}

#[test]
fn one_changed_byte_anywhere_is_refused() {
    let text = file_text();
    let mut component = COMPONENT.to_vec();
    component[10] ^= 1;
    let r = verify(Input {
        component: &component,
        statement: text.as_bytes(),
        trust: &store(),
        highest_sequence: None,
        now: 0,
    });
    assert!(matches!(r, Err(Refusal::DigestMismatch { .. })), "{r:?}");
    let edited = text.replace("\"memory_mib\": 32", "\"memory_mib\": 1024");
    assert_ne!(edited, text);
    let r = verify(Input {
        component: COMPONENT,
        statement: edited.as_bytes(),
        trust: &store(),
        highest_sequence: None,
        now: 0,
    });
    assert!(
        matches!(r, Err(Refusal::MissingSignature { role: Role::Publisher, ref reason }) if reason.contains("does not match")),
        "{r:?}"
    );
    let extra = text.replacen("{", "{\"x\": 1,", 1);
    let r = verify(Input {
        component: COMPONENT,
        statement: extra.as_bytes(),
        trust: &store(),
        highest_sequence: None,
        now: 0,
    });
    assert!(matches!(r, Err(Refusal::Malformed(_))), "{r:?}");
}

#[test]
fn non_canonical_spellings_in_the_ceiling_are_malformed() {
    let text = file_text().replace("https://login.example.com", "https://LOGIN.example.com:443");
    let r = verify(Input {
        component: COMPONENT,
        statement: text.as_bytes(),
        trust: &store(),
        highest_sequence: None,
        now: 0,
    });
    assert!(
        matches!(r, Err(Refusal::Malformed(ref m)) if m.contains("canonical")),
        "{r:?}"
    );
}

#[test]
fn rollback_below_the_highest_sequence_is_refused() {
    let r = verify(Input {
        component: COMPONENT,
        statement: file_text().as_bytes(),
        trust: &store(),
        highest_sequence: Some(2),
        now: 0,
    });
    assert!(
        matches!(
            r,
            Err(Refusal::Rollback {
                sequence: 1,
                highest: 2,
                ..
            })
        ),
        "{r:?}"
    );
}

/// Found by the `manifest` fuzz target: `Origin` orders by port before a longer host, the
/// canonical form orders strings, and a statement signed from such a manifest must still
/// read back as exactly that manifest's ceiling.
#[test]
fn a_ceiling_whose_origin_order_differs_from_string_order_round_trips() {
    let manifest = credence_signing::Manifest::from_toml(
        r#"
name = "x"
version = "1"
world = "credence:provider/provider@0.1.0"
origins = ["https://login.example:8443", "https://login.example.com", "https://a.example:10000", "https://a.example:9000"]
wildcard-origins = ["https://*.b.example", "https://a.example:*"]
"#,
    )
    .expect("a valid manifest");
    let key = SecretKey::from_seed(SEED);
    let statement = Statement::new(COMPONENT, &manifest, &key.public().key_id(), 1_790_000_000, None);
    assert_eq!(statement.ceiling(), Ok(manifest));
}

#[test]
fn a_statement_member_named_twice_or_a_version_with_escapes_is_malformed() {
    let text = file_text();
    assert!(StatementFile::parse(text.as_bytes()).is_ok());
    // A second "signatures" member: serde's `Value` would keep the last, another parser
    // the first; the format has one.
    let twice = text.replacen("{\n  \"statement\": ", "{\n  \"signatures\": [],\n  \"statement\": ", 1);
    assert_ne!(twice, text);
    let err = StatementFile::parse(twice.as_bytes()).unwrap_err();
    assert!(err.contains("duplicate field"), "{err}");
    let mut file = StatementFile::parse(text.as_bytes()).unwrap();
    file.statement.provider.version = "0.1.0\u{1b}[8m verdict trusted".into();
    let err = StatementFile::parse(file.to_pretty().as_bytes()).unwrap_err();
    assert!(err.contains("is not a semver version"), "{err}");
}

#[test]
fn declared_settings_are_part_of_the_signed_ceiling_and_badly_named_ones_are_refused() {
    let text = "name = \"x\"\nversion = \"1.0.0\"\nworld = \"credence:provider/provider@0.1.0\"\n[settings.client-secret]\nsecret = true\nrequired = true\ndescription = \"the app's secret\"\n[settings.tenant]\n";
    let m = credence_signing::Manifest::from_toml(text).unwrap();
    let st = Statement::new(COMPONENT, &m, &credence_signing::KeyId(KEY_ID.into()), 1, None);
    let spec = &st.capabilities.settings["client-secret"];
    assert!(spec.secret && spec.required, "{spec:?}");
    assert!(!st.capabilities.settings["tenant"].secret);
    assert_eq!(
        st.ceiling().unwrap().settings,
        m.settings,
        "the ceiling carries them back"
    );
    // A signed digest covers them: the same statement without them is another statement.
    let mut without = st.clone();
    without.capabilities.settings.clear();
    assert_ne!(without.digest(), st.digest());
    for bad in [
        "[settings.Token]\n",
        "[settings.\"a b\"]\n",
        "[settings.t]\ndescription = \"a\\nb\"\n",
        "[settings.t]\nhidden = true\n",
    ] {
        let text = format!("name = \"x\"\nversion = \"1.0.0\"\nworld = \"credence:provider/provider@0.1.0\"\n{bad}");
        assert!(credence_signing::Manifest::from_toml(&text).is_err(), "{bad}");
    }
}

#[test]
fn a_statement_naming_one_setting_twice_is_refused() {
    let text = "name = \"x\"\nversion = \"1.0.0\"\nworld = \"credence:provider/provider@0.1.0\"\n[settings.token]\nsecret = true\n";
    let m = credence_signing::Manifest::from_toml(text).unwrap();
    let key = SecretKey::from_seed(SEED);
    let mut file = StatementFile {
        statement: Statement::new(COMPONENT, &m, &key.public().key_id(), 1, None),
        signatures: vec![],
    };
    file.sign(&key);
    let good = serde_json::to_string(&file).unwrap();
    assert!(StatementFile::parse(good.as_bytes()).is_ok(), "{good}");
    let entry = r#""token":{"description":"","required":false,"secret":true}"#;
    assert!(good.contains(entry), "{good}");
    let twice = good.replace(
        entry,
        &format!(r#"{entry},"token":{{"description":"","required":false,"secret":false}}"#),
    );
    let err = StatementFile::parse(twice.as_bytes()).unwrap_err();
    assert!(err.contains("named twice"), "{err}");
}
