//! Statement files (`X.statement.json`), through `StatementFile::parse`, then the canonical
//! encoding, digest, signing message and ceiling that verification uses.
#![no_main]

use credence_signing::statement::{decode_signature, Statement, StatementFile, MAX_STATEMENT_BYTES, SIGNING_DOMAIN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = StatementFile::parse(data) else { return };
    let statement = &file.statement;
    assert!(file.signatures.len() <= 16);
    // Only the shape credence writes is accepted: objects with named fields, each key once.
    let value: serde_json::Value = serde_json::from_slice(data).expect("parse read it as JSON");
    assert_eq!(serde_json::to_value(&file).unwrap(), value);
    let mut ids: Vec<&str> = file.signatures.iter().map(|s| s.key_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), file.signatures.len(), "a key signed twice");

    let ceiling = statement.ceiling().expect("parse checked the ceiling");
    assert_eq!(ceiling.name, statement.provider.name);
    assert_eq!(ceiling.version, statement.provider.version);
    assert_eq!(ceiling.sequence, statement.provider.sequence);
    assert_eq!(ceiling.origins.len(), statement.capabilities.origins.len());
    assert_eq!(
        ceiling.wildcard_origins.len(),
        statement.capabilities.wildcard_origins.len()
    );
    assert_eq!(ceiling.prompts.len(), statement.capabilities.prompts.len());

    // Signatures cover the canonical bytes, not the file's: they must decode to this very
    // statement and encode to themselves again, or a signature would vouch for something
    // other than what the verifier acts on.
    let canonical = statement.canonical();
    let again: Statement = serde_json::from_slice(&canonical).expect("canonical bytes parse");
    assert_eq!(&again, statement);
    assert_eq!(again.canonical(), canonical);
    assert_eq!(again.digest(), statement.digest());
    let message = statement.signing_message();
    assert_eq!(&message[..SIGNING_DOMAIN.len()], SIGNING_DOMAIN);
    assert_eq!(&message[SIGNING_DOMAIN.len()..], &statement.digest()[..]);

    for s in &file.signatures {
        if let Some(signature) = decode_signature(&s.signature) {
            assert_eq!(signature.len(), 64);
        }
    }

    // credence writes statements with to_pretty (sign, countersign): they must read back.
    let pretty = file.to_pretty();
    if pretty.len() <= MAX_STATEMENT_BYTES {
        assert_eq!(StatementFile::parse(pretty.as_bytes()), Ok(file.clone()), "{pretty}");
    }
});
