//! An HTTP origin (`scheme://host[:port]`), normalised so that two spellings of the same
//! origin compare equal and lookalikes do not.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// `https://host:port`, or `http://` for the loopback literals `127.0.0.1` and `[::1]` only.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("{0:?} is not an absolute URL: {1}")]
    Unparsable(String, String),
    #[error("{0:?} uses scheme {1:?}; only https is allowed (http only for 127.0.0.1 and [::1])")]
    SchemeNotAllowed(String, String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{0:?} carries a user name or password; credentials never go in URLs")]
    Userinfo(String),
    #[error("{0:?} ends its host with a dot; write the host without it")]
    TrailingDot(String),
    #[error("{0:?} is an origin and must not have a path, query or fragment")]
    NotAnOrigin(String),
}

impl Origin {
    /// The origin of an absolute URL (which may have a path and query).
    pub fn of_url(url: &Url) -> Result<Origin, OriginError> {
        let text = url.as_str();
        if !url.username().is_empty() || url.password().is_some() {
            return Err(OriginError::Userinfo(redact_userinfo(url)));
        }
        let scheme = url.scheme().to_owned();
        let host = match url.host() {
            Some(h) => h,
            None => return Err(OriginError::NoHost(text.to_owned())),
        };
        let loopback = is_loopback_literal(&host);
        match scheme.as_str() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(OriginError::SchemeNotAllowed(text.to_owned(), scheme)),
        }
        let host = match host {
            Host::Domain(d) => {
                if d.ends_with('.') {
                    return Err(OriginError::TrailingDot(text.to_owned()));
                }
                d.to_owned()
            }
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => format!("[{ip}]"),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| OriginError::NoHost(text.to_owned()))?;
        Ok(Origin { scheme, host, port })
    }

    /// Parses `scheme://host[:port]` (a trailing `/` is tolerated, nothing more).
    pub fn parse(text: &str) -> Result<Origin, OriginError> {
        let url = Url::parse(text).map_err(|e| OriginError::Unparsable(text.to_owned(), e.to_string()))?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(OriginError::NotAnOrigin(text.to_owned()));
        }
        Origin::of_url(&url)
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }
    /// Lower-case domain (IDNA names in their `xn--` form) or an IP literal (`[..]` for IPv6).
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = matches!((self.scheme.as_str(), self.port), ("https", 443) | ("http", 80));
        if default {
            write!(f, "{}://{}", self.scheme, self.host)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// An origin in a capability ceiling that may stand for many: `https://*.corp.example`
/// (any subdomain, not the domain itself) and/or `https://host:*` (any port). Wildcards are
/// only accepted where a manifest asks for them explicitly (`wildcard-origins`), and
/// `credence inspect` shows them loudly. The user's grants are always exact origins.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginPattern {
    scheme: String,
    /// Exact host, or the suffix after `*.`.
    host: String,
    any_subdomain: bool,
    /// `None` = any port.
    port: Option<u16>,
}

impl OriginPattern {
    pub fn parse(text: &str) -> Result<OriginPattern, OriginError> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| OriginError::Unparsable(text.to_owned(), "no scheme".into()))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host_part, any_subdomain) = match rest.strip_prefix("*.") {
            Some(h) => (h, true),
            None => (rest, false),
        };
        let (host_part, any_port) = match host_part.strip_suffix(":*") {
            Some(h) => (h, true),
            None => (host_part, false),
        };
        if !any_subdomain && !any_port {
            return Err(OriginError::NotAnOrigin(format!(
                "{text} (a wildcard origin needs `*.` or `:*`)"
            )));
        }
        // Parse the concrete part with the same rules as an exact origin.
        let exact = Origin::parse(&format!("{scheme}://{host_part}"))?;
        if any_subdomain && exact.host.starts_with('[') || any_subdomain && exact.host.parse::<Ipv4Addr>().is_ok() {
            return Err(OriginError::NotAnOrigin(format!("{text} (`*.` needs a domain name)")));
        }
        if any_subdomain && !exact.host.contains('.') {
            return Err(OriginError::NotAnOrigin(format!(
                "{text} (`*.` needs at least a two-label domain)"
            )));
        }
        Ok(OriginPattern {
            scheme: exact.scheme,
            host: exact.host,
            any_subdomain,
            port: if any_port { None } else { Some(exact.port) },
        })
    }

    pub fn matches(&self, origin: &Origin) -> bool {
        let host_ok = if self.any_subdomain {
            origin
                .host
                .strip_suffix(self.host.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            origin.host == self.host
        };
        origin.scheme == self.scheme && host_ok && self.port.is_none_or(|p| p == origin.port)
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme,
            if self.any_subdomain { "*." } else { "" },
            self.host
        )?;
        match (self.scheme.as_str(), self.port) {
            (_, None) => write!(f, ":*"),
            ("https", Some(443)) | ("http", Some(80)) => Ok(()),
            (_, Some(p)) => write!(f, ":{p}"),
        }
    }
}

