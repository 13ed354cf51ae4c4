//! Provider manifests (`X.manifest.toml`), through `Manifest::from_toml`, then into a
//! statement as `credence sign` does and back out through `StatementFile::parse` and
//! `Statement::ceiling` as verification does.
#![no_main]

use credence_signing::manifest::{valid_name, Manifest, WORLD};
use credence_signing::statement::{Statement, StatementFile, MAX_STATEMENT_BYTES};
use credence_signing::{KeyId, Origin, OriginPattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(manifest) = Manifest::from_toml(text) else {
        return;
    };
    assert!(valid_name(&manifest.name), "{:?}", manifest.name);
    assert_eq!(manifest.world, WORLD);
    for o in &manifest.origins {
        assert_eq!(Origin::parse(&o.to_string()).as_ref(), Ok(o), "{o}");
        assert!(manifest.allows(o), "{o}");
    }
    for p in &manifest.wildcard_origins {
        assert_eq!(OriginPattern::parse(&p.to_string()).as_ref(), Ok(p), "{p}");
    }

    // Whatever `credence sign` makes of a valid manifest must verify as that same ceiling.
    let statement = Statement::new(data, &manifest, &KeyId("0".repeat(32)), 0, None);
    let file = StatementFile {
        statement,
        signatures: Vec::new(),
    };
    let written = file.to_pretty();
    if written.len() <= MAX_STATEMENT_BYTES {
        let read = StatementFile::parse(written.as_bytes())
            .unwrap_or_else(|e| panic!("the statement signed for a valid manifest is refused: {e}\n{written}"));
        assert_eq!(read.statement.ceiling().as_ref(), Ok(&manifest));
    }
});
