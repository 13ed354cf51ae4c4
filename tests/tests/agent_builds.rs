//! A client and an agent of different builds never talk past each other: the handshake
//! carries the build (the version, the wire protocol, and which `credence-host` file the
//! agent runs), an agent of another build steps down, and the client starts its own once.

use credence_tests::{Home, credence_exe};

fn agent_pid(home: &Home, exe: &std::path::Path) -> u64 {
    let run = home.run_program(exe, &["agent", "status", "--json"], b"", &[]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    run.json()["pid"].as_u64().expect("a pid")
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn an_agent_of_another_build_steps_down_and_the_client_starts_its_own() {
    let (home, _) = Home::signed_static_token();
    // Another installation of credence: the same code, another credence-host file.
    let other = tempfile::tempdir().unwrap();
    let real = credence_exe();
    for name in ["credence", "credence-host"] {
        std::fs::copy(real.with_file_name(name), other.path().join(name)).unwrap();
    }
    let other_exe = other.path().join("credence");
    let first = home.run_program(&other_exe, &["get", "https://registry.example/"], b"", &[]);
    assert_eq!(first.stdout, "signed-token\n", "{first:#?}");
    let old = agent_pid(&home, &other_exe);

    let second = home.run(&["get", "https://registry.example/"]);
    assert_eq!(second.stdout, "signed-token\n", "{second:#?}");
    let new = agent_pid(&home, &real);
    assert_ne!(old, new, "this build's client is answered by this build's agent");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(old) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!alive(old), "the agent of the other build exited");
    // And the other build's client, in turn, is not answered by this build's agent.
    let third = home.run_program(&other_exe, &["get", "https://registry.example/"], b"", &[]);
    assert_eq!(third.stdout, "signed-token\n", "{third:#?}");
    assert_ne!(agent_pid(&home, &other_exe), new);
}
