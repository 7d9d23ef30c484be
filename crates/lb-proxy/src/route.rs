//! Matching a request to an upstream, and finding its hash key.

use std::net::IpAddr;

use http::request::Parts;
use http::{HeaderMap, header};

use crate::config::HashKey;

/// One compiled routing rule.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Lower-case host without port; `None` matches any host.
    pub(crate) host: Option<String>,
    pub(crate) path_prefix: String,
    /// Index into the runtime's upstreams.
    pub(crate) upstream: usize,
}

/// Routing rules, most specific first: exact hosts, then longer prefixes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    rules: Vec<Route>,
}

impl Routes {
    pub(crate) fn new(mut rules: Vec<Route>) -> Self {
        rules.sort_by(|a, b| {
            b.host.is_some().cmp(&a.host.is_some()).then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        Routes { rules }
    }

    /// The upstream index for a request to `host` (may carry a port) and `path`.
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(strip_port);
        self.rules
            .iter()
            .find(|r| {
                let host_ok = match (&r.host, host) {
                    (None, _) => true,
                    (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                    (Some(_), None) => false,
                };
                host_ok && path.starts_with(r.path_prefix.as_str())
            })
            .map(|r| r.upstream)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The host a request asked for: `Host`, or the URI's authority (HTTP/2).
pub(crate) fn request_host(parts: &Parts) -> Option<&str> {
    parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| parts.uri.host())
}

/// The affinity key for `request` under `rule`; `ip_buf` holds the client IP's bytes.
pub(crate) fn hash_key<'a>(
    rule: &HashKey,
    parts: &'a Parts,
    ip: IpAddr,
    ip_buf: &'a mut [u8; 16],
) -> Option<&'a [u8]> {
    match rule {
        HashKey::Header(name) => parts.headers.get(name.as_str()).map(|v| v.as_bytes()),
        HashKey::Cookie(name) => cookie(&parts.headers, name),
        HashKey::ClientIp => Some(match ip {
            IpAddr::V4(v4) => {
                ip_buf[..4].copy_from_slice(&v4.octets());
                &ip_buf[..4]
            }
            IpAddr::V6(v6) => {
                *ip_buf = v6.octets();
                &ip_buf[..]
            }
        }),
        HashKey::Path => Some(parts.uri.path().as_bytes()),
        HashKey::Query(name) => query_param(parts.uri.query()?, name),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(header::COOKIE).iter().flat_map(|v| v.as_bytes().split(|&b| b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
    })
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_most_specific_route_wins() {
        let r = |host: Option<&str>, prefix: &str, upstream| Route {
            host: host.map(str::to_string),
            path_prefix: prefix.to_string(),
            upstream,
        };
        let routes = Routes::new(vec![r(None, "/", 0), r(None, "/api", 1), r(Some("shop.example"), "/", 2)]);
        assert_eq!(routes.find(Some("other"), "/api/users"), Some(1));
        assert_eq!(routes.find(Some("other"), "/index"), Some(0));
        assert_eq!(routes.find(Some("SHOP.example:8080"), "/api"), Some(2));
        assert_eq!(routes.find(None, "/"), Some(0));
        assert_eq!(Routes::new(vec![r(Some("a"), "/x", 0)]).find(Some("a"), "/y"), None);
        assert_eq!(strip_port("[::1]:80"), "::1");
    }

    #[test]
    fn hash_keys_come_from_each_source() {
        let p = parts("/cart?user=42&x", &[("x-user", "u7"), ("cookie", "a=1; session=s9")]);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let mut buf = [0; 16];
        assert_eq!(hash_key(&HashKey::Header("x-user".into()), &p, ip, &mut buf), Some(&b"u7"[..]));
        assert_eq!(hash_key(&HashKey::Cookie("session".into()), &p, ip, &mut buf), Some(&b"s9"[..]));
        assert_eq!(hash_key(&HashKey::Cookie("nope".into()), &p, ip, &mut buf), None);
        assert_eq!(hash_key(&HashKey::Query("user".into()), &p, ip, &mut buf), Some(&b"42"[..]));
        assert_eq!(hash_key(&HashKey::Path, &p, ip, &mut buf), Some(&b"/cart"[..]));
        assert_eq!(hash_key(&HashKey::ClientIp, &p, ip, &mut buf), Some(&[10, 1, 2, 3][..]));
    }
}
