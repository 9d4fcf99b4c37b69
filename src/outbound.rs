//! Outbound HTTP: one blocking client for the whole process (fetching trusted issuers' JWKS; later, pushing
//! SETs), with connect and request timeouts, no redirects, TLS by rustls on the aws-lc-rs provider (the one
//! jsonwebtoken uses too; DECISIONS.md §30) and the system's trusted roots. Call it from blocking code only
//! (`web::block`, a worker thread), never from an async task.

use std::sync::OnceLock;
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
    use super::allowed_url;

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