fn is_loopback_literal(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => *ip == Ipv4Addr::LOCALHOST,
        Host::Ipv6(ip) => *ip == Ipv6Addr::LOCALHOST,
        Host::Domain(_) => false,
    }
}

/// The URL with any userinfo replaced, so an error message never repeats a password.
pub fn redact_userinfo(url: &Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() {
        let _ = shown.set_username("***");
    }
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_origin_are_equal() {
        let a = Origin::parse("https://Registry.Example.COM").unwrap();
        let b = Origin::parse("https://registry.example.com:443/").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "https://registry.example.com");
    }

    #[test]
    fn lookalikes_are_different_origins() {
        let allowed = Origin::parse("https://allowed.example").unwrap();
        for other in [
            "https://allowed.example.evil.example",
            "https://allowed.example:8443",
            "https://xn--allwed-5ya.example",
        ] {
            assert_ne!(Origin::parse(other).unwrap(), allowed, "{other}");
        }
        let at = Url::parse("https://allowed.example@evil.example/").unwrap();
        assert_eq!(
            Origin::of_url(&at),
            Err(OriginError::Userinfo("https://***@evil.example/".into()))
        );
    }

    #[test]
    fn plain_http_only_for_loopback_literals() {
        assert!(Origin::parse("http://127.0.0.1:8080").is_ok());
        assert!(Origin::parse("http://[::1]:8080").is_ok());
        for bad in [
            "http://localhost:8080",
            "http://registry.example",
            "ftp://127.0.0.1",
            "http://127.0.0.2",
        ] {
            assert!(
                matches!(Origin::parse(bad), Err(OriginError::SchemeNotAllowed(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn trailing_dot_and_paths_are_refused() {
        assert!(matches!(
            Origin::parse("https://allowed.example."),
            Err(OriginError::TrailingDot(_))
        ));
        assert!(matches!(
            Origin::parse("https://allowed.example/api"),
            Err(OriginError::NotAnOrigin(_))
        ));
    }

    #[test]
    fn wildcards_match_subdomains_and_ports_only_as_written() {
        let sub = OriginPattern::parse("https://*.corp.example").unwrap();
        assert!(sub.matches(&Origin::parse("https://a.corp.example").unwrap()));
        assert!(sub.matches(&Origin::parse("https://a.b.corp.example").unwrap()));
        assert!(!sub.matches(&Origin::parse("https://corp.example").unwrap()));
        assert!(!sub.matches(&Origin::parse("https://evilcorp.example").unwrap()));
        assert!(!sub.matches(&Origin::parse("https://a.corp.example:8443").unwrap()));
        assert_eq!(sub.to_string(), "https://*.corp.example");
        let port = OriginPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(port.matches(&Origin::parse("http://127.0.0.1:1234").unwrap()));
        assert!(!port.matches(&Origin::parse("http://[::1]:1234").unwrap()));
        for bad in [
            "https://corp.example",
            "https://*.example",
            "https://*.127.0.0.1",
            "http://*.corp.example",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv4_spellings_normalise_to_the_dotted_literal() {
        let decimal = Origin::parse("http://2130706433:99").unwrap();
        assert_eq!(decimal.to_string(), "http://127.0.0.1:99");
    }
}
