//! The header rules every forwarded request follows, whichever engine
//! carries it (lb's HTTP/1.1 engine or hyper's HTTP/2).
//!
//! Forwarding headers say who the client is, and only a trusted proxy may
//! vouch for what came before it (nginx's `set_real_ip_from`, Envoy's
//! `xff_num_trusted_hops`, whose default trusts nobody):
//!
//! | field | peer in `trusted_proxies` | any other peer |
//! |---|---|---|
//! | `X-Forwarded-For` | its list, then the peer | the peer alone |
//! | `X-Forwarded-Proto` | its value, else our scheme | our scheme |
//! | `X-Forwarded-Host` | its value, else the Host asked for | the Host asked for |
//! | `Forwarded` (RFC 7239) | its elements, then ours when enabled | ours when enabled, else none |
//!
//! A request keeps the client's `X-Request-Id` or gets a new one.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::http1::fields::FieldName;

/// The request id header, propagated when present and generated otherwise.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Networks whose connections may vouch for earlier hops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub(crate) fn new(networks: Vec<ipnet::IpNet>) -> Self {
        TrustedProxies(networks)
    }

    /// Whether `peer` is one of them (an IPv4-mapped IPv6 address counts as IPv4).
    pub(crate) fn contains(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&peer))
    }
}

/// This hop as the proxy describes it to the endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hop<'a> {
    pub(crate) peer: IpAddr,
    /// `peer` as text, made once per connection.
    pub(crate) peer_text: &'a [u8],
    /// `http` or `https`, as the client spoke to us.
    pub(crate) proto: &'static str,
    /// The peer may vouch for earlier hops.
    pub(crate) trusted: bool,
    /// Also write RFC 7239 `Forwarded`.
    pub(crate) rfc7239: bool,
}

/// The client's own forwarding fields, whichever head type holds them.
pub(crate) trait ClientFields {
    /// Calls `each` with every value of the fields of `kind`, in order.
    fn values(&self, kind: FieldName, each: &mut dyn FnMut(&[u8]));
    /// The value of the first field of `kind`.
    fn first(&self, kind: FieldName) -> Option<&[u8]>;
}

/// Where the rules write fields: the bytes of an HTTP/1.1 head, or a `HeaderMap`.
pub(crate) trait FieldWriter {
    /// Starts a field called `name`.
    fn begin(&mut self, name: &'static str);
    /// Adds bytes to its value.
    fn push(&mut self, bytes: &[u8]);
    /// Ends the field.
    fn end(&mut self);
}

/// The forwarding fields of the kinds the rules own; the writer replaces the client's.
pub(crate) const FORWARDING: [FieldName; 4] =
    [FieldName::XForwardedFor, FieldName::XForwardedProto, FieldName::XForwardedHost, FieldName::Forwarded];

/// Writes the forwarding fields for a request from `client` that asked for `host`.
pub(crate) fn forwarding(
    out: &mut impl FieldWriter,
    client: &impl ClientFields,
    host: Option<&[u8]>,
    hop: &Hop<'_>,
) {
    out.begin("x-forwarded-for");
    if hop.trusted {
        client.values(FieldName::XForwardedFor, &mut |v| {
            if !v.is_empty() {
                out.push(v);
                out.push(b", ");
            }
        });
    }
    out.push(hop.peer_text);
    out.end();
    let trusted_first = |kind| if hop.trusted { client.first(kind).filter(|v| !v.is_empty()) } else { None };
    out.begin("x-forwarded-proto");
    out.push(trusted_first(FieldName::XForwardedProto).unwrap_or(hop.proto.as_bytes()));
    out.end();
    let given_host = trusted_first(FieldName::XForwardedHost);
    if given_host.is_some() || host.is_some() {
        out.begin("x-forwarded-host");
        out.push(given_host.or(host).unwrap_or_default());
        out.end();
    }
    let mut earlier = false;
    if hop.trusted {
        client.values(FieldName::Forwarded, &mut |_| earlier = true);
    }
    if !(earlier || hop.rfc7239) {
        return;
    }
    out.begin("forwarded");
    let mut first = true;
    if hop.trusted {
        client.values(FieldName::Forwarded, &mut |v| {
            if !v.is_empty() {
                if !first {
                    out.push(b", ");
                }
                out.push(v);
                first = false;
            }
        });
    }
    if hop.rfc7239 {
        if !first {
            out.push(b", ");
        }
        forwarded_element(out, host, hop);
    }
    out.end();
}

/// This hop's RFC 7239 element, `for=...;proto=...;host=...`, quoted as §4 asks.
fn forwarded_element(out: &mut impl FieldWriter, host: Option<&[u8]>, hop: &Hop<'_>) {
    out.push(b"for=");
    match hop.peer {
        IpAddr::V4(_) => out.push(hop.peer_text),
        IpAddr::V6(_) => {
            out.push(b"\"[");
            out.push(hop.peer_text);
            out.push(b"]\"");
        }
    }
    out.push(b";proto=");
    out.push(hop.proto.as_bytes());
    if let Some(host) = host {
        out.push(b";host=");
        quoted(out, host);
    }
}

/// Writes `value` as a token when it is one, else as a quoted string with `"` and `\` escaped.
fn quoted(out: &mut impl FieldWriter, value: &[u8]) {
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if !value.is_empty() && value.iter().all(is_tchar) {
        out.push(value);
        return;
    }
    out.push(b"\"");
    for piece in value.split_inclusive(|&b| b == b'"' || b == b'\\') {
        match piece.split_last() {
            Some((&last, rest)) if last == b'"' || last == b'\\' => {
                out.push(rest);
                out.push(b"\\");
                out.push(&[last]);
            }
            _ => out.push(piece),
        }
    }
    out.push(b"\"");
}

/// The client's IP address as text, for [`Hop::peer_text`].
pub(crate) fn ip_text(ip: IpAddr, out: &mut [u8; 48]) -> usize {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut out[..]);
    let _ = write!(cursor, "{ip}");
    cursor.position() as usize
}

