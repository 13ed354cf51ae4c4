//! Resource limits for one provider call, and the record of which one it hit.

use std::fmt;
use std::time::{Duration, Instant};

pub const DEFAULT_MEMORY_MIB: u32 = 64;
pub const DEFAULT_CPU_MS: u64 = 10_000;
pub const DEFAULT_WALL_MS: u64 = 120_000;
/// A sign-in through a browser or a device code takes minutes, not seconds.
pub const DEFAULT_INTERACTIVE_WALL_MS: u64 = 15 * 60_000;
/// Hard ceilings no manifest or config can raise.
const MAX_MEMORY_MIB: u32 = 1024;
/// [`MAX_MEMORY_MIB`] in bytes: the largest memory a pooled slot must hold.
pub const MAX_MEMORY_BYTES: usize = (MAX_MEMORY_MIB as usize) << 20;
const MAX_CPU_MS: u64 = 120_000;
const MAX_WALL_MS: u64 = 30 * 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderLimits {
    pub memory_bytes: usize,
    pub cpu: Duration,
    pub wall: Duration,
    /// The wall clock once the call shows a device code or authorizes (never shorter than
    /// `wall`).
    pub interactive_wall: Duration,
    /// Size of the credential a provider may return (secret + user name + headers).
    pub output_bytes: usize,
    /// Size of the opaque state a provider may ask the host to keep.
    pub state_bytes: usize,
    /// HTTP requests in one call: a token exchange needs a handful; a provider chasing a
    /// redirect loop or hammering a server is stopped here.
    pub fetches: usize,
    /// WASI handles (streams, pollables) open at once in the host's resource table.
    pub handles: usize,
}

impl ProviderLimits {
    /// HTTP requests a call may make: a sign-in polls for as long as the user takes (at
    /// least a second apart, as the servers ask), so once interactive a call gets one more
    /// request per second of its interactive wall clock.
    pub fn fetches_for(&self, interactive: bool) -> usize {
        if interactive {
            self.fetches + self.interactive_wall.as_secs() as usize
        } else {
            self.fetches
        }
    }

    pub fn from_config(limits: credence_signing::Limits) -> Self {
        let memory_mib = limits.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB).clamp(1, MAX_MEMORY_MIB);
        let wall = Duration::from_millis(limits.wall_ms.unwrap_or(DEFAULT_WALL_MS).clamp(1, MAX_WALL_MS));
        let interactive_wall = Duration::from_millis(
            limits
                .interactive_wall_ms
                .unwrap_or(DEFAULT_INTERACTIVE_WALL_MS)
                .clamp(1, MAX_WALL_MS),
        );
        ProviderLimits {
            memory_bytes: (memory_mib as usize) << 20,
            cpu: Duration::from_millis(limits.cpu_ms.unwrap_or(DEFAULT_CPU_MS).clamp(1, MAX_CPU_MS)),
            wall,
            interactive_wall: interactive_wall.max(wall),
            output_bytes: 64 << 10,
            state_bytes: 64 << 10,
            fetches: 64,
            handles: 256,
        }
    }
}

/// Which limit stopped a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitHit {
    Memory { limit: usize },
    Cpu { limit: Duration },
    Wall { limit: Duration },
    Output { size: usize, limit: usize },
    State { size: usize, limit: usize },
    Fetches { limit: usize },
    Handles { limit: usize },
    Instances,
}

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitHit::Memory { limit } => {
                write!(f, "exceeded its memory limit of {}", human_bytes(*limit))
            }
            LimitHit::Cpu { limit } => write!(f, "exceeded its CPU time limit of {}", human_duration(*limit)),
            LimitHit::Wall { limit } => write!(f, "exceeded its wall-clock limit of {}", human_duration(*limit)),
            LimitHit::Output { size, limit } => {
                write!(
                    f,
                    "returned a credential of {}, over the output limit of {}",
                    human_bytes(*size),
                    human_bytes(*limit)
                )
            }
            LimitHit::State { size, limit } => {
                write!(
                    f,
                    "asked to keep {} of state, over the limit of {}",
                    human_bytes(*size),
                    human_bytes(*limit)
                )
            }
            LimitHit::Fetches { limit } => write!(f, "exceeded its limit of {limit} HTTP requests in one call"),
            LimitHit::Handles { limit } => write!(f, "exceeded its limit of {limit} open handles"),
            LimitHit::Instances => write!(f, "exceeded the limit on instances, tables or memories"),
        }
    }
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

