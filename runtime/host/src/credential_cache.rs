//! The credential cache in memory, above the state store, like an HTTP cache: answers
//! by key until they expire, `session` answers for as long as the process (the agent)
//! lives, one provider run for concurrent identical misses, and short negative answers.
//! (Runs of one stateful instance take turns through the state store's lock.) The rules are here and tested here; the
//! router decides what a key is and re-judges each entry's producer before serving it.
//!
//! Only an answer is ever shared between requests: never a provider instance.

use crate::producer::Producer;
use crate::request::{CachePolicy, Credential, Refusal};
use crate::state_store::EXPIRY_MARGIN_SECS;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Entries kept at most; past it the oldest goes (its secrets are zeroised on drop).
pub const MAX_ENTRIES: usize = 10_000;

/// How long a refusal is answered again without running the provider.
pub fn negative_for(refusal: &Refusal, strikes: u32, interactive: bool) -> Option<Duration> {
    match refusal {
        Refusal::NotFound { .. } => Some(Duration::from_secs(10)),
        // Repeated denials back off (an account that locks after N failures is protected),
        // up to 10 minutes.
        Refusal::Denied { .. } => Some(Duration::from_secs(10u64 << strikes.min(6)).min(Duration::from_secs(600))),
        // A request that can prompt is the user's chance to answer: never served from here.
        Refusal::NeedsInteraction { .. } if !interactive => Some(Duration::from_secs(10)),
        // Failures (a gate refusal, a trap, a limit) are judged again every time: what the
        // user does to fix one must show at once.
        _ => None,
    }
}

struct Entry {
    instance: String,
    credential: Credential,
    producer: Producer,
    order: u64,
}

struct Negative {
    refusal: Refusal,
    /// The providers whose answers made the refusal, judged again before it is repeated.
    producers: Vec<(String, Producer)>,
    until: Instant,
    strikes: u32,
}

/// The entries, and their keys oldest first (the next to go at the bound, found without
/// a scan).
#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    oldest_first: std::collections::BTreeMap<u64, String>,
}

impl Entries {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.map.remove(key)?;
        self.oldest_first.remove(&entry.order);
        Some(entry)
    }

    fn retain(&mut self, keep: impl Fn(&str, &Entry) -> bool) -> usize {
        let before = self.map.len();
        self.map.retain(|k, e| keep(k, e));
        let map = &self.map;
        self.oldest_first.retain(|_, k| map.contains_key(k));
        before - self.map.len()
    }
}

#[derive(Default)]
pub struct CredentialCache {
    entries: Mutex<Entries>,
    negative: Mutex<HashMap<String, Negative>>,
    flights: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    order: AtomicU64,
}

