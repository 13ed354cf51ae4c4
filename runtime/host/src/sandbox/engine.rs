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
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(512 * 1024);
    config.wasm_component_model(true);
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine);
    Ok(engine)
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