fn human_duration(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Memory and table growth for one store: records the hit, then traps, so the error
/// names the limit instead of looking like a guest panic.
///
/// wasmtime asks once per linear memory and per table (at creation, with `current` 0, and
/// at every growth), and a component may hold several core instances, each with its own
/// memories and tables. So the limit is on their sum: every byte of every memory, plus
/// every table element at [`TABLE_ELEMENT_BYTES`], counts against the one memory limit,
/// and the number of instances, memories and tables is bounded too.
pub struct Limiter {
    pub memory_bytes: usize,
    pub hit: Option<LimitHit>,
    /// Bytes of all memories and tables of the store so far (they never shrink).
    used_bytes: usize,
    /// Table elements of all tables so far.
    table_elements: usize,
    /// What the last approved growth added, taken back if wasmtime then fails to grow
    /// (past the memory's own maximum, or out of host memory), so failed attempts are
    /// not charged.
    last_growth: usize,
    last_table_growth: usize,
}

/// Table elements of all tables together: a provider needs a few hundred.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// What one table element costs the host (a pointer), charged to the memory limit.
pub const TABLE_ELEMENT_BYTES: usize = 8;
/// Core instances, tables and memories of one provider: a Rust component has a handful.
pub const MAX_INSTANCES: usize = 16;
pub const MAX_TABLES: usize = 16;
pub const MAX_MEMORIES: usize = 4;

impl Limiter {
    pub fn new(memory_bytes: usize) -> Self {
        Limiter {
            memory_bytes,
            hit: None,
            used_bytes: 0,
            table_elements: 0,
            last_growth: 0,
            last_table_growth: 0,
        }
    }

    /// Charges `bytes` more to the memory limit, or records the hit.
    fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        let total = self.used_bytes.saturating_add(bytes);
        if total > self.memory_bytes {
            self.hit = Some(LimitHit::Memory {
                limit: self.memory_bytes,
            });
            wasmtime::bail!(
                "memory limit of {} bytes reached (all memories and tables together)",
                self.memory_bytes
            );
        }
        self.used_bytes = total;
        Ok(())
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        self.charge(growth)?;
        self.last_growth = growth;
        Ok(true)
    }
    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.used_bytes -= std::mem::take(&mut self.last_growth);
        Ok(())
    }
    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let elements = self.table_elements.saturating_add(growth);
        if elements > MAX_TABLE_ELEMENTS {
            self.hit = Some(LimitHit::Instances);
            wasmtime::bail!("table limit of {MAX_TABLE_ELEMENTS} elements reached (all tables together)");
        }
        self.charge(growth.saturating_mul(TABLE_ELEMENT_BYTES))?;
        self.table_elements = elements;
        self.last_table_growth = growth;
        Ok(true)
    }
    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        let growth = std::mem::take(&mut self.last_table_growth);
        self.table_elements -= growth;
        self.used_bytes -= growth * TABLE_ELEMENT_BYTES;
        Ok(())
    }
    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
    fn tables(&self) -> usize {
        MAX_TABLES
    }
    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// CPU and wall-clock accounting. "CPU time" is time spent running guest code: the time
/// the guest waits in host calls (fetch, prompt) is credited back, so a slow server or a
/// slow typist does not count against the provider's compute budget (the wall clock does).
pub struct CallClock {
    pub started: Instant,
    pub blocked: Duration,
    pub cpu: Duration,
    pub wall: Duration,
}

impl CallClock {
    pub fn new(limits: &ProviderLimits) -> Self {
        CallClock {
            started: Instant::now(),
            blocked: Duration::ZERO,
            cpu: limits.cpu,
            wall: limits.wall,
        }
    }

