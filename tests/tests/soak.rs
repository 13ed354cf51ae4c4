//! Soak: a thousand requests mixing well-behaved and hostile providers, once as a thousand
//! one-shot `credence get` processes and once through one long-running NuGet plugin
//! process. Nothing may accumulate: no process left behind, no open files or memory growing
//! in the long-running host, no cache or state entries beyond the expected ones, and exactly
//! one audit line per request.

use credence_tests::{Home, NuGet, Reply, TestServer, open_files, status_of};
use std::path::Path;
use std::time::Duration;

const CALLS: usize = 1000;

/// (URL served, expected exit code of `credence get`, what the provider does)
const MIX: &[(&str, i32, &str)] = &[
    ("https://good.example/", 0, "static token"),
    ("https://feed.example/", 0, "token exchange, stored until expiry"),
    ("https://loop.example/", 3, "infinite loop"),
    ("https://bomb.example/", 3, "memory bomb"),
    ("https://crash.example/", 3, "panic"),
    ("https://steal.example/", 3, "fetch to an undeclared origin"),
    ("https://hoard.example/", 3, "handle hoarding"),
    ("https://decline.example/", 1, "not mine"),
];

struct Soak {
    home: Home,
    tokens: TestServer,
    victim: TestServer,
}

fn soak_home() -> Soak {
    let tokens = TestServer::start(|_| Reply::json(200, r#"{"access_token":"tok-soak","expires_in":86400}"#));
    let victim = TestServer::start(|_| Reply::json(200, "{}"));
    let home = Home::new();
    home.install_signed(&[
        ("static-token", &[], &[]),
        ("token-exchange", &[tokens.origin()], &[]),
        ("hostile", &[], &[]),
    ]);
    let hostile = |name: &str, serves: &str, settings: &str, limits: &str| {
        format!(
            "[[provider]]\nname = {name:?}\ncomponent = \"hostile.wasm\"\nserves = [{serves:?}]\nsettings = {{ {settings} }}\nlimits = {{ {limits} }}\n"
        )
    };
    let mut config = format!(
        r#"
[[provider]]
name = "good"
component = "static-token.wasm"
serves = ["https://good.example/"]
settings = {{ token = "tok-good" }}
[[provider]]
name = "exchange"
component = "token-exchange.wasm"
serves = ["https://feed.example/"]
grant-origins = ["{o}"]
settings = {{ token-url = "{o}/token", client-id = "c", client-secret = "s" }}
"#,
        o = tokens.origin()
    );
    config += &hostile(
        "loop",
        "https://loop.example/",
        r#"attack = "infinite-loop""#,
        "cpu-ms = 20",
    );
    config += &hostile(
        "bomb",
        "https://bomb.example/",
        r#"attack = "memory-bomb""#,
        "memory-mib = 16",
    );
    config += &hostile("crash", "https://crash.example/", r#"attack = "panic""#, "");
    config += &hostile(
        "steal",
        "https://steal.example/",
        &format!(r#"attack = "undeclared-host", target = "{}/loot""#, victim.origin()),
        "",
    );
    config += &hostile("hoard", "https://hoard.example/", r#"attack = "hoard-handles""#, "");
    config += &hostile("decline", "https://decline.example/", r#"attack = "not-mine""#, "");
    home.write_config(&config);
    Soak { home, tokens, victim }
}

fn files_under(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((path.display().to_string(), len));
        }
    }
    out.sort();
    out
}

/// Processes (of this user) whose environment names this home: anything credence left
/// running after it answered.
/// The credence processes of `home` other than its agent, which outlives requests by
/// design (and is counted on its own).
fn processes_of(home: &Home) -> Vec<u32> {
    let marker = format!("CREDENCE_HOME={}", home.home().display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).nth(1) == Some(b"agent".as_slice()) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

fn audit_lines(home: &Home) -> usize {
    std::fs::read_to_string(home.state().join("credence/audit.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_thousand_one_shot_calls_leave_nothing_behind() {
    let soak = soak_home();
    let home = &soak.home;
    // One round first: every component compiled once, the exchanged token stored.
    for (url, code, what) in MIX {
        let run = home.run(&["get", url]);
        assert_eq!(run.code, Some(*code), "{what}: {run:#?}");
    }
    let cache_after_first_round = files_under(&home.cache());
    assert_eq!(
        home.compiled_entries(),
        3,
        "one compiled entry per component, not per instance"
    );
    let state_after_first_round = files_under(&home.state().join("credence/state"));

    for i in 0..CALLS - MIX.len() {
        let (url, code, what) = MIX[i % MIX.len()];
        let run = home.run(&["get", url]);
        assert_eq!(run.code, Some(code), "call {i} ({what}): {run:#?}");
        if code == 0 {
            assert!(run.stdout.starts_with("tok-"), "call {i} ({what}): {run:#?}");
        }
    }

    assert_eq!(audit_lines(home), CALLS, "one audit line per request");
    assert_eq!(
        files_under(&home.cache()),
        cache_after_first_round,
        "the cache did not grow"
    );
    assert_eq!(
        files_under(&home.state().join("credence/state")).len(),
        state_after_first_round.len(),
        "no state entries beyond the first round's"
    );
    assert_eq!(soak.tokens.hits(), 1, "the exchanged token was stored and reused");
    assert_eq!(
        soak.victim.hits(),
        0,
        "no hostile call ever reached the undeclared origin"
    );
    assert_eq!(
        processes_of(home),
        Vec::<u32>::new(),
        "no credence process outlived its answer"
    );
}
#[test]
fn a_thousand_requests_through_one_long_running_plugin_do_not_accumulate() {
    let soak = soak_home();
    let mut nuget = NuGet::session(&soak.home, &[]);
    let pid = nuget.child.id();
    let mut ask = |i: usize| {
        let (url, code, what) = MIX[i % MIX.len()];
        let r = nuget.request(
            &format!("s{i}"),
            "GetAuthenticationCredentials",
            serde_json::json!({"Uri": url, "IsRetry": false, "IsNonInteractive": true, "CanShowDialog": false}),
        );
        // NuGet v2 has no "not mine": a source nobody serves is an Error with a message.
        let expected = if code == 0 { "Success" } else { "Error" };
        assert_eq!(r["Payload"]["ResponseCode"], expected, "request {i} ({what}): {r}");
    };
    // Warm-up: every component compiled and every code path taken a few times.
    for i in 0..100 {
        ask(i);
    }
    let sample = || (open_files(pid), status_of(pid, "VmRSS"), status_of(pid, "Threads"));
    let (files_warm, rss_warm, threads_warm) = sample();
    for i in 100..CALLS {
        ask(i);
    }
    let (files_end, rss_end, threads_end) = sample();
    println!(
        "plugin after warm-up: {files_warm} open files, {rss_warm} KiB resident, {threads_warm} threads; \
         after {CALLS}: {files_end}, {rss_end} KiB, {threads_end}"
    );
    assert_eq!(
        files_end, files_warm,
        "open files after warm-up vs after {CALLS} requests"
    );
    // A request's threads (the call, its Progress timer) end with its answer.
    assert!(
        threads_end <= threads_warm + 2,
        "threads: {threads_warm} -> {threads_end}"
    );
    // Flat, not "some": a per-request leak of a few KiB shows up as several MiB here.
    assert!(
        rss_end < rss_warm + 2 * 1024,
        "resident memory grew from {rss_warm} KiB to {rss_end} KiB over {} requests",
        CALLS - 100
    );
    assert_eq!(audit_lines(&soak.home), CALLS);
    assert_eq!(soak.victim.hits(), 0);
    assert_eq!(soak.tokens.hits(), 1);
    assert_eq!(soak.home.compiled_entries(), 3);
    nuget.send(serde_json::json!({"RequestId": "end", "Type": "Request", "Method": "Close"}));
    let exited = nuget.child.wait().unwrap();
    assert!(exited.success());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(processes_of(&soak.home), Vec::<u32>::new());
}
