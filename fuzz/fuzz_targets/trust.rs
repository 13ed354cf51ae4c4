//! Trust stores (`trust.toml`), through `TrustStore::parse`, the lookups verification makes,
//! and `to_toml`, which `credence trust` writes back.
#![no_main]

use credence_signing::TrustStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(store) = TrustStore::parse(text) else { return };
    // One publisher, and never a threshold no statement could meet.
    assert_eq!(store.policy.require.publisher, 1);
    assert!(store.policy.require.auditor <= credence_signing::trust::MAX_REQUIRED);
    // Revocations are normalised when read: lower-case hex of the right length, so a
    // revocation always matches what it names.
    for k in &store.revoked.keys {
        assert!(k.len() == 32 && k.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{k:?}");
        assert!(store.key_revoked(&credence_signing::KeyId(k.to_uppercase())));
    }
    for d in &store.revoked.statements {
        assert!(d.len() == 64 && d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{d:?}");
    }
    for name in store.floor.keys() {
        assert!(credence_signing::manifest::valid_name(name), "{name:?}");
    }
    for k in &store.key {
        let key = k.key().expect("parse checked every key");
        assert!(!k.providers.is_empty());
        let id = key.key_id();
        let found = store.find(&id).expect("a listed key is found by its id");
        assert_eq!(found.key().map(|p| p.key_id()), Ok(id.clone()));
        let _ = store.key_revoked(&id);
        for p in &k.providers {
            assert!(k.may_sign_for(p), "{p:?}");
        }
    }
    for d in &store.revoked.statements {
        assert!(store.statement_revoked(d));
    }

    // `credence trust add/remove/revoke/policy` rewrite the file from to_toml: a store must
    // read back exactly as it was, or an edit would change grants nobody touched.
    let written = store.to_toml();
    assert_eq!(TrustStore::parse(&written), Ok(store), "{written}");
});