    /// Whether the call became interactive (its wall clock was widened).
    pub fn is_interactive(&self, limits: &ProviderLimits) -> bool {
        self.wall > limits.wall
    }

    /// The call showed a device code or started an authorization: from now on the wall
    /// clock is the interactive one. CPU time stays limited as before.
    pub fn become_interactive(&mut self, interactive_wall: Duration) {
        self.wall = self.wall.max(interactive_wall);
    }

    pub fn wall_left(&self) -> Duration {
        self.wall.saturating_sub(self.started.elapsed())
    }

    /// Runs a blocking host call (fetch, prompt) given the wall-clock time left, and
    /// credits the time it took back to the CPU budget. A call that ran out the wall clock
    /// (a server that never answers, a prompt nobody answers, a long sleep) is the
    /// wall-clock limit's doing, whatever the provider makes of the error it gets:
    /// recorded in `hit` here, it names the limit even if the guest returns first.
    pub fn block<R>(&mut self, hit: &mut Option<LimitHit>, call: impl FnOnce(Duration) -> R) -> R {
        self.block_measured(hit, |time_left| {
            let started = Instant::now();
            let result = call(time_left);
            (result, started.elapsed())
        })
    }

    /// [`block`](Self::block) for a call that measures how long it really waited, and
    /// only that is credited: a `wasi:io/poll` that finds its pollable ready at once was
    /// the guest's work (a guest spinning on zero-timeout polls must still meet its CPU
    /// limit), one that sleeps was not.
    pub fn block_measured<R>(&mut self, hit: &mut Option<LimitHit>, call: impl FnOnce(Duration) -> (R, Duration)) -> R {
        let (result, waited) = call(self.wall_left());
        self.blocked += waited;
        if self.wall_left().is_zero() && hit.is_none() {
            *hit = Some(LimitHit::Wall { limit: self.wall });
        }
        result
    }

