//! The wasmtime engine configuration. Every setting here is part of the precompiled-cache
//! key (through `Engine::precompile_compatibility_hash`), so change it knowingly.

use std::time::Duration;
use wasmtime::{Config, Engine, EngineWeak};

/// How often the epoch advances; the granularity of CPU and wall-clock limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A new engine with its epoch ticker running. One ticker per engine, never per call: a
/// long-running host (the NuGet plugin, an agent) runs thousands of calls on one engine,
/// and a ticker per call would pile up threads and advance the epoch ever faster, cutting
/// every later provider's CPU budget short.
pub fn new_engine() -> wasmtime::Result<Engine> {
    let engine = Engine::new(&base_config())?;
    start_epoch_ticker(&engine);
    Ok(engine)
}

/// An engine for a long-running host that runs at most `concurrent_runs` providers at once
/// (its run slots see to that): instances come from wasmtime's pooling allocator, so a run
/// reuses a slot whose address space is already reserved and whose memory image is already
/// mapped (wasmtime resets a slot to the module's initial image when its store is dropped,
/// so nothing of one run is seen by the next), instead of mapping, faulting in and unmapping
/// a fresh reservation per request. The pool is sized from the sandbox's own per-store
/// bounds, so a provider the sandbox admits always fits a slot.
pub fn new_pooled_engine(concurrent_runs: usize) -> wasmtime::Result<Engine> {
    let mut config = base_config();
    config.allocation_strategy(pooling(concurrent_runs));
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine);
    Ok(engine)
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(512 * 1024);
    config.wasm_component_model(true);
    config
}

fn pooling(concurrent_runs: usize) -> wasmtime::PoolingAllocationConfig {
    use super::limits::{MAX_INSTANCES, MAX_MEMORIES, MAX_MEMORY_BYTES, MAX_TABLE_ELEMENTS, MAX_TABLES};
    let stores = u32::try_from(concurrent_runs.max(1)).unwrap_or(u32::MAX);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(stores)
        .total_core_instances(stores.saturating_mul(MAX_INSTANCES as u32))
        .total_memories(stores.saturating_mul(MAX_MEMORIES as u32))
        .total_tables(stores.saturating_mul(MAX_TABLES as u32))
        .total_stacks(stores)
        .max_core_instances_per_component(MAX_INSTANCES as u32)
        .max_memories_per_component(MAX_MEMORIES as u32)
        .max_tables_per_component(MAX_TABLES as u32)
        .max_memories_per_module(MAX_MEMORIES as u32)
        .max_tables_per_module(MAX_TABLES as u32)
        .max_memory_size(MAX_MEMORY_BYTES)
        .table_elements(MAX_TABLE_ELEMENTS)
        // Slots touched by a run stay affine to its module, so the next run of the same
        // provider finds its image mapped; a few unused warm slots bound the RSS this keeps.
        .max_unused_warm_slots(stores);
    pool
}

/// Advances the engine's epoch every tick until the engine is dropped, so a guest that
/// never calls the host still reaches its deadline check.
fn start_epoch_ticker(engine: &Engine) {
    let weak: EngineWeak = engine.weak();
    std::thread::Builder::new()
        .name("credence-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{DefaultHasher, Hash, Hasher};

    fn compat(engine: &Engine) -> u64 {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        h.finish()
    }

    /// The agent and a one-shot run share the precompiled cache: the pool must not change
    /// what code is compiled for, or the agent would compile every provider again.
    #[test]
    fn the_pooled_engine_reads_the_same_precompiled_code() {
        assert_eq!(compat(&new_engine().unwrap()), compat(&new_pooled_engine(8).unwrap()));
    }
}
