//! The rollback floor: the highest statement `sequence` accepted per provider name, so an
//! older (perhaps vulnerable) release cannot be swapped back in.
//!
//! It is kept in the trust store it protects (`[floor]` in trust.toml), not beside provider
//! state: deleting or corrupting it means deleting or corrupting the trust store, which
//! fails closed, and `credence forget` never touches it. A floor is raised only after a
//! provider passed every check of the loading gate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct SequenceStore {
    home: PathBuf,
    /// The floors as read with the trust store, raised by this process since: a
    /// long-running host never accepts a release below one it has just accepted.
    floors: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl SequenceStore {
    pub fn new(home: PathBuf, floors: BTreeMap<String, u64>) -> Self {
        SequenceStore {
            home,
            floors: Arc::new(Mutex::new(floors)),
        }
    }

    pub fn highest(&self, provider: &str) -> Option<u64> {
        self.floors.lock().unwrap_or_else(|e| e.into_inner()).get(provider).copied()
    }

    /// Raises the floor of `provider` to `sequence` if that is higher, keeping every other
    /// provider's floor.
    pub fn record(&self, provider: &str, sequence: u64) -> Result<(), String> {
        if self.highest(provider).is_some_and(|h| h >= sequence) {
            return Ok(());
        }
        let stored = crate::trust_file::update(&self.home, |store| {
            let floor = store.floor.entry(provider.to_owned()).or_insert(0);
            *floor = (*floor).max(sequence);
            Ok(*floor)
        })?;
        let mut floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        let f = floors.entry(provider.to_owned()).or_insert(0);
        *f = (*f).max(stored);
        Ok(())
    }
}