    /// Called at each epoch deadline: the limit now exceeded, or the time left.
    pub fn check(&self) -> Result<Duration, LimitHit> {
        let elapsed = self.started.elapsed();
        if elapsed >= self.wall {
            return Err(LimitHit::Wall { limit: self.wall });
        }
        let running = elapsed.saturating_sub(self.blocked);
        if running >= self.cpu {
            return Err(LimitHit::Cpu { limit: self.cpu });
        }
        Ok((self.cpu - running).min(self.wall - elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_messages_name_the_limit() {
        assert_eq!(
            LimitHit::Memory { limit: 64 << 20 }.to_string(),
            "exceeded its memory limit of 64 MiB"
        );
        assert_eq!(
            LimitHit::Cpu {
                limit: Duration::from_millis(250)
            }
            .to_string(),
            "exceeded its CPU time limit of 250 ms"
        );
        assert_eq!(
            LimitHit::Output {
                size: 100 << 20,
                limit: 64 << 10
            }
            .to_string(),
            "returned a credential of 100 MiB, over the output limit of 64 KiB"
        );
    }

    fn clock(cpu_ms: u64, wall_ms: u64) -> CallClock {
        CallClock::new(&ProviderLimits::from_config(credence_signing::Limits {
            memory_mib: None,
            cpu_ms: Some(cpu_ms),
            wall_ms: Some(wall_ms),
            interactive_wall_ms: None,
        }))
    }

    #[test]
    fn time_blocked_in_a_host_call_is_not_cpu_time() {
        let mut clock = clock(50, 10_000);
        let mut hit = None;
        clock.block(&mut hit, |_| std::thread::sleep(Duration::from_millis(150)));
        assert_eq!(hit, None);
        assert!(clock.check().is_ok(), "150 ms asleep is not 50 ms of CPU");
    }

    #[test]
    fn a_host_call_that_outlasts_the_wall_clock_records_the_wall_clock_limit() {
        let mut clock = clock(10_000, 100);
        let mut hit = None;
        clock.block(&mut hit, |time_left| {
            assert!(time_left <= Duration::from_millis(100));
            std::thread::sleep(time_left);
        });
        assert_eq!(
            hit,
            Some(LimitHit::Wall {
                limit: Duration::from_millis(100)
            })
        );
        assert_eq!(
            clock.check(),
            Err(LimitHit::Wall {
                limit: Duration::from_millis(100)
            })
        );
    }

    #[test]
    fn four_memories_cannot_each_take_the_whole_memory_limit() {
        use wasmtime::ResourceLimiter;
        let mib = 1 << 20;
        let mut limiter = Limiter::new(64 * mib);
        // Four memories created at 20 MiB each: 80 MiB together.
        for _ in 0..3 {
            assert!(limiter.memory_growing(0, 20 * mib, None).unwrap());
        }
        assert!(limiter.memory_growing(0, 20 * mib, None).is_err());
        assert_eq!(limiter.hit, Some(LimitHit::Memory { limit: 64 * mib }));
    }

    #[test]
    fn growth_of_any_memory_or_table_counts_against_the_one_limit() {
        use wasmtime::ResourceLimiter;
        let mib = 1 << 20;
        let mut limiter = Limiter::new(64 * mib);
        assert!(limiter.memory_growing(0, 30 * mib, None).unwrap());
        assert!(limiter.memory_growing(0, 30 * mib, None).unwrap());
        // A failed growth (past the memory's own maximum) is not charged.
        assert!(limiter.memory_growing(30 * mib, 33 * mib, Some(30 * mib)).unwrap());
        limiter.memory_grow_failed(wasmtime::format_err!("maximum")).unwrap();
        // 60 MiB used: 4 MiB more is allowed, in table elements too.
        assert!(limiter.table_growing(0, (mib / 2) / TABLE_ELEMENT_BYTES, None).unwrap());
        assert!(limiter.memory_growing(30 * mib, 33 * mib + mib / 2, None).unwrap());
        assert!(limiter.memory_growing(30 * mib, 30 * mib + 65536, None).is_err());
        assert_eq!(limiter.hit, Some(LimitHit::Memory { limit: 64 * mib }));
    }

    #[test]
    fn table_elements_are_bounded_across_all_tables() {
        use wasmtime::ResourceLimiter;
        let mut limiter = Limiter::new(1 << 30);
        for _ in 0..9 {
            assert!(limiter.table_growing(0, 10_000, None).unwrap());
        }
        assert!(limiter.table_growing(0, 10_001, None).is_err());
        assert_eq!(limiter.hit, Some(LimitHit::Instances));
    }

    #[test]
    fn config_cannot_raise_limits_past_the_ceiling() {
        let l = ProviderLimits::from_config(credence_signing::Limits {
            memory_mib: Some(100_000),
            cpu_ms: Some(u64::MAX),
            wall_ms: Some(0),
            interactive_wall_ms: Some(u64::MAX),
        });
        assert_eq!(l.memory_bytes, 1024 << 20);
        assert_eq!(l.cpu, Duration::from_secs(120));
        assert_eq!(l.wall, Duration::from_millis(1));
        assert_eq!(l.interactive_wall, Duration::from_secs(30 * 60));
    }

    #[test]
    fn an_interactive_call_gets_the_interactive_wall_clock_and_no_more_cpu() {
        let limits = ProviderLimits::from_config(credence_signing::Limits::default());
        assert_eq!(limits.wall, Duration::from_secs(120));
        assert_eq!(limits.interactive_wall, Duration::from_secs(15 * 60));
        let mut clock = CallClock::new(&limits);
        clock.become_interactive(limits.interactive_wall);
        assert!(clock.wall_left() > Duration::from_secs(14 * 60));
        assert_eq!(clock.cpu, limits.cpu);
        assert!(clock.is_interactive(&limits));
        // Polling once a second for the whole interactive wall fits; a flood before any
        // code was shown does not.
        assert_eq!(limits.fetches_for(false), 64);
        assert_eq!(limits.fetches_for(true), 64 + 15 * 60);
    }
}
