//! What a remote session costs a tool: `credence get` answered by this machine's agent
//! (a cached credential) from the machine itself, through ssh socket forwarding to a real
//! sshd on 127.0.0.1 (`credence remote ssh ... -N`), and through a stdio carrier (`credence
//! remote exec -- credence relay`), against the native floor (`credence-floor`).
//!
//! Method (as the other benchmarks): every round runs each case once, in a new random
//! order, one process per sample from spawn to exit; medians with p10/p90, each against
//! the floor, and the remote cases against the local one. The goal: a request over ssh
//! `-R` on loopback adds at most 2 ms at the median.
//!
//! Usage: `credence-remote-bench [ROUNDS]` (default 300). Needs sshd (`apt-get install
//! openssh-server`). Build: `cargo build --release -p credence -p credence-host -p
//! credence-tests`, then `target/release/credence-remote-bench`.

use credence_tests::{Home, Killed, Sshd, credence_exe, time_spawn};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let sshd = Sshd::start().expect("the remote benchmark needs sshd (apt-get install openssh-server)");
    let exe = credence_exe();
    let floor = exe.with_file_name("credence-floor");
    assert!(
        floor.is_file(),
        "build the floor: cargo build --release -p credence-tests"
    );

    let home = Home::new();
    home.install_signed(&[("static-token", &[], &[])]);
    home.write_config(
        "[[provider]]\nname = \"bench\"\ncomponent = \"static-token.wasm\"\nserves = [\"https://bench.example/\"]\nsettings = { token = \"tok-bench\" }\n[remote]\nallow = [\"https://bench.example/\"]\napprove = \"never\"\n",
    );
    let run_dir = home.dir.path().join("run");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&run_dir).unwrap();
    }
    let local = || {
        let mut c = home.command();
        c.env("XDG_RUNTIME_DIR", &run_dir)
            .args(["get", "https://bench.example/"]);
        c
    };
    assert!(time_spawn(&mut local(), "tok-bench") > Duration::ZERO);

    let remote_dir = tempfile::tempdir().unwrap();
    let forwarded = remote_dir.path().join("ssh.sock");
    let relayed = remote_dir.path().join("run/relay.sock");
    let mut ssh = home.command();
    ssh.env("XDG_RUNTIME_DIR", &run_dir)
        .args(["remote", "ssh", "--label", "bench-ssh", "--remote-socket"])
        .arg(&forwarded)
        .arg(sshd.destination())
        .arg("--")
        .args(sshd.ssh_args())
        .arg("-N")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ssh = Killed(ssh.spawn().unwrap());
    let mut exec = home.command();
    exec.env("XDG_RUNTIME_DIR", &run_dir)
        .args(["remote", "exec", "--label", "bench-exec", "--"])
        .arg(&exe)
        .args(["relay", "--listen"])
        .arg(&relayed)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _exec = Killed(exec.spawn().unwrap());
    wait_for(&forwarded);
    wait_for(&relayed);
    let remote = |socket: &Path| {
        let mut c = Command::new(&exe);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", remote_dir.path())
            .env("CREDENCE_HOME", remote_dir.path().join("empty"))
            .env("CREDENCE_AGENT_SOCK", socket)
            .args(["get", "https://bench.example/"]);
        c
    };
    for _ in 0..5 {
        time_spawn(&mut remote(&forwarded), "tok-bench");
        time_spawn(&mut remote(&relayed), "tok-bench");
    }

    if let Some(secs) = std::env::var("CREDENCE_BENCH_HOLD").ok().and_then(|s| s.parse().ok()) {
        // For a profiler: the sessions stay up this long, their sockets printed.
        println!("ssh: {}\nrelay: {}", forwarded.display(), relayed.display());
        std::thread::sleep(Duration::from_secs(secs));
        return;
    }
    let names = [
        "floor: a native process printing a credential",
        "credence get, local (cached in the agent)",
        "credence get, remote over ssh -R (cached in the agent)",
        "credence get, remote over a stdio carrier (relay)",
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); names.len()];
    eprintln!("{rounds} rounds...");
    let mut order: Vec<usize> = (0..names.len()).collect();
    for _ in 0..rounds {
        fastrand::shuffle(&mut order);
        for &case in &order {
            let d = match case {
                0 => time_spawn(&mut Command::new(&floor), "tok-static-123"),
                1 => time_spawn(&mut local(), "tok-bench"),
                2 => time_spawn(&mut remote(&forwarded), "tok-bench"),
                _ => time_spawn(&mut remote(&relayed), "tok-bench"),
            };
            samples[case].push(d);
        }
    }
    for s in &mut samples {
        s.sort();
    }
    let p50 = |i: usize| pct(&samples[i], 0.5);
    println!("| case | runs | median | p10 | p90 | / floor | − local (median) |");
    println!("|---|---|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let over = if i >= 2 {
            format!("{:+.2} ms", (p50(i).as_secs_f64() - p50(1).as_secs_f64()) * 1e3)
        } else {
            String::new()
        };
        println!(
            "| {name} | {} | {} | {} | {} | {:.2}× | {over} |",
            samples[i].len(),
            ms(p50(i)),
            ms(pct(&samples[i], 0.1)),
            ms(pct(&samples[i], 0.9)),
            p50(i).as_secs_f64() / p50(0).as_secs_f64()
        );
    }
    let added = p50(2).saturating_sub(p50(1));
    println!(
        "\nGoal: a remote request over ssh -R on loopback adds ≤ 2 ms at the median: {} ({}).",
        ms(added),
        if added <= Duration::from_millis(2) {
            "met"
        } else {
            "not met"
        }
    );
}
