//! Matching a request to an upstream, and finding its hash key.

use std::net::IpAddr;

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

    /// The upstream index for a request to `host` (may carry a port) and
    /// `path` (normalised, see `crate::path`). A prefix matches whole path
    /// segments: `/api` matches `/api` and `/api/x`, never `/apiary`.
    pub(crate) fn find(&self, host: Option<&[u8]>, path: &[u8]) -> Option<usize> {
        let host = host.map(strip_port);
        self.rules
            .iter()
            .find(|r| {
                let host_ok = match (&r.host, host) {
                    (None, _) => true,
                    (Some(want), Some(got)) => want.as_bytes().eq_ignore_ascii_case(got),
                    (Some(_), None) => false,
                };
                host_ok && segment_prefix(path, r.path_prefix.as_bytes())
            })
            .map(|r| r.upstream)
    }
}

/// Whether `prefix` is `path`, or a run of `path`'s leading segments.
fn segment_prefix(path: &[u8], prefix: &[u8]) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with(b"/") || path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// `https://host/target` for a plain listener's redirect: the host as the
/// client gave it, without its port (the https port is the default one), and
/// the target as routed.
pub(crate) fn https_location(host: &[u8], target: &[u8]) -> Vec<u8> {
    let name = match host.first() {
        // [v6]:port keeps its brackets.
        Some(b'[') => host.iter().position(|&b| b == b']').map_or(host, |end| &host[..=end]),
        _ => strip_port(host),
    };
    [b"https://", name, target].concat()
}

fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        // [v6]:port
        return host.iter().position(|&b| b == b']').map_or(host, |end| &host[1..end]);
    }
    host.iter().rposition(|&b| b == b':').map_or(host, |colon| &host[..colon])
}

/// What a hash key can be taken from, whichever engine parsed the request.
pub(crate) trait RequestView {
    /// The first value of the field called `name` (lower case).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// Every `Cookie` field's value.
    fn cookies(&self) -> impl Iterator<Item = &[u8]>;
    /// The path, without the query.
    fn path(&self) -> &[u8];
    /// The query, without `?`.
    fn query(&self) -> Option<&[u8]>;
}

/// Splits a request target's path and query.
pub(crate) fn split_query(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (target, None),
    }
}

impl RequestView for http::request::Parts {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(http::HeaderValue::as_bytes)
    }
    fn cookies(&self) -> impl Iterator<Item = &[u8]> {
        self.headers.get_all(http::header::COOKIE).iter().map(http::HeaderValue::as_bytes)
    }
    fn path(&self) -> &[u8] {
        self.uri.path().as_bytes()
    }
    fn query(&self) -> Option<&[u8]> {
        self.uri.query().map(str::as_bytes)
    }
}

impl RequestView for crate::http1::write::HeadIn<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.head.field(self.buf, name)
    }
    fn cookies(&self) -> impl Iterator<Item = &[u8]> {
        let buf = self.buf;
        self.head
            .fields
            .iter()
            .filter(move |f| f.name.of(buf).eq_ignore_ascii_case(b"cookie"))
            .map(move |f| f.value.of(buf))
    }
    fn path(&self) -> &[u8] {
        split_query(self.target).0
    }
    fn query(&self) -> Option<&[u8]> {
        split_query(self.target).1
    }
}

/// The affinity key for `request` under `rule`; `ip_buf` holds the client IP's bytes.
pub(crate) fn hash_key<'a>(
    rule: &HashKey,
    request: &'a impl RequestView,
    ip: IpAddr,
    ip_buf: &'a mut [u8; 16],
) -> Option<&'a [u8]> {
    match rule {
        HashKey::Header(name) => request.header(name),
        HashKey::Cookie(name) => request.cookies().find_map(|value| cookie(value, name)),
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
        HashKey::Path => Some(request.path()),
        HashKey::Query(name) => query_param(request.query()?, name),
    }
}

fn cookie<'a>(value: &'a [u8], name: &str) -> Option<&'a [u8]> {
    value.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
    })
}

fn query_param<'a>(query: &'a [u8], name: &str) -> Option<&'a [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        (k == name.as_bytes()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
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
        assert_eq!(routes.find(Some(b"other"), b"/api/users"), Some(1));
        assert_eq!(routes.find(Some(b"other"), b"/index"), Some(0));
        assert_eq!(routes.find(Some(b"SHOP.example:8080"), b"/api"), Some(2));
        assert_eq!(routes.find(None, b"/"), Some(0));
        assert_eq!(Routes::new(vec![r(Some("a"), "/x", 0)]).find(Some(b"a"), b"/y"), None);
        assert_eq!(strip_port(b"[::1]:80"), b"::1");
        assert_eq!(routes.find(None, b"/apiary"), Some(0), "a prefix matches whole segments");
        assert_eq!(routes.find(None, b"/api"), Some(1));
        let slash = Routes::new(vec![r(None, "/static/", 0)]);
        assert_eq!(slash.find(None, b"/static/x"), Some(0));
        assert_eq!(slash.find(None, b"/static"), None);
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
        assert_eq!(split_query(b"/a?b=1"), (&b"/a"[..], Some(&b"b=1"[..])));
    }
}
