//! Whole-process latency of `credence get`, against a native helper process measured in
//! the same run. Method (also in README.md, "Performance"):
//!
//! - every sample is one spawn of the real binary, stdout piped, timed from spawn to exit;
//! - the cases are interleaved round by round, so machine noise hits all of them alike;
//! - medians are reported, with p10/p90, and each median as a ratio to the floor's.
//!
//! Cases: `floor` (a native binary printing a fixed credential), `cold` (credence get with
//! an empty compiled-component cache: JIT compile every run), `warm` (cache hit, the
//! signed static-token provider is verified and runs in the sandbox), `stored` (a stored until-expiry credential
//! answers, no provider runs).
//!
//! Every case runs in-process (`CREDENCE_AGENT=0`: the thin `credence` execs
//! `credence-host`, which answers and exits), so `cold` still compiles and `warm` still
//! loads and verifies; with an agent both would be answered from its memory. What the
//! agent costs and saves is `credence-agent-bench`'s.
//!
//! `warm (bundle)` and `stored (bundle)` are the same paths in a home under an
//! organisation's policy bundle (through `CREDENCE_POLICY_DIR`): what verifying the bundle
//! and its rules costs a provider run, and what its file stamps cost a stored answer.
//!
//! Usage: `credence-bench [ROUNDS]` (default 200; cold runs every 10th round).
//! `CREDENCE_BENCH_BASELINE=/path/to/other/credence` adds `warm` and `stored` of that binary
//! (e.g. a build of the previous commit), each in a home of its own, to the same rounds.

use credence_tests::{Home, Reply, TestServer, credence_exe, time_spawn};
use std::process::Command;
use std::time::Duration;

fn time(cmd: &mut Command) -> Duration {
    time_spawn(cmd, "")
}

