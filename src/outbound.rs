//! Outbound HTTP: one blocking client for the whole process (fetching trusted issuers' JWKS), and one per push
//! worker that reaches only public addresses ([`push_client`]), with connect and request timeouts, no redirects,
//! TLS by rustls on the aws-lc-rs provider (the one jsonwebtoken uses too) and the system's trusted roots. Call
//! them from blocking code only (`web::block`, a worker thread), never from an async task.
//!
//! Push endpoints are given by receivers, so they must not make offboard reach its own network (a cloud metadata
//! service, an admin port on loopback): [`AddressPolicy`] refuses every address that is not global (loopback,
//! private, link-local, unspecified, shared 100.64/10, unique-local `fc00::/7`, IPv4-mapped forms of those, …)
//! unless the operator's `fanout.allowed_private_hosts` names it. It is applied to an IP-literal host before any
//! connection, and to the addresses a host name resolves to **at connect time** (the push client's resolver drops
//! refused addresses), so a name that resolves to a public address when the stream is created and to a private
//! one later (DNS rebinding) still cannot reach it.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Installs aws-lc-rs as rustls's process-wide provider (idempotent). Two enabled providers would make rustls
/// panic at the first TLS connection; this crate enables exactly one and installs it before any client exists.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The shared client, built on first use.
pub fn client() -> Result<&'static reqwest::blocking::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::blocking::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            install_crypto_provider();
            reqwest::blocking::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("offboard/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Which non-global addresses pushes may reach anyway: `fanout.allowed_private_hosts`, each entry an address, a
/// CIDR network (`10.1.0.0/16`, `fd00::/8`) or a host name (whatever it resolves to is allowed).
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    networks: Vec<(IpAddr, u8)>,
    hosts: Vec<String>,
}

impl AddressPolicy {
    /// Parses the allow-list; `Err` names the entry that is neither an address, a network nor a host name.
    pub fn new(entries: &[String]) -> Result<Self, String> {
        let mut policy = Self::default();
        for entry in entries {
            let e = entry.trim();
            if let Some(net) = parse_network(e) {
                policy.networks.push(net);
            } else if !e.is_empty()
                && e.len() <= 253
                && e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                policy.hosts.push(e.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "`{entry}` is not an address, a CIDR network or a host name"
                ));
            }
        }
        Ok(policy)
    }

    /// Whether a push may connect to `ip`: a global address, or one the allow-list names.
    pub fn allows(&self, ip: IpAddr) -> bool {
        is_global(ip) || self.networks.iter().any(|&(net, bits)| in_network(ip, net, bits))
    }

    /// Whether the allow-list names this host name (then any address it resolves to is allowed).
    fn names(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Checks a push endpoint before use: `https://` with no userinfo, whose host is not an address (or a name
    /// such as `localhost`) the policy refuses; or `http://` to a loopback address (development). A host name is
    /// checked again, address by address, when [`push_client`] connects.
    pub fn check_endpoint(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|_| "the push endpoint is not a URL".to_owned())?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("the push endpoint must not carry userinfo (user:password@)".into());
        }
        if parsed.scheme() == "http" && crate::config::is_loopback_http(url) {
            return Ok(());
        }
        if parsed.scheme() != "https" {
            return Err(
                "the push endpoint must be an https:// URL (http:// only to a loopback address)".into(),
            );
        }
        // The URL parser normalises the host: `0x7f.1` reads as `127.0.0.1`, an IPv6 literal comes in brackets.
        let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
            return Err("the push endpoint has no host".into());
        };
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return self.check_ip(ip);
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if (name == "localhost" || name.ends_with(".localhost")) && !self.names(&name) {
            return Err(format!("the push endpoint's host `{name}` is a loopback name"));
        }
        Ok(())
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if self.allows(ip) {
            Ok(())
        } else {
            Err(format!(
                "the push endpoint's address {ip} is not public (loopback, private, link-local or reserved); \
                 an operator may allow it with fanout.allowed_private_hosts"
            ))
        }
    }
}