/// The header name of a forwarding field kind.
fn forwarding_name(kind: FieldName) -> Option<&'static str> {
    match kind {
        FieldName::XForwardedFor => Some("x-forwarded-for"),
        FieldName::XForwardedProto => Some("x-forwarded-proto"),
        FieldName::XForwardedHost => Some("x-forwarded-host"),
        FieldName::Forwarded => Some("forwarded"),
        _ => None,
    }
}

impl ClientFields for HeaderMap {
    fn values(&self, kind: FieldName, each: &mut dyn FnMut(&[u8])) {
        for value in forwarding_name(kind).into_iter().flat_map(|name| self.get_all(name)) {
            each(value.as_bytes());
        }
    }
    fn first(&self, kind: FieldName) -> Option<&[u8]> {
        self.get(forwarding_name(kind)?).map(HeaderValue::as_bytes)
    }
}

/// Writes fields into a `HeaderMap` (the HTTP/2 path), replacing any of the same name.
#[derive(Debug, Default)]
pub(crate) struct MapWriter {
    pub(crate) map: HeaderMap,
    name: Option<&'static str>,
    value: Vec<u8>,
}

impl FieldWriter for MapWriter {
    fn begin(&mut self, name: &'static str) {
        self.name = Some(name);
        self.value.clear();
    }
    fn push(&mut self, bytes: &[u8]) {
        self.value.extend_from_slice(bytes);
    }
    fn end(&mut self) {
        if let (Some(name), Ok(value)) = (self.name.take(), HeaderValue::from_bytes(&self.value)) {
            self.map.insert(HeaderName::from_static(name), value);
        }
    }
}

/// Makes request ids: unique per process, hex, written in place.
#[derive(Debug)]
pub(crate) struct RequestIds {
    /// This process's random half of every id, as hex digits.
    prefix: [u8; 16],
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds { prefix: hex(fastrand::u64(..)), next: AtomicU64::new(0) }
    }
}

/// A generated request id: 16 hex digits, `-`, 16 hex digits.
pub(crate) type RequestId = [u8; 33];

impl RequestIds {
    /// A new id.
    pub(crate) fn next(&self) -> RequestId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut text = [0u8; 33];
        text[..16].copy_from_slice(&self.prefix);
        text[16] = b'-';
        text[17..].copy_from_slice(&hex(n));
        text
    }
}

