//! Hostile providers against the sandbox: each is stopped with its own clear error, the
//! host stays healthy, and the next request in the same home still works. The hostile
//! provider is signed by a trusted test key, so it runs exactly as a real provider does.

use credence_tests::{Home, Reply, TestServer, assert_refused_then_healthy, hostile_home, manifest};

const UNSIGNED: &str = "--allow-unsigned";

#[test]
fn infinite_loop_is_stopped_by_the_cpu_limit() {
    let home = hostile_home(&[], r#"attack = "infinite-loop""#, "cpu-ms = 300");
    assert_refused_then_healthy(&home, "provider hostile exceeded its CPU time limit of 300 ms", 3);
}

#[test]
fn infinite_loop_is_stopped_by_the_wall_clock_limit_when_it_comes_first() {
    let home = hostile_home(&[], r#"attack = "infinite-loop""#, "cpu-ms = 60000, wall-ms = 400");
    assert_refused_then_healthy(&home, "provider hostile exceeded its wall-clock limit of 400 ms", 3);
}

#[test]
fn sleeping_provider_ends_at_the_wall_clock_limit() {
    // An hour's sleep is one blocking `wasi:io/poll`; it must end at the 2 s deadline.
    let home = hostile_home(&[], r#"attack = "sleep", ms = "3600000""#, "wall-ms = 2000");
    let run = assert_refused_then_healthy(&home, "provider hostile exceeded its wall-clock limit of 2 s", 3);
    assert!(run.elapsed < std::time::Duration::from_secs(10), "{:?}", run.elapsed);
}

#[test]
fn time_asleep_is_not_counted_as_cpu_time() {
    // A device-flow provider waits between polls; waiting is not computing.
    let home = hostile_home(
        &[],
        r#"attack = "sleep", ms = "3000""#,
        "cpu-ms = 1000, wall-ms = 10000",
    );
    let run = home.run(&["get", "https://evil.example/"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "slept 3000 ms\n"),
        "{run:#?}"
    );
}

#[test]
fn spinning_on_polls_that_are_ready_at_once_is_stopped_by_the_cpu_limit() {
    // Time in `wasi:io/poll` is credited only while it waits: a guest that never waits
    // still burns CPU, in the host's code as in its own.
    let home = hostile_home(&[], r#"attack = "spin-poll""#, "cpu-ms = 300, wall-ms = 8000");
    assert_refused_then_healthy(&home, "provider hostile exceeded its CPU time limit of 300 ms", 3);
}

#[test]
fn memory_bomb_is_stopped_by_the_memory_limit() {
    let home = hostile_home(&[], r#"attack = "memory-bomb""#, "memory-mib = 32");
    assert_refused_then_healthy(&home, "provider hostile exceeded its memory limit of 32 MiB", 3);
}

/// A provider component whose core module has four linear memories and grows the last
/// three by 48 MiB each: every memory stays under a 64 MiB limit, together they are 144
/// MiB. Then it answers `not-mine`. No Rust guest can be this, so it is assembled here:
/// the module with wasm-encoder, the component around it with wit-component, from the
/// real `wit/` contract.
fn four_memory_component() -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection, GlobalSection, GlobalType,
        MemArg, MemorySection, MemoryType, Module, TypeSection, ValType,
    };
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    types.ty().function([ValType::I32; 4], [ValType::I32]);
    let mut functions = FunctionSection::new();
    functions.function(0).function(1);
    let mut memories = MemorySection::new();
    for _ in 0..4 {
        memories.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    }
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i32_const(1024),
    );
    let mut exports = ExportSection::new();
    exports
        .export("memory", ExportKind::Memory, 0)
        .export(
            "credence:provider/credential-provider@0.1.0#get-credential",
            ExportKind::Func,
            0,
        )
        .export("cabi_realloc", ExportKind::Func, 1);
    let mut code = CodeSection::new();
    let mut get_credential = Function::new([]);
    {
        let mut body = get_credential.instructions();
        for memory in 1..4 {
            body.i32_const(48 * 16).memory_grow(memory).drop();
        }
        // result<credential, credential-error> at 16: `err` (1), and at 24 (the payload,
        // 8-aligned for credential's u64) the error case 0, `not-mine`.
        body.i32_const(16)
            .i32_const(1)
            .i32_store8(MemArg {
                offset: 0,
                align: 0,
                memory_index: 0,
            })
            .i32_const(16)
            .end();
    }
    code.function(&get_credential);
    // A bump allocator for the host to lower the request into memory 0.
    let mut realloc = Function::new([]);
    realloc
        .instructions()
        .global_get(0)
        .global_get(0)
        .local_get(3)
        .i32_add()
        .i32_const(7)
        .i32_add()
        .i32_const(-8)
        .i32_and()
        .global_set(0)
        .end();
    code.function(&realloc);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&memories)
        .section(&globals)
        .section(&exports)
        .section(&code);
    let mut bytes = module.finish();

    let mut resolve = wit_parser::Resolve::default();
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/v0.1");
    let (package, _) = resolve.push_dir(&wit).expect("the wit/ contract parses");
    let world = resolve.select_world(&[package], Some("provider")).unwrap();
    wit_component::embed_component_metadata(&mut bytes, &resolve, world, wit_component::StringEncoding::UTF8).unwrap();
    wit_component::ComponentEncoder::default()
        .module(&bytes)
        .expect("a valid core module for the provider world")
        .validate(true)
        .encode()
        .expect("a valid component")
}

#[test]
fn four_memories_cannot_each_take_the_whole_memory_limit() {
    let home = hostile_home(&[], r#"attack = "not-mine""#, "");
    let providers = home.home().join("providers");
    std::fs::write(providers.join("four-memories.wasm"), four_memory_component()).unwrap();
    std::fs::write(
        providers.join("four-memories.manifest.toml"),
        manifest("four-memories", &[], &[]),
    )
    .unwrap();
    let config = std::fs::read_to_string(home.home().join("config.toml")).unwrap();
    home.write_config(&config.replace(
        "name = \"hostile\"",
        "name = \"hostile\"\ncomponent = \"four-memories.wasm\"",
    ));
    // Signed with the key `hostile_home` made, so it runs as a real provider does.
    let key = home.dir.path().join("keys/test-publisher.secret");
    let signed = home.run(&[
        "sign",
        providers.join("four-memories.wasm").to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(signed.code, Some(0), "{signed:#?}");
    let run = home.run(&["get", "https://evil.example/"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr
            .contains("provider hostile exceeded its memory limit of 64 MiB"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_100_mb_answer_is_refused_by_the_output_limit() {
    let home = hostile_home(&[], r#"attack = "huge-answer", mib = "100""#, "memory-mib = 256");
    assert_refused_then_healthy(
        &home,
        "provider hostile returned a credential of 100 MiB, over the output limit of 64 KiB",
        3,
    );
}

#[test]
fn a_100_mb_answer_under_default_limits_hits_the_memory_limit_first() {
    let home = hostile_home(&[], r#"attack = "huge-answer", mib = "100""#, "");
    assert_refused_then_healthy(&home, "provider hostile exceeded its memory limit of 64 MiB", 3);
}

#[test]
fn fetch_to_an_undeclared_host_is_denied_and_never_reaches_it() {
    let target = TestServer::start(|_| Reply::json(200, "{}"));
    let declared = TestServer::start(|_| Reply::json(200, "{}"));
    let settings = format!(r#"attack = "undeclared-host", target = "{}/steal""#, target.origin());
    let home = hostile_home(&[declared.origin()], &settings, "");
    assert_refused_then_healthy(
        &home,
        &format!(
            "{} is not an allowed origin (allowed: {})",
            target.origin(),
            declared.origin()
        ),
        3,
    );
    assert_eq!(target.hits(), 0);
}

#[test]
fn an_origin_granted_by_config_but_not_declared_is_denied() {
    let target = TestServer::start(|_| Reply::json(200, "{}"));
    let home = hostile_home(
        &[],
        &format!(r#"attack = "undeclared-host", target = "{}/""#, target.origin()),
        "",
    );
    let config = std::fs::read_to_string(home.home().join("config.toml")).unwrap();
    home.write_config(&config.replace(
        "grant-origins = []",
        &format!("grant-origins = [\"{}\"]", target.origin()),
    ));
    assert_refused_then_healthy(&home, "is not an allowed origin (allowed: none)", 3);
    assert_eq!(target.hits(), 0);
}

#[test]
fn a_redirect_is_handed_back_and_following_it_off_origin_is_denied() {
    let elsewhere = TestServer::start(|_| Reply::json(200, "{}"));
    let to = format!("{}/collect", elsewhere.origin());
    let granted = TestServer::start(move |_| Reply::redirect(&to));
    let settings = format!(r#"attack = "follow-redirect", target = "{}/start""#, granted.origin());
    let home = hostile_home(&[granted.origin()], &settings, "");
    assert_refused_then_healthy(&home, &format!("{} is not an allowed origin", elsewhere.origin()), 3);
    assert_eq!(granted.hits(), 1, "the provider saw the 302 itself");
    assert_eq!(elsewhere.hits(), 0, "the host never followed it");
}

#[test]
fn a_component_with_a_forbidden_import_is_refused_at_load() {
    let home = Home::new();
    home.install("net-escape", "net-escape", &manifest("net-escape", &[], &[]));
    home.write_config("[[provider]]\nname = \"net-escape\"\nserves = [\"https://evil.example/\"]\n");
    let run = home.run_with(
        &[UNSIGNED, "get", "https://evil.example/"],
        &[("CREDENCE_LOG", "debug")],
    );
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr
            .contains("provider net-escape is refused: it imports wasi:sockets/"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("which credence does not grant"), "{}", run.stderr);
    assert!(!run.stderr.contains("provider fetch"), "nothing ran");
}

#[test]
fn ask_in_non_interactive_mode_fails_at_once() {
    let home = hostile_home(&[], r#"attack = "prompt-anyway""#, "");
    let run = home.run(&["get", "https://evil.example/", "--non-interactive"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("prompt refused: PromptError::NotInteractive"),
        "{}",
        run.stderr
    );
}

#[test]
fn basic_prompt_in_non_interactive_mode_needs_interaction() {
    let home = Home::new();
    home.install("basic-prompt", "basic-prompt", &manifest("basic-prompt", &[], &["ask"]));
    home.write_config("[[provider]]\nname = \"basic-prompt\"\nserves = [\"https://git.example/\"]\n");
    let run = home.run(&[UNSIGNED, "get", "https://git.example/repo.git", "--non-interactive"]);
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert!(
        run.stderr.contains("provider basic-prompt needs interaction"),
        "{}",
        run.stderr
    );
}

/// `credence <args>` in a new session, which has no controlling terminal, whatever the
/// test runner has.
fn without_a_terminal(home: &Home, args: &[&str]) -> (Option<i32>, String, Vec<u8>) {
    let mut cmd = home.command();
    cmd.args(args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        unsafe {
            cmd.pre_exec(|| {
                libc_setsid();
                Ok(())
            });
        }
    }
    let (out, _) = credence_tests::run_bounded(cmd, std::time::Duration::from_secs(60));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.stdout,
    )
}

#[test]
fn a_prompt_without_a_terminal_fails_cleanly() {
    // The prompt must fail, not fall back to stdin or stdout (the tool's protocol channel).
    let home = hostile_home(&[], r#"attack = "prompt-anyway""#, "");
    let (code, stderr, stdout) = without_a_terminal(&home, &["get", "https://evil.example/"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("prompt refused: PromptError::NotInteractive"),
        "{stderr}"
    );
    assert!(stdout.is_empty());
}

#[test]
fn get_without_a_terminal_tells_the_provider_it_may_not_prompt() {
    // Without a terminal no prompt can be shown, so the request is not interactive and a
    // provider that must ask answers needs-interaction (exit 4), instead of being told it
    // may prompt and failing at the prompt (exit 3).
    let home = Home::new();
    home.install("basic-prompt", "basic-prompt", &manifest("basic-prompt", &[], &["ask"]));
    home.write_config("[[provider]]\nname = \"basic-prompt\"\nserves = [\"https://git.example/\"]\n");
    let (code, stderr, stdout) = without_a_terminal(&home, &[UNSIGNED, "get", "https://git.example/repo.git"]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("provider basic-prompt needs interaction"), "{stderr}");
    assert!(stdout.is_empty());
    let audit = home.run(&["audit", "--json"]);
    assert!(audit.stdout.contains(r#""interactive":false"#), "{}", audit.stdout);
}

#[cfg(unix)]
fn libc_setsid() {
    unsafe extern "C" {
        fn setsid() -> i32;
    }
    // SAFETY: setsid has no memory-safety preconditions; called in the child after fork.
    unsafe {
        setsid();
    }
}

#[test]
fn a_credential_with_a_newline_is_refused() {
    let home = hostile_home(&[], r#"attack = "newline-secret""#, "");
    assert_refused_then_healthy(
        &home,
        "returned an unusable credential: the secret contains control characters",
        3,
    );
}

#[test]
fn a_panicking_provider_is_reported_as_a_crash() {
    let home = hostile_home(&[], r#"attack = "panic""#, "");
    assert_refused_then_healthy(&home, "provider hostile crashed: wasm trap", 3);
}
