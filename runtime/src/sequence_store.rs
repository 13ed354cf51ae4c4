//! The highest statement `sequence` accepted per provider name, so an older (perhaps
//! vulnerable) release cannot be swapped back in. Kept apart from provider state so that
//! `credence forget` does not reset it.

use crate::private_dir::{is_private_file, write_private_file};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone)]
pub struct SequenceStore {
    dir: PathBuf,
}

const FILE: &str = "sequences.json";

impl SequenceStore {
    pub fn new(dir: PathBuf) -> Self {
        SequenceStore { dir }
    }

    fn read_all(&self) -> BTreeMap<String, u64> {
        let path = self.dir.join(FILE);
        if !is_private_file(&path).unwrap_or(false) {
            return BTreeMap::new();
        }
        std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn highest(&self, provider: &str) -> Option<u64> {
        self.read_all().get(provider).copied()
    }

    /// Records `sequence` if it is the highest yet.
    pub fn record(&self, provider: &str, sequence: u64) -> std::io::Result<()> {
        let mut all = self.read_all();
        if all.get(provider).is_some_and(|h| *h >= sequence) {
            return Ok(());
        }
        all.insert(provider.to_owned(), sequence);
        write_private_file(&self.dir, FILE, &serde_json::to_vec_pretty(&all)?)
    }
}
