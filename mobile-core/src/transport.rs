//! How the phone (and the `patrol` CLI, which reuses this) may reach a server: which URLs it
//! accepts and the HTTP client it builds for them.
//!
//! - `https://` always; certificates are checked against the platform's roots, or only
//!   against the certificates given in [`Transport::ca_certificates_pem`] (a site's own
//!   certificate authority, or a self-signed server certificate) when there are any.
//! - `http://` only to a loopback server (`localhost`, `127.0.0.0/8`, `::1`: the same machine,
//!   where nothing crosses a network), unless [`Transport::allow_plain_http`] says otherwise
//!   for a lab. Over plain HTTP anyone on the network reads the device credential and the
//!   guards' records, and can alter both.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result};

/// The phone's rules for reaching a server; the default is the strict one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transport {
    /// Accept `http://` to a server that is not on loopback (a lab without certificates).
    pub allow_plain_http: bool,
    /// PEM certificates to trust instead of the platform's roots (one or more `-----BEGIN
    /// CERTIFICATE-----` blocks): the site's own authority, or the server's self-signed
    /// certificate.
    pub ca_certificates_pem: Option<Vec<u8>>,
}

impl Transport {
    /// `url` with any trailing `/` removed, if these rules accept it.
    pub fn checked_base_url<'a>(&self, url: &'a str) -> Result<&'a str> {
        let base = url.trim().trim_end_matches('/');
        // Without a scheme, `127.0.0.1:8080` does not parse and `localhost:8080` parses as the
        // scheme `localhost`: say what is missing instead of what the parser made of it.
        if !base.contains("://") {
            return Err(Error::BadServerUrl {
                url: base.to_owned(),
                reason: format!(
                    "a server URL needs http:// or https:// in front, e.g. {}",
                    with_scheme(base)
                ),
            });
        }
        let parsed = reqwest::Url::parse(base).map_err(|e| Error::BadServerUrl {
            url: base.to_owned(),
            reason: format!("{e}; a server URL looks like https://patrol.example.org"),
        })?;
        match parsed.scheme() {
            "https" => Ok(base),
            "http" if self.allow_plain_http || is_loopback(&parsed) => Ok(base),
            "http" => Err(Error::PlainHttp {
                url: base.to_owned(),
            }),
            other => Err(Error::BadServerUrl {
                url: base.to_owned(),
                reason: format!(
                    "the scheme must be https:// (or http:// for a lab), not {other}://"
                ),
            }),
        }
    }

    /// An HTTP client that applies these rules to certificates; requests time out after
    /// `timeout`.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            // The server closes a kept-alive connection that sends nothing for its header-read
            // timeout (10 s by default): dropping idle connections sooner means a request is
            // never sent down one just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            // A redirect could lead from https:// to http://; the API never redirects.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &self.ca_certificates_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::BadCertificate(e.to_string()))?;
            if certs.is_empty() {
                return Err(Error::BadCertificate(
                    "no `-----BEGIN CERTIFICATE-----` block in it".into(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        builder.build().map_err(|e| Error::Network(e.to_string()))
    }
}

/// `address` with the scheme these rules would take for it: `http://` for this machine (where
/// a test or demo server listens), `https://` otherwise.
fn with_scheme(address: &str) -> String {
    let plain = format!("http://{address}");
    match reqwest::Url::parse(&plain) {
        Ok(url) if is_loopback(&url) => plain,
        _ => format!("https://{address}"),
    }
}

/// Whether `url` names this machine: `localhost` or a loopback address.
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.to_canonical().is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_unless_allowed() {
        let strict = Transport::default();
        for ok in [
            "https://patrol.example.org",
            "https://10.0.0.5:8443/",
            "http://127.0.0.1:8080",
            "http://127.8.9.10:8080",
            "http://localhost:8080/",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert!(strict.checked_base_url(ok).is_ok(), "{ok}");
        }
        for plain in [
            "http://10.0.0.5:8080",
            "http://patrol.example.org",
            "http://localhost.example.org",
            "http://[::ffff:10.0.0.5]:8080",
            "http://0.0.0.0:8080",
        ] {
            assert!(
                matches!(strict.checked_base_url(plain), Err(Error::PlainHttp { .. })),
                "{plain}"
            );
        }
        let lab = Transport {
            allow_plain_http: true,
            ..Transport::default()
        };
        assert_eq!(
            lab.checked_base_url("http://10.0.0.5:8080/").ok(),
            Some("http://10.0.0.5:8080")
        );
        for bad in ["127.0.0.1:8080", "ftp://x", "patrol.example.org", ""] {
            assert!(
                matches!(lab.checked_base_url(bad), Err(Error::BadServerUrl { .. })),
                "{bad}"
            );
        }
    }

    /// An address without its scheme is refused with what to type instead, whatever the URL
    /// parser makes of it (`localhost:8080` parses, as the scheme `localhost`).
    #[test]
    fn a_url_without_a_scheme_says_it_needs_one() {
        for (typed, suggested) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("localhost:8080", "http://localhost:8080"),
            ("patrol.example.org", "https://patrol.example.org"),
            ("10.0.0.5:8443/", "https://10.0.0.5:8443"),
        ] {
            let said = Transport::default()
                .checked_base_url(typed)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                said.contains("a server URL needs http:// or https:// in front")
                    && said.ends_with(&format!("e.g. {suggested}")),
                "{typed}: {said}"
            );
        }
    }

    #[test]
    fn a_certificate_file_without_certificates_is_refused() {
        let t = Transport {
            ca_certificates_pem: Some(b"not a certificate".to_vec()),
            ..Transport::default()
        };
        assert!(matches!(
            t.client(Duration::from_secs(1)),
            Err(Error::BadCertificate(_))
        ));
    }
}