/// Runs each hot path once under `wrapper` (a profiler command line), with the server still
/// up, and `CREDENCE_BENCH_CASE` set to its index: a profiler reads what each one
/// executed. Stored first, as it matters most.
fn profile_each_path(home: &Home, wrapper: &str) {
    let mut words = wrapper.split_whitespace();
    let program = words.next().expect("CREDENCE_BENCH_PROFILE names a program");
    let paths: [(&[&str], &str); 5] = [
        (&["get", "https://feed.example/"], ""),
        (&["get", "https://registry.example/"], ""),
        (&["git", "get"], "protocol=https\nhost=registry.example\n\n"),
        (&["docker", "get"], "registry.example"),
        // The HTTP client: a retry sends the token exchange to the server again.
        (&["get", "https://feed.example/", "--retry"], ""),
    ];
    let credence = credence_exe();
    for (case, (args, stdin)) in paths.iter().enumerate() {
        // Once plainly first, so the profiled run finds every cache warm (the cold case
        // emptied the compiled-component cache) and never compiles.
        home.run_stdin(args, stdin.as_bytes(), &[("CREDENCE_AGENT", "0")]);
        let wrapped: Vec<&str> = words
            .clone()
            .chain([credence.to_str().expect("a UTF-8 path")])
            .chain(args.iter().copied())
            .collect();
        let case = case.to_string();
        let run = home.run_program(
            std::path::Path::new(program),
            &wrapped,
            stdin.as_bytes(),
            &[("CREDENCE_BENCH_CASE", &case), ("CREDENCE_AGENT", "0")],
        );
        assert_eq!(run.code, Some(0), "{args:?} under {program}: {run:#?}");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A home with the bench's two providers, set up and primed by its own binary.
fn bench_home(exe: std::path::PathBuf, server: &TestServer) -> Home {
    let home = Home::with_exe(exe);
    // Signed providers, so every provider run pays for verification as a user's would.
    home.install_signed(&[("static-token", &[], &[]), ("token-exchange", &[server.origin()], &[])]);
    home.write_config(&format!(
        r#"
[[provider]]
name = "static"
component = "static-token.wasm"
serves = ["https://registry.example/"]
settings = {{ token = "tok-static-123" }}
[[provider]]
name = "exchange"
component = "token-exchange.wasm"
serves = ["https://feed.example/"]
grant-origins = ["{o}"]
settings = {{ token-url = "{o}/token", client-id = "c", client-secret = "s" }}
"#,
        o = server.origin()
    ));
    // Prime: the warm cache entry and the stored credential.
    time(&mut get(&home, "https://registry.example/"));
    time(&mut get(&home, "https://feed.example/"));
    home
}

fn get(home: &Home, url: &str) -> Command {
    let mut c = home.command();
    c.args(["get", url]).env("CREDENCE_AGENT", "0");
    if home.home().parent().is_some_and(|d| d.join("policy").is_dir()) {
        c.env("CREDENCE_POLICY_DIR", home.home().parent().unwrap().join("policy"));
    }
    c
}

/// [`bench_home`] under a policy bundle that trusts its keys and admits both providers.
fn bundle_home(server: &TestServer) -> Home {
    let home = bench_home(credence_exe(), server);
    let dir = home.home().parent().unwrap().join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    let root = home.keygen("org-root");
    std::fs::write(dir.join("root.pub"), format!("{}\n", root.public)).unwrap();
    let source = dir.parent().unwrap().join("policy.toml");
    std::fs::write(
        &source,
        "organisation = \"Bench\"\nsequence = 1\nlocal-keys = true\nmax-statement-age-days = 30\n[[providers]]\nname = \"*\"\n",
    )
    .unwrap();
    let bundle = dir.join("policy.json");
    let policy_env = [("CREDENCE_POLICY_DIR", dir.to_str().unwrap())];
    let run = home.sign_policy(&source, &root, 30, &bundle, &policy_env);
    assert_eq!(run.code, Some(0), "{run:#?}");
    // Credentials made before the bundle are judged again under it on every answer: forget
    // them, and prime anew under the bundle.
    let run = home.run_with(&["forget"], &[("CREDENCE_AGENT", "0"), policy_env[0]]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    time(&mut get(&home, "https://registry.example/"));
    time(&mut get(&home, "https://feed.example/"));
    home
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let floor_exe = credence_exe().with_file_name(format!("credence-floor{}", std::env::consts::EXE_SUFFIX));
    assert!(
        floor_exe.is_file(),
        "build the floor first: cargo build -p credence-tests --bin credence-floor"
    );

    let server = TestServer::start(|_| Reply::json(200, r#"{"access_token":"tok-bench","expires_in":86400}"#));
    let home = bench_home(credence_exe(), &server);
    let baseline = std::env::var_os("CREDENCE_BENCH_BASELINE").map(|p| bench_home(p.into(), &server));
    let bundled = bundle_home(&server);
    let primed_hits = server.hits();
    let compiled = home.cache().join("credence/cwasm");

    let mut names = vec!["floor", "cold", "warm", "stored", "warm (bundle)", "stored (bundle)"];
    if baseline.is_some() {
        names.extend(["warm (baseline)", "stored (baseline)"]);
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let mut rng = fastrand::Rng::new();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..names.len()).filter(|&i| i != 1 || round % 10 == 0).collect();
        rng.shuffle(&mut order);
        for case in order {
            let elapsed = match case {
                0 => time(&mut Command::new(&floor_exe)),
                1 => {
                    let _ = std::fs::remove_dir_all(&compiled);
                    time(&mut get(&home, "https://registry.example/"))
                }
                2 => time(&mut get(&home, "https://registry.example/")),
                3 => time(&mut get(&home, "https://feed.example/")),
                4 => time(&mut get(&bundled, "https://registry.example/")),
                5 => time(&mut get(&bundled, "https://feed.example/")),
                6 => time(&mut get(
                    baseline.as_ref().expect("baseline"),
                    "https://registry.example/",
                )),
                _ => time(&mut get(baseline.as_ref().expect("baseline"), "https://feed.example/")),
            };
            samples[case].push(elapsed);
        }
    }
    assert_eq!(
        server.hits(),
        primed_hits,
        "the stored cases must not call the provider"
    );

    let medians: Vec<Duration> = samples
        .iter_mut()
        .map(|s| {
            s.sort();
            percentile(s, 0.5)
        })
        .collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| case | runs | median | p10 | p90 | median / floor |");
    println!("|---|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let s = &samples[i];
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}× |",
            s.len(),
            ms(medians[i]),
            ms(percentile(s, 0.1)),
            ms(percentile(s, 0.9)),
            medians[i].as_secs_f64() / medians[0].as_secs_f64()
        );
    }
    if baseline.is_some() {
        println!(
            "\nthis build minus baseline (medians): warm {:+.3} ms, stored {:+.3} ms",
            ms(medians[2]) - ms(medians[6]),
            ms(medians[3]) - ms(medians[7])
        );
    }
    println!(
        "\nbinary: {} ({} bytes)",
        credence_exe().display(),
        std::fs::metadata(credence_exe()).map(|m| m.len()).unwrap_or(0)
    );
    if let Some(wrapper) = std::env::var_os("CREDENCE_BENCH_PROFILE") {
        profile_each_path(&home, &wrapper.to_string_lossy());
    }
    if std::env::var_os("CREDENCE_BENCH_KEEP_HOME").is_some() {
        // For profiling one case by hand afterwards (the stored case needs no server).
        println!("home kept: {}", home.dir.path().display());
        std::mem::forget(home);
    }
}
