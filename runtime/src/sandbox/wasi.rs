//! The inert WASI a stable-Rust std guest imports: empty env and args, closed stdin,
//! stdout discarded, stderr captured up to a few KiB for diagnostics, clocks and random.
//! No filesystem, no sockets: those interfaces are not even in the linker.

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings::{cli, clocks, io, random, sync};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiView};

pub const STDERR_CAPTURE: usize = 4096;

pub fn inert_ctx(stderr: MemoryOutputPipe) -> WasiCtx {
    let mut b = WasiCtx::builder();
    // Explicit, so a change of wasmtime-wasi defaults cannot widen what a provider gets.
    b.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .max_random_size(64 * 1024)
        .stderr(stderr);
    b.build()
}

struct Io;
impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

pub fn add_inert_wasi<T: WasiView + 'static>(l: &mut Linker<T>) -> wasmtime::Result<()> {
    io::error::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    sync::io::poll::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    sync::io::streams::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    Ok(())
}
