//! The organisation's policy bundle (`policy.json`) through `BundleFile::parse` and
//! `verify_bundle`, the trust in force made from it, the policy's admission rule; the TOML
//! source `credence policy sign` reads; and key rotation files.
#![no_main]

use credence_signing::bundle::{Bundle, BundleFile, VerifiedBundle};
use credence_signing::{Rotation, SecretKey, TrustStore, verify_bundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = SecretKey::from_seed([7; 32]);
    if let Ok(file) = BundleFile::parse(data) {
        // Only the canonical value is accepted, so what it writes back reads as itself.
        let value: serde_json::Value = serde_json::from_slice(data).expect("parse read it as JSON");
        assert_eq!(serde_json::to_value(&file).unwrap(), value);
        let again = BundleFile::parse(file.to_pretty().as_bytes()).expect("a parsed bundle re-encodes to one");
        assert_eq!(again, file);
        assert_eq!(again.bundle.digest(), file.bundle.digest());
        assert!(file.bundle.expires_at > file.bundle.issued_at);
        let seen = credence_signing::bundle::Seen { sequence: 3, digest: None };
        let _ = verify_bundle(data, &[root.public()], Some(&seen), 1_800_000_000);
        // The trust in force made from any bundle keeps the bundle's rules and never lets
        // the user's store lower them.
        let local = TrustStore::default();
        let v = VerifiedBundle {
            digest: file.bundle.digest(),
            root_key_id: root.public().key_id(),
            expired_warning: None,
            bundle: file.bundle.clone(),
        };
        let store = TrustStore::in_force(&local, Some(&v), 1_800_000_000);
        let org = store.org.as_ref().expect("a bundle is in force");
        assert!(store.policy.require.auditor >= file.bundle.policy.require.auditor);
        for k in &file.bundle.keys {
            assert!(store.find(&k.key_id().unwrap()).is_some());
        }
        for id in &file.bundle.revoked.keys {
            assert!(store.key_revoked(&credence_signing::KeyId(id.clone())));
        }
        for p in &file.bundle.providers {
            let name = p.name.trim_end_matches('*');
            let _ = org.admits(name, "1.2.3", &"0".repeat(64), Some(1_700_000_000), 1_800_000_000);
        }
        // Signed by the fuzzer's own root, it verifies unless expired.
        let mut signed = file.clone();
        signed.signatures.clear();
        signed.sign(&root);
        match verify_bundle(signed.to_pretty().as_bytes(), &[root.public()], None, file.bundle.issued_at) {
            Ok(v) => assert_eq!(v.bundle, file.bundle),
            Err(e) => panic!("a bundle signed by the pinned root is refused: {e}"),
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bundle) = Bundle::from_source(text, 1_800_000_000, None, None) {
            // What `policy sign` accepts, a host reads back.
            let mut file = BundleFile {
                bundle,
                signatures: Vec::new(),
            };
            file.sign(&root);
            let back = BundleFile::parse(file.to_pretty().as_bytes()).expect("a signed source parses");
            assert_eq!(back, file);
        }
    }
    if let Ok(r) = Rotation::parse(data) {
        assert_eq!(Rotation::parse(r.to_pretty().as_bytes()), Ok(r.clone()));
        let _ = credence_signing::rotation::check_rotation(&r, &TrustStore::default(), 1_800_000_000);
        let mut store = TrustStore::default();
        store.rotation.push(r);
        let _ = TrustStore::in_force(&store, None, 1_800_000_000);
    }
});