/// Parses `ADDRESS` or `ADDRESS/BITS`.
fn parse_network(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((addr, bits))
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let ip = canonical(ip);
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Whether an address is globally reachable: none of loopback, unspecified, private (RFC 1918), shared
/// (100.64/10), link-local, "this network" (0/8), IETF protocol assignments (192.0.0/24), benchmarking
/// (198.18/15), documentation, multicast, reserved (240/4) and broadcast; for IPv6 none of `::`, `::1`,
/// unique-local `fc00::/7`, link-local `fe80::/10`, site-local `fec0::/10`, multicast, documentation
/// (`2001:db8::/32`), discard (`100::/64`), and IPv4-mapped, IPv4-compatible or NAT64 (`64:ff9b::/96`, `6to4`
/// `2002::/16`) forms of a non-global IPv4 address.
pub fn is_global(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let first = seg.first().copied().unwrap_or(0);
            let embedded = |hi: usize| {
                let (a, b) = (
                    seg.get(hi).copied().unwrap_or(0),
                    seg.get(hi + 1).copied().unwrap_or(0),
                );
                std::net::Ipv4Addr::from((u32::from(a) << 16) | u32::from(b))
            };
            if v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() {
                return false;
            }
            // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) reach an IPv4 address.
            if seg.get(..6) == Some(&[0; 6]) {
                return is_global_v4(embedded(6));
            }
            if seg.get(..6) == Some(&[0x64, 0xff9b, 0, 0, 0, 0]) {
                return is_global_v4(embedded(6));
            }
            // 6to4: 2002:AABB:CCDD::/48 carries the IPv4 address AA.BB.CC.DD.
            if first == 0x2002 {
                return is_global_v4(embedded(1));
            }
            !((first & 0xfe00) == 0xfc00          // unique local
                || (first & 0xffc0) == 0xfe80     // link-local
                || (first & 0xffc0) == 0xfec0     // site-local (deprecated)
                || (first == 0x2001 && seg.get(1) == Some(&0x0db8)) // documentation
                || seg.get(..4) == Some(&[0x100, 0, 0, 0])) // discard-only
        }
    }
}

fn is_global_v4(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 192 && b == 0 && c == 0)
        || ip.is_documentation()
        || (a == 198 && (b & 0xfe) == 18)
        || ip.is_multicast()
        || a >= 240)
}

/// Why the push client refused to connect (found in a reqwest error's sources).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Resolves with the system resolver, then drops every address the policy refuses; none left is an error.
struct FilteringResolver(Arc<AddressPolicy>);

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup = host.clone();
            let addrs: Vec<SocketAddr> = tokio::task::spawn_blocking(move || {
                (lookup.as_str(), 0).to_socket_addrs().map(Iterator::collect)
            })
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)??;
            let all = policy.names(&host);
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| all || policy.allows(a.ip()))
                .collect();
            if allowed.is_empty() {
                let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Refused(format!(
                    "`{host}` resolves to no public address ({}); an operator may allow it with \
                     fanout.allowed_private_hosts",
                    shown.join(", ")
                ))) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A client for pushes to `https://` endpoints: [`client`]'s settings, no proxy (a proxy would resolve the host
