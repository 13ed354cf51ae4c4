//! The inert WASI a stable-Rust std guest imports: empty env and args, closed stdin,
//! stdout discarded, stderr captured up to a few KiB for diagnostics, clocks and random.
//! No filesystem, no sockets: those interfaces are not even in the linker.
//!
//! `wasi:io/poll` is the one WASI call that can block for as long as the guest likes (a
//! monotonic-clock pollable is `std::thread::sleep`), so it is ours, not wasmtime-wasi's:
//! it waits at most until the call's wall-clock deadline, and the time it waits is
//! blocked time, not CPU time, as for `fetch` and `prompt` ([`CallClock::block_measured`]).
//! The streams cannot block: stdin is closed, stdout a sink and stderr an in-memory pipe
//! that refuses writes past its capacity.

use super::limits::{CallClock, LimitHit};
use super::store::ProviderStore;
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::DynPollable;
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

/// What a blocking WASI call needs from the store: the table its pollables live in, the
/// call's clock, and where to record the limit that ends it.
pub struct DeadlineIo<'a> {
    pub table: &'a mut ResourceTable,
    pub clock: &'a mut CallClock,
    pub hit: &'a mut Option<LimitHit>,
}

struct DeadlinePoll;
impl HasData for DeadlinePoll {
    type Data<'a> = DeadlineIo<'a>;
}

impl DeadlineIo<'_> {
    /// Awaits one of wasmtime-wasi's own poll futures, but no longer than the wall clock
    /// allows, crediting the time it was pending. Past the deadline the guest is stopped
    /// (a trap) with the wall-clock limit recorded: returning "nothing ready" would only
    /// let it poll again.
    fn wait<R>(&mut self, wait: impl AsyncFnOnce(&mut ResourceTable) -> wasmtime::Result<R>) -> wasmtime::Result<R> {
        let table = &mut *self.table;
        let waited = self.clock.block_measured(&mut *self.hit, |time_left| {
            wasmtime_wasi::runtime::in_tokio(async move {
                // Built inside the runtime: a tokio timer needs one to register with.
                let mut bounded = std::pin::pin!(tokio::time::timeout(time_left, wait(table)));
                let mut pending_since = None;
                let result = std::future::poll_fn(|cx| {
                    let poll = bounded.as_mut().poll(cx);
                    if poll.is_pending() {
                        pending_since.get_or_insert_with(Instant::now);
                    }
                    poll
                })
                .await;
                (result, pending_since.map_or(Duration::ZERO, |since| since.elapsed()))
            })
        });
        match waited {
            Ok(result) => result,
            Err(_elapsed) => {
                self.hit.get_or_insert(LimitHit::Wall { limit: self.clock.wall });
                Err(wasmtime::Trap::Interrupt.into())
            }
        }
    }
}

impl sync::io::poll::Host for DeadlineIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        self.wait(async |table| io::poll::Host::poll(table, pollables).await)
    }
}

impl sync::io::poll::HostPollable for DeadlineIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // Never waits: it polls the future once.
        sync::io::poll::HostPollable::ready(&mut *self.table, pollable)
    }
    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        self.wait(async |table| io::poll::HostPollable::block(table, pollable).await)
    }
    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        sync::io::poll::HostPollable::drop(&mut *self.table, pollable)
    }
}

pub fn add_inert_wasi(l: &mut Linker<ProviderStore>) -> wasmtime::Result<()> {
    type T = ProviderStore;
    io::error::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    sync::io::poll::add_to_linker::<T, DeadlinePoll>(l, ProviderStore::deadline_io)?;
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