/// After many entries went, hands the freed heap back to the system (glibc keeps it
/// otherwise: an agent that once held 10,000 answers would keep their memory for good).
fn give_back_memory(dropped: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if dropped > 0 {
        // SAFETY: malloc_trim has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = dropped;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a kept credential may still be handed out at `now` (Unix seconds), in memory or
/// from the store: not within the margin before its expiry, and not once the time its
/// provider asked to be called again (`refresh-at`) has come.
pub fn fresh(credential: &Credential, now: u64) -> bool {
    if credential.refresh_at.is_some_and(|r| r <= now) {
        return false;
    }
    match (credential.cache, credential.expires_at) {
        (CachePolicy::Never, _) => false,
        (_, Some(t)) => t > now + EXPIRY_MARGIN_SECS,
        (CachePolicy::Session, None) => true,
        (CachePolicy::UntilExpiry, None) => false,
    }
}

impl CredentialCache {
    pub fn len(&self) -> usize {
        lock(&self.entries).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry for `key` if it is still fresh; a stale one is dropped.
    pub fn get(&self, key: &str, now: u64) -> Option<(Credential, Producer)> {
        let mut entries = lock(&self.entries);
        let entry = entries.map.get(key)?;
        if fresh(&entry.credential, now) {
            return Some((entry.credential.clone(), entry.producer.clone()));
        }
        entries.remove(key);
        None
    }

    /// Keeps an answer that may be kept (`never` is not; `until-expiry` needs an expiry).
    pub fn put(&self, key: &str, instance: &str, credential: &Credential, producer: &Producer, now: u64) {
        if !fresh(credential, now) {
            return;
        }
        let mut entries = lock(&self.entries);
        entries.remove(key);
        if entries.map.len() >= MAX_ENTRIES {
            if let Some((_, oldest)) = entries.oldest_first.pop_first() {
                entries.map.remove(&oldest);
            }
        }
        let order = self.order.fetch_add(1, Ordering::Relaxed);
        entries.oldest_first.insert(order, key.to_owned());
        entries.map.insert(
            key.to_owned(),
            Entry {
                instance: instance.to_owned(),
                credential: credential.clone(),
                producer: producer.clone(),
                order,
            },
        );
    }

    pub fn evict(&self, key: &str) {
        lock(&self.entries).remove(key);
    }

    /// Drops every entry of `instance` (all with `None`), and every negative answer.
    pub fn evict_instance(&self, instance: Option<&str>) -> usize {
        let dropped = lock(&self.entries).retain(|_, e| instance.is_some_and(|i| e.instance != i));
        lock(&self.negative).clear();
        give_back_memory(dropped);
        dropped
    }

    /// Drops the entries whose producer `keep` refuses (after a revocation).
    pub fn retain(&self, keep: impl Fn(&str, &Producer) -> bool) -> usize {
        let dropped = lock(&self.entries).retain(|_, e| keep(&e.instance, &e.producer));
        give_back_memory(dropped);
        dropped
    }

    /// Drops the entries whose key `keep` refuses, and the negative answers likewise (a
    /// remote session's, when it ends).
    pub fn retain_keys(&self, keep: impl Fn(&str) -> bool) -> usize {
        let dropped = lock(&self.entries).retain(|k, _| keep(k));
        lock(&self.negative).retain(|k, _| keep(k));
        give_back_memory(dropped);
        dropped
    }

    /// A refusal answered again for `key` until it lapses, with the producers of the
    /// answers that made it.
    pub fn negative(&self, key: &str) -> Option<(Refusal, Vec<(String, Producer)>)> {
        let mut negative = lock(&self.negative);
        let n = negative.get(key)?;
        if Instant::now() < n.until {
            return Some((n.refusal.clone(), n.producers.clone()));
        }
        // Lapsed. A denial's strikes stay, so a denial after a denial waits longer.
        if !matches!(n.refusal, Refusal::Denied { .. }) {
            negative.remove(key);
        }
        None
    }

    pub fn put_negative(&self, key: &str, refusal: &Refusal, interactive: bool, producers: Vec<(String, Producer)>) {
        let mut negative = lock(&self.negative);
        let strikes = match (negative.get(key), refusal) {
            (Some(n), Refusal::Denied { .. }) if matches!(n.refusal, Refusal::Denied { .. }) => n.strikes + 1,
            _ => 0,
        };
        let Some(ttl) = negative_for(refusal, strikes, interactive) else {
            return;
        };
        if negative.len() >= MAX_ENTRIES {
            negative.retain(|_, n| Instant::now() < n.until);
            if negative.len() >= MAX_ENTRIES {
                return;
            }
        }
        negative.insert(
            key.to_owned(),
            Negative {
                refusal: refusal.clone(),
                producers,
                until: Instant::now() + ttl,
                strikes,
            },
        );
    }

    pub fn clear_negative(&self, key: &str) {
        lock(&self.negative).remove(key);
    }

    /// Runs `f` as the only flight for `key`: a concurrent request for the same key waits,
    /// then finds what this one cached (request coalescing).
    pub fn single_flight<R>(&self, key: &str, f: impl FnOnce() -> R) -> R {
        let flight = lock(&self.flights).entry(key.to_owned()).or_default().clone();
        let result = {
            let _only = lock(&flight);
            f()
        };
        let mut flights = lock(&self.flights);
        // The map's and ours: nobody else waits, so the key's flight can go.
        if Arc::strong_count(&flight) == 2 {
            flights.remove(key);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn cred(cache: CachePolicy, expires_at: Option<u64>) -> Credential {
        Credential {
            username: None,
            secret: Secret::new("s3cret".into()),
            headers: Vec::new(),
            expires_at,
            cache,
            refresh_at: None,
        }
    }

    fn producer() -> Producer {
        serde_json::from_value(serde_json::json!({
            "provider": "p", "component_sha256": "00", "statement_sha256": null, "publisher_key_id": null,
            "signer_key_ids": [], "sequence": 1, "statement_expires_at": null, "component_file": null,
            "statement_file": null, "trust_file": null, "valid_until": null
        }))
        .unwrap_or_else(|e| panic!("the producer fixture does not parse: {e}"))
    }

    #[test]
    fn never_is_not_kept_session_is_kept_and_expiring_ones_lapse_before_their_expiry() {
        let c = CredentialCache::default();
        let now = 1_000_000;
        c.put("never", "p", &cred(CachePolicy::Never, None), &producer(), now);
        assert!(c.get("never", now).is_none());
        c.put("session", "p", &cred(CachePolicy::Session, None), &producer(), now);
        assert!(
            c.get("session", now + 86_400).is_some(),
            "session: as long as the agent"
        );
        c.put(
            "exp",
            "p",
            &cred(CachePolicy::UntilExpiry, Some(now + 600)),
            &producer(),
            now,
        );
        assert!(c.get("exp", now).is_some());
        assert!(
            c.get("exp", now + 600 - EXPIRY_MARGIN_SECS).is_none(),
            "not within the margin"
        );
        assert!(c.get("exp", now).is_none(), "a stale entry is dropped, not kept");
        c.put("noexp", "p", &cred(CachePolicy::UntilExpiry, None), &producer(), now);
        assert!(c.get("noexp", now).is_none());
    }

    #[test]
    fn a_credential_is_not_handed_out_once_its_provider_asked_to_be_called_again() {
        let c = CredentialCache::default();
        let now = 1_000_000;
        let mut credential = cred(CachePolicy::UntilExpiry, Some(now + 3600));
        credential.refresh_at = Some(now + 600);
        c.put("r", "p", &credential, &producer(), now);
        assert!(c.get("r", now + 599).is_some(), "before refresh-at it is served");
        assert!(c.get("r", now + 600).is_none(), "at refresh-at the provider runs again");
        assert!(!fresh(&credential, now + 600));
    }

    #[test]
    fn forgetting_an_instance_drops_only_its_entries_and_all_negative_answers() {
        let c = CredentialCache::default();
        c.put("a1", "a", &cred(CachePolicy::Session, None), &producer(), 0);
        c.put("b1", "b", &cred(CachePolicy::Session, None), &producer(), 0);
        c.put_negative(
            "n",
            &Refusal::NotFound {
                url: "u".into(),
                detail: String::new(),
            },
            false,
            Vec::new(),
        );
        assert_eq!(c.evict_instance(Some("a")), 1);
        assert!(c.get("b1", 0).is_some());
        assert!(c.negative("n").is_none());
        assert_eq!(c.evict_instance(None), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn the_entry_count_is_bounded_by_dropping_the_oldest() {
        let c = CredentialCache::default();
        for i in 0..MAX_ENTRIES + 5 {
            c.put(&format!("k{i}"), "p", &cred(CachePolicy::Session, None), &producer(), 0);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert!(c.get("k0", 0).is_none(), "the oldest went");
        assert!(c.get(&format!("k{}", MAX_ENTRIES + 4), 0).is_some());
    }

    #[test]
    fn denials_back_off_needs_interaction_is_not_cached_for_an_interactive_request() {
        let denied = Refusal::Denied {
            provider: "p".into(),
            message: "no".into(),
        };
        assert_eq!(negative_for(&denied, 0, false), Some(Duration::from_secs(10)));
        assert_eq!(negative_for(&denied, 1, false), Some(Duration::from_secs(20)));
        assert_eq!(negative_for(&denied, 30, false), Some(Duration::from_secs(600)));
        let needs = Refusal::NeedsInteraction {
            provider: "p".into(),
            message: "m".into(),
        };
        assert_eq!(negative_for(&needs, 0, true), None);
        assert!(negative_for(&Refusal::NotServed("u".into()), 0, false).is_none());
        let c = CredentialCache::default();
        assert!(negative_for(&Refusal::Failed("trap".into()), 0, false).is_none());
        c.put_negative("k", &denied, false, Vec::new());
        assert_eq!(c.negative("k").map(|n| n.0), Some(denied));
        c.clear_negative("k");
        assert!(c.negative("k").is_none());
    }

    #[test]
    fn concurrent_flights_for_one_key_run_one_at_a_time() {
        let c = Arc::new(CredentialCache::default());
        let runs = Arc::new(AtomicU64::new(0));
        let inside = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (c, runs, inside) = (c.clone(), runs.clone(), inside.clone());
                std::thread::spawn(move || {
                    c.single_flight("k", || {
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two flights at once");
                        if c.get("k", 0).is_none() {
                            runs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            c.put("k", "p", &cred(CachePolicy::Session, None), &producer(), 0);
                        }
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(lock(&c.flights).is_empty(), "finished flights leave nothing behind");
    }
}
