//! The precompiled-component cache: compile once, load the native code on later runs,
//! and never load an entry this host did not write.

use credence_tests::{Home, manifest};
use std::path::PathBuf;

const UNSIGNED: &str = "--allow-unsigned";

fn home() -> Home {
    let home = Home::new();
    home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
    home.write_config(
        "[[provider]]\nname = \"static-token\"\nserves = [\"https://r.example/\"]\nsettings = { token = \"t\" }\n",
    );
    home
}

fn get(home: &Home) -> credence_tests::Run {
    let run = home.run_with(
        &[UNSIGNED, "get", "https://r.example/"],
        &[("CREDENCE_LOG", "credence=debug")],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    run
}

fn entries(home: &Home) -> Vec<PathBuf> {
    let dir = home.cache().join("credence/cwasm");
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn the_second_run_loads_the_precompiled_component() {
    let home = home();
    let first = get(&home);
    assert!(
        first.stderr.contains("compiled component and stored it in the cache"),
        "{}",
        first.stderr
    );
    let files = entries(&home);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().unwrap() == "cwasm");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files[0]), 0o600);
        assert_eq!(mode(&home.cache().join("credence/cwasm")), 0o700);
    }
    let second = get(&home);
    assert!(
        second.stderr.contains("loaded precompiled component from cache"),
        "{}",
        second.stderr
    );
    assert!(
        !second.stderr.contains("compiled component and stored"),
        "{}",
        second.stderr
    );
    assert_eq!(entries(&home), files, "no new entry");
}

#[cfg(unix)]
#[test]
fn an_entry_others_can_write_is_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let home = home();
    get(&home);
    let entry = entries(&home).remove(0);
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = get(&home);
    assert!(
        run.stderr.contains("ignoring a cache entry this host did not write"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("compiled component and stored it in the cache"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_corrupt_entry_is_deleted_and_recompiled() {
    let home = home();
    get(&home);
    let entry = entries(&home).remove(0);
    // Rewrite in place keeps owner and mode: only the content is wrong.
    std::fs::write(&entry, b"\x7fELF not really a compiled component").unwrap();
    let run = get(&home);
    assert!(
        run.stderr.contains("ignoring a cache entry whose tag does not match"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("compiled component and stored it in the cache"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "t\n");
    let again = get(&home);
    assert!(
        again.stderr.contains("loaded precompiled component from cache"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_changed_component_gets_its_own_entry() {
    let home = home();
    get(&home);
    // Another component (of the same world) under the same file name: a different digest,
    // a different entry.
    std::fs::copy(
        credence_tests::component("oauth-device"),
        home.home().join("providers/static-token.wasm"),
    )
    .unwrap();
    let run = home.run_with(
        &[UNSIGNED, "get", "https://r.example/"],
        &[("CREDENCE_LOG", "credence=debug")],
    );
    assert!(
        run.stderr.contains("compiled component and stored it in the cache"),
        "{}",
        run.stderr
    );
    assert_eq!(entries(&home).len(), 2);
}
