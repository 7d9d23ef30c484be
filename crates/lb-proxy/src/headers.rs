//! Header rules applied to every forwarded request and response.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are
//! removed, including every header the `Connection` header names; an
//! `Upgrade` handshake keeps `Connection: upgrade` and `Upgrade` so WebSocket
//! still works. The proxy adds `X-Forwarded-For/-Proto/-Host`, optionally the
//! RFC 7239 `Forwarded` header, and a request id.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The request id header, propagated when present and generated otherwise.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers that are always removed (Upgrade is handled apart).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Whether the message asks to switch protocols (`Connection: upgrade` plus `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers and those named in `Connection`. When `upgrade`
/// is true, `Upgrade` and `Connection: upgrade` survive.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        // Rare (HTTP/1.1 keeps alive by default), so collecting here is fine.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !(upgrade && t.eq_ignore_ascii_case("upgrade")))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// What the proxy knows about the client side of a request.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide<'a> {
    /// The client's IP address.
    pub ip: IpAddr,
    /// `http` or `https`, as the client spoke to us.
    pub proto: &'static str,
    /// The `Host` the client asked for, if any.
    pub host: Option<&'a HeaderValue>,
    /// `ip` as text from [`ip_value`], made once per connection; `None` formats it here.
    pub ip_text: Option<&'a HeaderValue>,
}

/// The client's IP address as a header value, for [`ClientSide::ip_text`].
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut text = [0u8; 48];
    HeaderValue::from_bytes(write_ip(&mut text, ip, false))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Adds `X-Forwarded-For` (appended to any earlier hops), `-Proto` and
/// `-Host` (this hop's view), and with `rfc7239` the `Forwarded` header.
pub fn add_forwarding(headers: &mut HeaderMap, client: ClientSide<'_>, rfc7239: bool) {
    let made;
    let ip_value = match client.ip_text {
        Some(value) => value,
        None => {
            made = ip_value(client.ip);
            &made
        }
    };
    let ip = ip_value.as_bytes();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(earlier) if !earlier.is_empty() => {
            let mut joined = Vec::with_capacity(earlier.len() + 2 + ip.len());
            joined.extend_from_slice(earlier);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(ip);
            HeaderValue::from_bytes(&joined)
        }
        _ => Ok(ip_value.clone()),
    };
    if let Ok(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto));
    if let Some(host) = client.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if rfc7239 {
        let mut element = String::with_capacity(64);
        element.push_str("for=");
        let mut quoted = [0u8; 48];
        element.push_str(std::str::from_utf8(write_ip(&mut quoted, client.ip, true)).unwrap_or("unknown"));
        element.push_str(";proto=");
        element.push_str(client.proto);
        if let Some(host) = client.host.and_then(|h| h.to_str().ok()) {
            element.push_str(";host=\"");
            element.push_str(host);
            element.push('"');
        }
        let value = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {element}"),
            None => element,
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::FORWARDED, value);
        }
    }
}

/// Writes `ip` as text into `buf`; RFC 7239 quotes IPv6 as `"[::1]"`.
fn write_ip(buf: &mut [u8; 48], ip: IpAddr, rfc7239: bool) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let written = match ip {
        IpAddr::V6(v6) if rfc7239 => write!(cursor, "\"[{v6}]\""),
        other => write!(cursor, "{other}"),
    };
    let len = if written.is_ok() { cursor.position() as usize } else { 0 };
    &buf[..len]
}

/// Makes request ids: unique per process, hex, no allocation beyond the header value.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds { prefix: fastrand::u64(..), next: AtomicU64::new(0) }
    }
}

impl RequestIds {
    /// Keeps the client's `X-Request-Id`, or sets a new one; returns the id.
    pub fn ensure(&self, headers: &mut HeaderMap) -> HeaderValue {
        if let Some(id) = headers.get(&REQUEST_ID)
            && !id.is_empty()
        {
            return id.clone();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut text = [0u8; 33];
        hex(&mut text[..16], self.prefix);
        text[16] = b'-';
        hex(&mut text[17..], n);
        let value = HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        headers.insert(REQUEST_ID, value.clone());
        value
    }
}

fn hex(out: &mut [u8], mut n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n & 15) as usize];
        n >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn an_upgrade_handshake_survives() {
        let mut h =
            map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket"), ("keep-alive", "1")]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert!(h.get("keep-alive").is_none());
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])), "Upgrade without Connection is no handshake");
    }

    #[test]
    fn forwarding_headers_append_and_describe_this_hop() {
        let host = HeaderValue::from_static("shop.example");
        let mut h = map(&[("x-forwarded-for", "10.0.0.1"), ("forwarded", "for=10.0.0.1")]);
        let client =
            ClientSide { ip: "::1".parse().unwrap(), proto: "http", host: Some(&host), ip_text: None };
        add_forwarding(&mut h, client, true);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, ::1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "shop.example");
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=10.0.0.1, for=\"[::1]\";proto=http;host=\"shop.example\""
        );
        let mut fresh = HeaderMap::new();
        add_forwarding(
            &mut fresh,
            ClientSide { ip: "192.0.2.7".parse().unwrap(), proto: "http", host: None, ip_text: None },
            false,
        );
        assert_eq!(fresh.get("x-forwarded-for").unwrap(), "192.0.2.7");
        let ip = "2001:db8::7".parse().unwrap();
        let made_once = ip_value(ip);
        let mut with_text = map(&[("x-forwarded-for", "10.0.0.1")]);
        add_forwarding(
            &mut with_text,
            ClientSide { ip, proto: "http", host: None, ip_text: Some(&made_once) },
            false,
        );
        assert_eq!(with_text.get("x-forwarded-for").unwrap(), "10.0.0.1, 2001:db8::7");
        assert!(fresh.get("forwarded").is_none());
    }

    #[test]
    fn request_ids_are_kept_or_made_unique() {
        let ids = RequestIds::default();
        let mut given = map(&[("x-request-id", "abc")]);
        assert_eq!(ids.ensure(&mut given), "abc");
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        let (ida, idb) = (ids.ensure(&mut a), ids.ensure(&mut b));
        assert_ne!(ida, idb);
        assert_eq!(ida.len(), 33);
        assert_eq!(a.get("x-request-id").unwrap(), ida);
    }
}