/// itself), and a resolver that connects only to addresses `policy` allows.
pub fn push_client(policy: AddressPolicy) -> Result<reqwest::blocking::Client, String> {
    install_crypto_provider();
    reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(FilteringResolver(Arc::new(policy))))
        .user_agent(concat!("offboard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Whether a URL may be fetched: `https://`, or `http://` to a loopback address (tests, sidecars).
pub fn allowed_url(url: &str) -> bool {
    url.starts_with("https://") || crate::config::is_loopback_http(url)
}

/// GETs `url` and returns its body, at most `limit` bytes, failing on any status but 200.
pub fn get(url: &str, limit: usize) -> Result<Vec<u8>, String> {
    let res = client()?
        .get(url)
        .header("Accept", "application/json")
        .send()
        .map_err(|e| format!("GET {url}: {e}"))?;
    if res.status() != reqwest::StatusCode::OK {
        return Err(format!("GET {url}: status {}", res.status()));
    }
    match read_capped(res, limit).map_err(|e| format!("GET {url}: {e}"))? {
        Capped::Whole(body) => Ok(body),
        Capped::TooLarge => Err(format!("GET {url}: body larger than {limit} bytes")),
    }
}

/// A response body read with a limit.
#[derive(Debug)]
pub enum Capped {
    /// The whole body, at most the limit.
    Whole(Vec<u8>),
    /// The body is longer than the limit; at most limit + 1 bytes were read, and the rest never is.
    TooLarge,
}

/// Reads at most `limit` bytes of a response body (one more to tell that it is longer), so a peer that answers
/// gigabytes costs `limit` bytes of memory. Every outbound body goes through here.
pub fn read_capped(res: reqwest::blocking::Response, limit: usize) -> std::io::Result<Capped> {
    use std::io::Read;
    let mut body = Vec::new();
    res.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut body)?;
    Ok(if body.len() > limit {
        Capped::TooLarge
    } else {
        Capped::Whole(body)
    })
}

#[cfg(test)]
mod tests {
    use super::{AddressPolicy, allowed_url, is_global};

    #[test]
    fn only_global_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip} is not global");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_global(ip.parse().unwrap()), "{ip} is global");
        }
    }

    #[test]
    fn the_allow_list_names_addresses_networks_and_hosts() {
        let p = AddressPolicy::new(&[
            "10.1.0.0/16".into(),
            "fd00::/8".into(),
            "192.168.1.5".into(),
            "svc.internal".into(),
        ])
        .unwrap();
        assert!(p.allows("10.1.2.3".parse().unwrap()));
        assert!(p.allows("::ffff:10.1.2.3".parse().unwrap()), "mapped forms too");
        assert!(!p.allows("10.2.0.1".parse().unwrap()));
        assert!(p.allows("fd00::5".parse().unwrap()));
        assert!(p.allows("192.168.1.5".parse().unwrap()));
        assert!(!p.allows("192.168.1.6".parse().unwrap()));
        assert!(p.names("SVC.internal."));
        assert!(AddressPolicy::new(&["10.0.0.0/33".into()]).is_err());
        assert!(AddressPolicy::new(&["not a host".into()]).is_err());
        assert!(p.check_endpoint("https://10.1.0.9/events").is_ok());
    }

    #[test]
    fn push_endpoints_are_checked_before_any_connection() {
        let p = AddressPolicy::default();
        for url in [
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://0.0.0.0/",
            "https://[::ffff:192.168.0.1]/",
            "https://100.64.0.1/",
            "https://[fe80::1]/",
            "https://localhost/",
            "https://a.localhost:8443/",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "http://user:pw@127.0.0.1/",
            "http://example.com/",
            "ftp://example.com/",
        ] {
            assert!(p.check_endpoint(url).is_err(), "{url}");
        }
        for url in [
            "https://svc.example.com/ssf",
            "https://8.8.8.8/x",
            "http://127.0.0.1:9000/events",
            "http://[::1]:1/",
        ] {
            assert!(p.check_endpoint(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn only_https_or_loopback_http() {
        assert!(allowed_url("https://login.example.com/keys"));
        assert!(allowed_url("http://127.0.0.1:9000/jwks"));
        assert!(allowed_url("http://[::1]/jwks"));
        assert!(allowed_url("http://localhost:1/x"));
        assert!(!allowed_url("http://idp.example.com/jwks"));
        assert!(!allowed_url("http://10.0.0.1/jwks"));
        assert!(!allowed_url("ftp://x"));
        assert!(
            !allowed_url("http://localhost:x@evil.example/"),
            "userinfo names another host"
        );
        assert!(!allowed_url("http://[::1]@evil.example/"));
        assert!(!allowed_url("http://127.0.0.1\\@evil.example/"));
    }
}
