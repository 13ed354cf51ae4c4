//! Origins, origin patterns, request URLs and served prefixes: `Origin::parse`,
//! `OriginPattern::parse` and `matches`, `request::parse_request_url`, `ServePrefix`, and
//! `redact_userinfo`. The input is one text, or two separated by the first LF: the second
//! is what the first is matched against.
#![no_main]

mod common;

use credence_host::config::ServePrefix;
use credence::request::parse_request_url;
use credence_signing::origin::redact_userinfo;
use credence_signing::{Origin, OriginPattern};
use libfuzzer_sys::fuzz_target;

fn check_origin(o: &Origin) {
    let loopback = matches!(o.host(), "127.0.0.1" | "[::1]");
    assert!(o.scheme() == "https" || (o.scheme() == "http" && loopback), "{o}");
    assert!(
        o.host().is_ascii() && !o.host().chars().any(|c| c.is_ascii_uppercase()),
        "{o}"
    );
    assert!(!o.host().ends_with('.'), "{o}");
    // Normalised means one spelling: parsing what is shown gives the same origin.
    assert_eq!(Origin::parse(&o.to_string()).as_ref(), Ok(o), "{o}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    let other = Origin::parse(b).ok();

    if let Ok(o) = Origin::parse(a) {
        check_origin(&o);
    }

    if let Ok(pattern) = OriginPattern::parse(a) {
        let shown = pattern.to_string();
        assert_eq!(OriginPattern::parse(&shown).as_ref(), Ok(&pattern), "{shown}");
        let (scheme, rest) = shown.split_once("://").expect("a pattern shows its scheme");
        let any_subdomain = rest.starts_with("*.");
        let concrete = rest.strip_prefix("*.").unwrap_or(rest);
        let any_port = concrete.ends_with(":*");
        let concrete = concrete.strip_suffix(":*").unwrap_or(concrete);
        let base = Origin::parse(&format!("{scheme}://{concrete}")).expect("a pattern's concrete part is an origin");
        // `*.corp.example` is every subdomain and never corp.example itself.
        assert_eq!(pattern.matches(&base), !any_subdomain, "{shown} against {base}");
        if let Some(o) = &other {
            if pattern.matches(o) {
                assert_eq!(o.scheme(), base.scheme(), "{shown} matched {o}");
                if any_subdomain {
                    let suffix = format!(".{}", base.host());
                    assert!(
                        o.host().ends_with(&suffix) && o.host().len() > suffix.len(),
                        "{shown} matched {o}"
                    );
                } else {
                    assert_eq!(o.host(), base.host(), "{shown} matched {o}");
                }
                if !any_port {
                    assert_eq!(o.port(), base.port(), "{shown} matched {o}");
                }
            }
        }
    }

    if let Ok(url) = parse_request_url(a) {
        common::assert_request_url(&url);
        if let Ok(o) = Origin::of_url(&url) {
            check_origin(&o);
        }
        if let Ok(prefix) = ServePrefix::parse(a) {
            assert!(prefix.matches(&url), "{a:?} does not serve itself");
            if let Ok(asked) = parse_request_url(b) {
                if prefix.matches(&asked) {
                    assert_eq!(
                        Origin::of_url(&asked).as_ref(),
                        Ok(&prefix.origin),
                        "{a:?} served {b:?}"
                    );
                    assert!(asked.path().starts_with(&prefix.path), "{a:?} served {b:?}");
                }
            }
        }
    }

    // Error messages show URLs redacted: no user name or password may survive.
    if let Ok(raw) = url::Url::parse(a) {
        if matches!(raw.scheme(), "https" | "http") {
            let shown = url::Url::parse(&redact_userinfo(&raw)).expect("a redacted URL is a URL");
            assert!(matches!(shown.username(), "" | "***"), "{shown}");
            assert!(matches!(shown.password(), None | Some("***")), "{shown}");
        }
    }
});
