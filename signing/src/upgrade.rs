//! The upgrade guard's comparison: what a new release's signed ceiling may newly do that
//! the approved release's may not, field by field. An empty list means the new ceiling is
//! narrower or equal, and the upgrade needs no one's approval.

use crate::manifest::Manifest;

/// One way `new` reaches further than `approved`, as `credence approve` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Widening {
    /// `origins`, `wildcard-origins`, `prompts`, `id-token`, `limits.memory-mib`, ...
    pub field: &'static str,
    pub approved: String,
    pub new: String,
}

impl std::fmt::Display for Widening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.field, self.approved, self.new)
    }
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// A limit, where `None` is the host's default: any explicit limit is at most the default
/// the host would apply anyway, so going from a number to the default is a widening, and
/// from the default to a number is not.
fn wider_limit(approved: Option<u64>, new: Option<u64>) -> bool {
    match (approved, new) {
        (Some(a), Some(n)) => n > a,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

fn limit_text(v: Option<u64>) -> String {
    v.map_or("host default".to_owned(), |n| n.to_string())
}

/// Everything `new` may do beyond `approved`: origins it may call that `approved` does not
/// allow, wildcard patterns it adds, prompt kinds, the CI identity token, higher limits, a
/// setting no longer read only from the terminal, another world.
pub fn widenings(approved: &Manifest, new: &Manifest) -> Vec<Widening> {
    let mut out = Vec::new();
    let new_origins: Vec<String> = new
        .origins
        .iter()
        .filter(|o| !approved.allows(o))
        .map(|o| o.to_string())
        .collect();
    if !new_origins.is_empty() {
        out.push(Widening {
            field: "origins",
            approved: list(approved.origins.iter().map(|o| o.to_string())),
            new: format!("adds {}", new_origins.join(", ")),
        });
    }
    let new_patterns: Vec<String> = new
        .wildcard_origins
        .difference(&approved.wildcard_origins)
        .map(|p| p.to_string())
        .collect();
    if !new_patterns.is_empty() {
        out.push(Widening {
            field: "wildcard-origins",
            approved: list(approved.wildcard_origins.iter().map(|p| p.to_string())),
            new: format!("adds {}", new_patterns.join(", ")),
        });
    }
    let new_prompts: Vec<String> = new
        .prompts
        .difference(&approved.prompts)
        .map(|p| p.as_str().to_owned())
        .collect();
    if !new_prompts.is_empty() {
        out.push(Widening {
            field: "prompts",
            approved: list(approved.prompts.iter().map(|p| p.as_str().to_owned())),
            new: format!("adds {}", new_prompts.join(", ")),
        });
    }
    if new.id_token && !approved.id_token {
        out.push(Widening {
            field: "id-token",
            approved: "false".into(),
            new: "true".into(),
        });
    }
    let (a, n) = (approved.limits, new.limits);
    for (field, old, new) in [
        (
            "limits.memory-mib",
            a.memory_mib.map(u64::from),
            n.memory_mib.map(u64::from),
        ),
        ("limits.cpu-ms", a.cpu_ms, n.cpu_ms),
        ("limits.wall-ms", a.wall_ms, n.wall_ms),
        (
            "limits.interactive-wall-ms",
            a.interactive_wall_ms,
            n.interactive_wall_ms,
        ),
    ] {
        if wider_limit(old, new) {
            out.push(Widening {
                field,
                approved: limit_text(old),
                new: limit_text(new),
            });
        }
    }
    let unmarked: Vec<String> = approved
        .settings
        .iter()
        .filter(|(name, spec)| spec.secret && new.settings.get(*name).is_some_and(|s| !s.secret))
        .map(|(name, _)| name.clone())
        .collect();
    if !unmarked.is_empty() {
        out.push(Widening {
            field: "settings.secret",
            approved: format!("{} read only from the terminal or stdin", unmarked.join(", ")),
            new: "no longer marked secret".into(),
        });
    }
    if new.world != approved.world {
        out.push(Widening {
            field: "world",
            approved: approved.world.clone(),
            new: new.world.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(extra: &str) -> Manifest {
        Manifest::from_toml(&format!(
            "name = \"p\"\nversion = \"1.0.0\"\nworld = \"credence:provider/provider@0.2.0\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn equal_and_narrower_ceilings_need_no_approval() {
        let approved = m(
            "origins = [\"https://a.example\", \"https://b.example\"]\nprompts = [\"ask\", \"show\"]\n[limits]\nmemory-mib = 64\n",
        );
        assert_eq!(widenings(&approved, &approved), []);
        let narrower = m("origins = [\"https://a.example\"]\nprompts = [\"ask\"]\n[limits]\nmemory-mib = 32\n");
        assert_eq!(widenings(&approved, &narrower), []);
        // An origin a wildcard already allowed is not new.
        let wild = m("wildcard-origins = [\"https://*.corp.example\"]\n");
        assert_eq!(widenings(&wild, &m("origins = [\"https://login.corp.example\"]\n")), []);
        // From the host's default to a number is narrower.
        assert_eq!(widenings(&m(""), &m("[limits]\ncpu-ms = 10\n")), []);
    }

    #[test]
    fn every_wider_field_is_named() {
        let approved = m(
            "origins = [\"https://a.example\"]\nprompts = [\"ask\"]\n[limits]\nmemory-mib = 64\nwall-ms = 1000\n[settings.token]\nsecret = true\n",
        );
        let new = m(
            "origins = [\"https://a.example\", \"https://evil.example\"]\nwildcard-origins = [\"https://*.corp.example\"]\nprompts = [\"ask\", \"open-url\"]\nid-token = true\n[limits]\nmemory-mib = 128\n[settings.token]\nsecret = false\n",
        );
        let fields: Vec<&str> = widenings(&approved, &new).iter().map(|w| w.field).collect();
        assert_eq!(
            fields,
            [
                "origins",
                "wildcard-origins",
                "prompts",
                "id-token",
                "limits.memory-mib",
                "limits.wall-ms",
                "settings.secret"
            ]
        );
        let shown = widenings(&approved, &new)[0].to_string();
        assert_eq!(shown, "origins: https://a.example -> adds https://evil.example");
        let older_world = m("").clone();
        let mut other = older_world.clone();
        other.world = "credence:provider/provider@0.1.0".into();
        assert_eq!(widenings(&older_world, &other)[0].field, "world");
    }
}
