//! The rollback floor: the highest statement `sequence` accepted per provider name, so an
//! older (perhaps vulnerable) release cannot be swapped back in.
//!
//! It is kept in the trust store it protects (`[floor]` in trust.toml), not beside provider
//! state: deleting or corrupting it means deleting or corrupting the trust store, which
//! fails closed, and `credence forget` never touches it. A floor is raised only after a
//! provider passed every check of the loading gate.

use crate::producer::FileStamp;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct SequenceStore {
    home: PathBuf,
    /// The floors as read with the trust store, raised by this process since: a
    /// long-running host never accepts a release below one it has just accepted.
    floors: Arc<Mutex<BTreeMap<String, u64>>>,
    /// The identity of `trust.toml` whose content this process holds (`None` once that is
    /// not known), so a credential made now can record which store admitted it.
    trust_file: Arc<Mutex<Option<FileStamp>>>,
}

impl SequenceStore {
    /// `trust_file`: the identity of `trust.toml` taken before `floors` were read from it.
    pub fn new(home: PathBuf, floors: BTreeMap<String, u64>, trust_file: Option<FileStamp>) -> Self {
        SequenceStore {
            home,
            floors: Arc::new(Mutex::new(floors)),
            trust_file: Arc::new(Mutex::new(trust_file)),
        }
    }

    /// Every floor this process holds.
    pub fn floors(&self) -> BTreeMap<String, u64> {
        self.floors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The identity of the `trust.toml` this process's trust store is exactly, if known.
    pub fn trust_file(&self) -> Option<FileStamp> {
        *self.trust_file.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn highest(&self, provider: &str) -> Option<u64> {
        self.floors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(provider)
            .copied()
    }

    /// Raises the floor of `provider` to `sequence` if that is higher, keeping every other
    /// provider's floor.
    pub fn record(&self, provider: &str, sequence: u64) -> Result<(), String> {
        if self.highest(provider).is_some_and(|h| h >= sequence) {
            return Ok(());
        }
        // Raised in this process first: if the store cannot be written, this process at
        // least never goes back below it.
        {
            let mut floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
            let f = floors.entry(provider.to_owned()).or_insert(0);
            *f = (*f).max(sequence);
        }
        let (stored, before, after) = crate::trust_file::update_stamped(&self.home, |store| {
            let floor = store.floor.entry(provider.to_owned()).or_insert(0);
            *floor = (*floor).max(sequence);
            Ok(*floor)
        })?;
        {
            // The file now holds our store plus this floor only if it held our store before.
            let mut known = self.trust_file.lock().unwrap_or_else(|e| e.into_inner());
            *known = if known.is_some() && *known == before {
                after
            } else {
                None
            };
        }
        let mut floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        let f = floors.entry(provider.to_owned()).or_insert(0);
        *f = (*f).max(stored);
        Ok(())
    }
}
