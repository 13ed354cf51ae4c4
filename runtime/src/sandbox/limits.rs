//! Resource limits for one provider call, and the record of which one it hit.

use std::fmt;
use std::time::{Duration, Instant};

pub const DEFAULT_MEMORY_MIB: u32 = 64;
pub const DEFAULT_CPU_MS: u64 = 10_000;
pub const DEFAULT_WALL_MS: u64 = 120_000;
/// Hard ceilings no manifest or config can raise.
const MAX_MEMORY_MIB: u32 = 1024;
const MAX_CPU_MS: u64 = 120_000;
const MAX_WALL_MS: u64 = 30 * 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderLimits {
    pub memory_bytes: usize,
    pub cpu: Duration,
    pub wall: Duration,
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
    pub fn from_config(limits: credence_signing::Limits) -> Self {
        let memory_mib = limits.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB).clamp(1, MAX_MEMORY_MIB);
        ProviderLimits {
            memory_bytes: (memory_mib as usize) << 20,
            cpu: Duration::from_millis(limits.cpu_ms.unwrap_or(DEFAULT_CPU_MS).clamp(1, MAX_CPU_MS)),
            wall: Duration::from_millis(limits.wall_ms.unwrap_or(DEFAULT_WALL_MS).clamp(1, MAX_WALL_MS)),
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
pub struct Limiter {
    pub memory_bytes: usize,
    pub hit: Option<LimitHit>,
}

const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = Some(LimitHit::Memory {
                limit: self.memory_bytes,
            });
            wasmtime::bail!("memory limit of {} bytes reached", self.memory_bytes);
        }
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = Some(LimitHit::Instances);
            wasmtime::bail!("table limit reached");
        }
        Ok(true)
    }
    fn instances(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        16
    }
    fn memories(&self) -> usize {
        4
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

    pub fn wall_left(&self) -> Duration {
        self.wall.saturating_sub(self.started.elapsed())
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

    #[test]
    fn config_cannot_raise_limits_past_the_ceiling() {
        let l = ProviderLimits::from_config(credence_signing::Limits {
            memory_mib: Some(100_000),
            cpu_ms: Some(u64::MAX),
            wall_ms: Some(0),
        });
        assert_eq!(l.memory_bytes, 1024 << 20);
        assert_eq!(l.cpu, Duration::from_secs(120));
        assert_eq!(l.wall, Duration::from_millis(1));
    }
}
