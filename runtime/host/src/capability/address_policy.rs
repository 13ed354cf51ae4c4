//! Which network addresses a provider's fetch may connect to once a granted *name* has
//! been resolved. A granted origin names a host; what that name resolves to is decided by
//! whoever runs its DNS, so a name that resolves to loopback, a private network or the
//! cloud metadata service (DNS rebinding) is refused. Granting the address literal itself
//! (`http://127.0.0.1:8080`) is how a user allows such a target on purpose: literals are
//! never resolved, so they never reach this policy.
//!
//! Behind a proxy from the environment, the proxy resolves the name itself; credence
//! resolves it too, before sending, and refuses a name whose every address is forbidden.
//! Only the proxy can make that check authoritative: it is the network boundary then.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

/// Why an address is not reachable through a name, or `None` when it is a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified (\"this network\")")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("cloud metadata service")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_private() {
        Some("private network")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (carrier-grade NAT)")
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignments")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking network")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast, broadcast or reserved")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    // An IPv4 address in IPv6 clothing is judged as the IPv4 address it reaches.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) translates to the embedded IPv4 address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [_, _, _, _, _, _, hi, lo] = segments;
        return v4_reason(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8));
    }
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some("unique local (private network)")
    } else if segments[0] & 0xffc0 == 0xfec0 {
        Some("site-local (private network)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if segments[..6] == [0, 0, 0, 0, 0, 0] {
        Some("IPv4-compatible (deprecated)")
    } else {
        None
    }
}

/// The addresses a name resolved to, split into those a fetch may dial and those refused.
pub fn vet(addrs: impl IntoIterator<Item = SocketAddr>) -> (Vec<SocketAddr>, Vec<(SocketAddr, &'static str)>) {
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for addr in addrs {
        match forbidden_reason(addr.ip()) {
            None => allowed.push(addr),
            Some(reason) => refused.push((addr, reason)),
        }
    }
    (allowed, refused)
}

/// The error a fetch fails with when a name resolves only to forbidden addresses.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} resolves only to addresses a provider may not reach through a name: {refused}; grant the address itself as an origin if this is intended"
)]
pub struct ForbiddenAddress {
    pub name: String,
    pub refused: String,
}

/// Resolves `name` with the system resolver and keeps the addresses a fetch may dial.
pub async fn resolve_vetted(name: &str) -> Result<Vec<SocketAddr>, ForbiddenAddress> {
    let resolved: Vec<SocketAddr> = match tokio::net::lookup_host((name, 0)).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            return Err(ForbiddenAddress {
                name: name.to_owned(),
                refused: format!("no addresses at all ({e})"),
            });
        }
    };
    let (allowed, refused) = vet(resolved);
    if allowed.is_empty() {
        let refused = if refused.is_empty() {
            "no addresses at all".to_owned()
        } else {
            refused
                .iter()
                .map(|(a, why)| format!("{} ({why})", a.ip()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(ForbiddenAddress {
            name: name.to_owned(),
            refused,
        });
    }
    if !refused.is_empty() {
        tracing::warn!(
            name = %name,
            dropped = refused.len(),
            "a provider's origin resolved to some forbidden addresses; they were dropped"
        );
    }
    Ok(allowed)
}

/// reqwest's resolver for provider fetches: the system resolver, once per connection,
/// with forbidden addresses removed. hyper dials exactly the addresses returned here,
/// so there is no second lookup for a rebinding server to answer differently; TLS keeps
/// the name for SNI and certificate checks, and `Host` is the name from the URL.
///
/// The user's own proxy hosts (from `HTTPS_PROXY` and friends) are resolved as they are:
/// a corporate proxy on a private address is the user's choice, not the provider's.
pub struct VettingResolver;

impl reqwest::dns::Resolve for VettingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_ascii_lowercase();
        let is_proxy = proxy_hosts().contains(&name);
        Box::pin(async move {
            if is_proxy {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
                return Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs);
            }
            match resolve_vetted(&name).await {
                Ok(allowed) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

pub fn resolver() -> Arc<VettingResolver> {
    Arc::new(VettingResolver)
}

/// The hosts of the proxies reqwest takes from the environment, lower-cased; read once per
/// process, on the first fetch (the environment does not change under a running host).
pub fn proxy_hosts() -> &'static BTreeSet<String> {
    static HOSTS: OnceLock<BTreeSet<String>> = OnceLock::new();
    HOSTS.get_or_init(|| {
        [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .filter(|v| !v.is_empty())
        .filter_map(|v| {
            // reqwest accepts a proxy without a scheme, as http.
            let with_scheme = if v.contains("://") { v } else { format!("http://{v}") };
            url::Url::parse(&with_scheme)
                .ok()?
                .host_str()
                .map(|h| h.to_ascii_lowercase())
        })
        .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> Option<&'static str> {
        forbidden_reason(s.parse().unwrap())
    }

    #[test]
    fn addresses_a_rebinding_name_could_point_at_are_refused() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "cloud metadata service"),
            ("169.254.1.1", "link-local"),
            ("10.1.2.3", "private network"),
            ("172.16.0.1", "private network"),
            ("172.31.255.255", "private network"),
            ("192.168.0.10", "private network"),
            ("100.64.0.1", "shared address space (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified (\"this network\")"),
            ("255.255.255.255", "multicast, broadcast or reserved"),
            ("224.0.0.1", "multicast, broadcast or reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud metadata service"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata service"),
            ("::127.0.0.1", "IPv4-compatible (deprecated)"),
            ("fe80::1", "link-local"),
            ("fc00::1", "unique local (private network)"),
            ("fd12:3456::1", "unique local (private network)"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(reason(ip), Some(why), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(reason(ip), None, "{ip}");
        }
    }

    #[test]
    fn a_mixed_answer_keeps_only_the_public_addresses() {
        let (allowed, refused) = vet([
            "127.0.0.1:443".parse().unwrap(),
            "93.184.215.14:443".parse().unwrap(),
            "[fd00::1]:443".parse().unwrap(),
        ]);
        assert_eq!(allowed, vec!["93.184.215.14:443".parse::<SocketAddr>().unwrap()]);
        assert_eq!(refused.len(), 2);
    }
}