/// `n` as 16 lowercase hex digits, a byte (two digits) at a time: this
/// runs once per request.
fn hex(n: u64) -> [u8; 16] {
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            pairs[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
            i += 1;
        }
        pairs
    };
    let mut text = [0u8; 16];
    for (pair, byte) in text.chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair.copy_from_slice(&PAIRS[usize::from(byte)]);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes fields as `name: value` lines.
    #[derive(Default)]
    struct Lines(Vec<String>, Vec<u8>, &'static str);

    impl FieldWriter for Lines {
        fn begin(&mut self, name: &'static str) {
            self.2 = name;
            self.1.clear();
        }
        fn push(&mut self, bytes: &[u8]) {
            self.1.extend_from_slice(bytes);
        }
        fn end(&mut self) {
            self.0.push(format!("{}: {}", self.2, String::from_utf8_lossy(&self.1)));
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn written(
        client: &HeaderMap,
        host: Option<&str>,
        peer: &str,
        trusted: bool,
        rfc7239: bool,
    ) -> Vec<String> {
        let peer: IpAddr = peer.parse().unwrap();
        let mut text = [0u8; 48];
        let len = ip_text(peer, &mut text);
        let hop = Hop { peer, peer_text: &text[..len], proto: "http", trusted, rfc7239 };
        let mut lines = Lines::default();
        forwarding(&mut lines, client, host.map(str::as_bytes), &hop);
        lines.0
    }

    #[test]
    fn an_untrusted_peer_cannot_vouch_for_anything() {
        let client = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=evil;host=evil"),
        ]);
        assert_eq!(
            written(&client, Some("shop.example"), "192.0.2.7", false, false),
            ["x-forwarded-for: 192.0.2.7", "x-forwarded-proto: http", "x-forwarded-host: shop.example"]
        );
        assert_eq!(
            written(&client, Some("shop.example:8080"), "::1", false, true),
            [
                "x-forwarded-for: ::1",
                "x-forwarded-proto: http",
                "x-forwarded-host: shop.example:8080",
                "forwarded: for=\"[::1]\";proto=http;host=\"shop.example:8080\""
            ]
        );
    }

    #[test]
    fn a_trusted_peer_extends_the_chain() {
        let client = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        assert_eq!(
            written(&client, Some("shop.example"), "10.0.0.1", true, true),
            [
                "x-forwarded-for: 203.0.113.9, 10.0.0.2, 10.0.0.1",
                "x-forwarded-proto: https",
                "x-forwarded-host: shop.example",
                "forwarded: for=203.0.113.9, for=10.0.0.1;proto=http;host=shop.example"
            ]
        );
        let plain = map(&[("forwarded", "for=203.0.113.9")]);
        assert_eq!(written(&plain, None, "10.0.0.1", true, false)[2], "forwarded: for=203.0.113.9");
    }

    #[test]
    fn quoted_strings_escape_quotes_and_backslashes() {
        let mut lines = Lines::default();
        lines.begin("x");
        quoted(&mut lines, br#"a"b\c"#);
        lines.end();
        assert_eq!(lines.0, [r#"x: "a\"b\\c""#]);
    }

    #[test]
    fn trusted_networks_match_mapped_addresses_too() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        assert!(trusted.contains("10.1.2.3".parse().unwrap()));
        assert!(trusted.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(trusted.contains("::1".parse().unwrap()));
        assert!(!trusted.contains("11.0.0.1".parse().unwrap()));
        assert!(!TrustedProxies::default().contains("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let ids = RequestIds::default();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert!(a.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-'));
        assert_eq!(a[..17], b[..17], "one process, one prefix");
        let count =
            |id: &RequestId| u64::from_str_radix(std::str::from_utf8(&id[17..]).unwrap(), 16).unwrap();
        assert_eq!(count(&b), count(&a) + 1);
    }

    #[test]
    fn hex_writes_every_digit_in_order() {
        assert_eq!(&hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex(u64::MAX), b"ffffffffffffffff");
        assert_eq!(&hex(0), b"0000000000000000");
    }
}
