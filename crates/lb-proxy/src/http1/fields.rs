//! Header fields as offsets into the buffer they were read into, and the
//! names the proxy treats specially, recognised once at parse time.

use std::ops::Range;

/// A byte range of a connection's read buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span of `part`, a subslice of `whole`.
    pub(crate) fn within(whole: &[u8], part: &[u8]) -> Span {
        // A part from elsewhere would make a span of unrelated bytes, or overflow.
        debug_assert!(whole.as_ptr_range().start <= part.as_ptr_range().start, "not a part of the buffer");
        debug_assert!(part.as_ptr_range().end <= whole.as_ptr_range().end, "not a part of the buffer");
        let start = part.as_ptr() as usize - whole.as_ptr() as usize;
        Span { start: start as u32, end: (start + part.len()) as u32 }
    }

    /// The bytes of this span in `buf`.
    #[inline]
    pub(crate) fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.range()]
    }

    pub(crate) fn range(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Header names with a meaning to the proxy; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldName {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    ProxyAuthorization,
    Te,
    Trailer,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedHost,
    XForwardedProto,
    Forwarded,
    XRequestId,
    Traceparent,
    Tracestate,
    Other,
}

impl FieldName {
    /// Recognises `name` (any case).
    pub(crate) fn of(name: &[u8]) -> FieldName {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            2 if is("te") => FieldName::Te,
            4 if is("host") => FieldName::Host,
            6 if is("expect") => FieldName::Expect,
            7 if is("upgrade") => FieldName::Upgrade,
            7 if is("trailer") => FieldName::Trailer,
            9 if is("forwarded") => FieldName::Forwarded,
            10 if is("connection") => FieldName::Connection,
            10 if is("keep-alive") => FieldName::KeepAlive,
            10 if is("tracestate") => FieldName::Tracestate,
            11 if is("traceparent") => FieldName::Traceparent,
            12 if is("x-request-id") => FieldName::XRequestId,
            14 if is("content-length") => FieldName::ContentLength,
            15 if is("x-forwarded-for") => FieldName::XForwardedFor,
            16 if is("x-forwarded-host") => FieldName::XForwardedHost,
            16 if is("proxy-connection") => FieldName::ProxyConnection,
            17 if is("transfer-encoding") => FieldName::TransferEncoding,
            17 if is("x-forwarded-proto") => FieldName::XForwardedProto,
            19 if is("proxy-authorization") => FieldName::ProxyAuthorization,
            _ => FieldName::Other,
        }
    }

    /// Hop-by-hop fields (RFC 9110 §7.6.1), and the framing the proxy writes itself.
    pub(crate) fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            FieldName::Connection
                | FieldName::KeepAlive
                | FieldName::ProxyConnection
                | FieldName::ProxyAuthorization
                | FieldName::Te
                | FieldName::Upgrade
                | FieldName::TransferEncoding
                | FieldName::ContentLength
                | FieldName::Expect
        )
    }

    /// Fields a `Connection` header can never remove: the message's identity
    /// and framing, and what the proxy itself vouches for.
    pub(crate) fn is_protected(self) -> bool {
        matches!(
            self,
            FieldName::Host
                | FieldName::ContentLength
                | FieldName::TransferEncoding
                | FieldName::XForwardedFor
                | FieldName::XForwardedHost
                | FieldName::XForwardedProto
                | FieldName::Forwarded
                | FieldName::XRequestId
                | FieldName::Traceparent
                | FieldName::Tracestate
        )
    }
}

/// One header field of a parsed head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: Span,
    pub(crate) value: Span,
    pub(crate) kind: FieldName,
    /// Whether the field is passed on as it came.
    pub(crate) forward: bool,
}

/// Records httparse's fields of the head in `buf` as spans, classified;
/// hop-by-hop fields are marked not forwarded.
pub(crate) fn record(buf: &[u8], parsed: &[httparse::Header<'_>], fields: &mut Vec<Field>) {
    fields.clear();
    for field in parsed {
        let kind = FieldName::of(field.name.as_bytes());
        fields.push(Field {
            name: Span::within(buf, field.name.as_bytes()),
            value: Span::within(buf, field.value),
            kind,
            forward: !kind.is_hop_by_hop(),
        });
    }
}

/// The comma-separated tokens of a list-valued field (`Connection`, `Transfer-Encoding`), trimmed.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// Marks the fields named in any `Connection` header as not forwarded (except
/// protected ones), and returns what `Connection` said: `(close, keep_alive, upgrade)`.
pub(crate) fn apply_connection(buf: &[u8], fields: &mut [Field]) -> (bool, bool, bool) {
    let (mut close, mut keep_alive, mut upgrade) = (false, false, false);
    for i in 0..fields.len() {
        if fields[i].kind != FieldName::Connection {
            continue;
        }
        for token in tokens(fields[i].value.of(buf)) {
            if token.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            } else {
                for field in fields.iter_mut() {
                    if !field.kind.is_protected() && field.name.of(buf).eq_ignore_ascii_case(token) {
                        field.forward = false;
                    }
                }
            }
        }
    }
    (close, keep_alive, upgrade)
}

/// Refuses bare LF line endings in a head, which httparse would accept: a
/// server behind us might read the same bytes differently.
pub(crate) fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// Parses a Content-Length value: digits only, no sign, no list, at most u64.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_in_any_case() {
        assert_eq!(FieldName::of(b"Content-Length"), FieldName::ContentLength);
        assert_eq!(FieldName::of(b"TRANSFER-ENCODING"), FieldName::TransferEncoding);
        assert_eq!(FieldName::of(b"x-forwarded-host"), FieldName::XForwardedHost);
        assert_eq!(FieldName::of(b"Content-Lengths"), FieldName::Other);
        assert_eq!(FieldName::of(b"te"), FieldName::Te);
    }

    #[test]
    fn only_the_exact_name_in_some_case_is_recognised() {
        let known = [
            "te",
            "host",
            "expect",
            "upgrade",
            "trailer",
            "forwarded",
            "connection",
            "keep-alive",
            "tracestate",
            "traceparent",
            "x-request-id",
            "content-length",
            "x-forwarded-for",
            "x-forwarded-host",
            "proxy-connection",
            "transfer-encoding",
            "x-forwarded-proto",
            "proxy-authorization",
        ];
        for name in known {
            let kind = FieldName::of(name.as_bytes());
            assert_ne!(kind, FieldName::Other, "{name}");
            assert_eq!(FieldName::of(name.to_ascii_uppercase().as_bytes()), kind, "{name}");
            for at in 0..name.len() {
                // Any other byte in any one place, a case change of a letter aside.
                for byte in 0..=u8::MAX {
                    let mut changed = name.as_bytes().to_vec();
                    if byte.to_ascii_lowercase() == changed[at] {
                        continue;
                    }
                    changed[at] = byte;
                    assert_eq!(FieldName::of(&changed), FieldName::Other, "{name} with {byte:#x} at {at}");
                }
            }
        }
    }

    #[test]
    fn content_lengths_are_plain_digits() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"0042"), Some(42));
        assert_eq!(content_length(b"18446744073709551615"), None, "20 digits");
        assert_eq!(content_length(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
        for bad in [&b""[..], b"+1", b"-1", b"1 2", b"1,1", b"0x10", b" 1"] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bare_line_feeds_are_found() {
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\n"));
    }
}
