//! Expiry warnings: a key, an installed provider's statement or the organisation's policy
//! bundle that stops counting within 14 days is announced once a day, on stderr (through
//! the agent too: its warnings go back with the answer) and in the audit trail, so whoever
//! must re-sign it hears in time instead of finding every fetch refused one morning.

use crate::audit::{AuditLog, Record};
use crate::paths::Paths;
use credence_signing::TrustStore;

/// How far ahead an expiry is announced.
pub const WARN_WITHIN_S: u64 = 14 * 86_400;

/// Something that stops counting soon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiring {
    /// `key <id> (<name>)`, `the statement of provider <name>`, `the policy bundle of <org>`.
    pub what: String,
    pub expires_at: u64,
    /// What to do about it.
    pub next: String,
}

impl Expiring {
    pub fn message(&self, now: u64) -> String {
        let when = crate::state_store::shown_time(self.expires_at);
        let days = self.expires_at.saturating_sub(now).div_ceil(86_400);
        format!(
            "{} expires in {days} day{} ({when}); {}",
            self.what,
            if days == 1 { "" } else { "s" },
            self.next
        )
    }
}

/// Everything in `trust` (keys, the bundle) and in `statements` (provider name and its
/// statement's expiry) that expires after `now` and within [`WARN_WITHIN_S`], soonest first.
pub fn expiring(trust: &TrustStore, statements: &[(String, Option<u64>)], now: u64) -> Vec<Expiring> {
    let soon = |t: u64| t > now && t <= now.saturating_add(WARN_WITHIN_S);
    let mut out = Vec::new();
    for k in &trust.key {
        if let Some(t) = k.not_after.filter(|t| soon(*t)) {
            let id = k.key_id().map(|i| i.0).unwrap_or_default();
            out.push(Expiring {
                what: format!("key {id} ({})", credence::terminal::neutralise(&k.name)),
                expires_at: t,
                next: "ask its owner for a successor (`credence trust rotate`) or a new key".into(),
            });
        }
    }
    for (name, expires) in statements {
        if let Some(t) = expires.filter(|t| soon(*t)) {
            out.push(Expiring {
                what: format!("the statement of provider {name}"),
                expires_at: t,
                next: format!("install a newly signed release: `credence install <{name}.wasm>`"),
            });
        }
    }
    if let Some(org) = trust.org.as_ref().filter(|o| soon(o.expires_at)) {
        out.push(Expiring {
            what: format!("the policy bundle of {}", org.label()),
            expires_at: org.expires_at,
            next: "ask your security team for a new bundle (`credence policy install <bundle>`)".into(),
        });
    }
    out.sort_by_key(|e| e.expires_at);
    out
}

fn day(now: u64) -> u64 {
    now / 86_400
}

/// Whether today's warnings were given already (by any credence of this user): the record's
/// modification day, one `stat` on every one-shot request (reading it, with the checks of
/// who could have written its directories, measured +0.1 ms on the stored path). Whoever
/// could touch it could only hold back a day's warnings, not change what runs.
pub fn warned_today(paths: &Paths, now: u64) -> bool {
    std::fs::symlink_metadata(paths.trust_state.join("expiry-warned.json"))
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|t| day(t.as_secs()) == day(now))
}

/// Gives today's warnings, once: each on stderr (as a warning) and as an audit record.
pub fn announce(paths: &Paths, audit: &AuditLog, items: &[Expiring], now: u64) {
    let _ = crate::private_dir::ensure_private_dir(&paths.trust_state);
    let body = serde_json::json!({ "day": day(now) }).to_string();
    if let Err(e) = crate::private_dir::write_private_file(&paths.trust_state, "expiry-warned.json", body.as_bytes()) {
        // Not recorded: the warnings would repeat on every run, so none is given.
        tracing::debug!("cannot record today's expiry warnings: {e}");
        return;
    }
    for item in items {
        let message = item.message(now);
        tracing::warn!("{message}");
        audit.append(&Record {
            time: now,
            protocol: "credence".into(),
            operation: "expiry-warning".into(),
            outcome: "expiry-warning".into(),
            error: Some(message),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_expires_within_fourteen_days_is_listed_soonest_first() {
        let mut trust = TrustStore::parse(
            "[[key]]\nname = \"soon\"\nrole = \"publisher\"\npublic-key = \"credence-ed25519-pub:IVL40Zt5HSRFMkLhXy6rbLfP+ntqXtMAl5YOBpiB2xI=\"\nproviders = [\"*\"]\nnot-after = 1000864000\n",
        )
        .unwrap();
        let now = 1_000_000_000;
        let statements = vec![
            ("near".to_owned(), Some(now + 3_600)),
            ("far".to_owned(), Some(now + 30 * 86_400)),
            ("past".to_owned(), Some(now - 1)),
            ("never".to_owned(), None),
        ];
        let items = expiring(&trust, &statements, now);
        let whats: Vec<&str> = items.iter().map(|i| i.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "the statement of provider near",
                "key ede4d05a3dc79cf314839740a56a8cd7 (soon)"
            ]
        );
        assert!(
            items[0]
                .message(now)
                .starts_with("the statement of provider near expires in 1 day (")
        );
        trust.key[0].not_after = Some(now + WARN_WITHIN_S + 1);
        assert_eq!(expiring(&trust, &[], now), []);
    }
}
