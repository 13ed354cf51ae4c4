//! Trust stores (`trust.toml`), through `TrustStore::parse`, the lookups verification makes,
//! and `to_toml`, which `credence trust` writes back.
#![no_main]

use credence_signing::{Role, TrustStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(store) = TrustStore::parse(text) else { return };
    assert!(store.policy.require.contains(&Role::Publisher));
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
