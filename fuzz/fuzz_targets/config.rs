//! The user's `config.toml`, through `credence_host::config::Config::parse` and the serve
//! matching the broker does with it.
#![no_main]

use credence_host::config::Config;
use credence::request::parse_request_url;
use credence_signing::manifest::valid_name;
use credence_signing::Origin;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::parse(text) else { return };
    let mut names = HashSet::new();
    for p in &config.providers {
        // The name keys state on disk and the component is a file in providers/.
        assert!(valid_name(&p.name), "{:?}", p.name);
        assert!(names.insert(p.name.as_str()), "{:?} twice", p.name);
        assert!(
            p.component.ends_with(".wasm") && !p.component.starts_with('.') && !p.component.contains(['/', '\\']),
            "{:?}",
            p.component
        );
        // The pinned provider is a provider name; a pinned publisher a lower-case key id.
        assert!(valid_name(&p.provider), "{:?}", p.provider);
        if let Some(k) = &p.publisher {
            assert!(k.len() == 32 && k.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{k:?}");
        }
        for o in &p.granted_origins {
            assert_eq!(Origin::parse(&o.to_string()).as_ref(), Ok(o), "{o}");
        }
        for s in &p.serves {
            // goauth tells go this prefix is what credence serves: credence must serve it.
            let shown = s.to_string();
            if shown.len() > 64 * 1024 {
                continue;
            }
            let url = parse_request_url(&shown).unwrap_or_else(|e| panic!("served prefix {shown:?}: {e}"));
            assert!(s.matches(&url), "{shown:?}");
            assert!(config.providers_for(&url).any(|q| q.name == p.name), "{shown:?}");
        }
    }
});
