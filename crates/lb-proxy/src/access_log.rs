//! One line per request, written whole to stdout or to `access_log_file`:
//! `key=value` text, or one JSON object per line (JSON Lines), never mixed
//! with the diagnostic log (which goes to stderr through `tracing`).
//!
//! Every value taken from the request is escaped, so a request id or path
//! with spaces, quotes or line breaks cannot forge a line or a field: in
//! the text format such a value is written as a quoted string with `"`,
//! `\` and every byte outside printable ASCII escaped; JSON escapes itself.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;

use crate::config::AccessLog;

/// What the access log says about one request.
#[derive(Debug, Clone, Copy)]
pub struct AccessEntry<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// The request method.
    pub method: &'a str,
    /// The request target as the client sent it (path and query).
    pub target: &'a [u8],
    /// The status the client got.
    pub status: StatusCode,
    /// The endpoint that answered, if any did.
    pub backend: Option<&'a str>,
    /// Time to the end of the response.
    pub duration: Duration,
    /// The request id.
    pub request_id: &'a [u8],
}

impl AccessLog {
    /// Whether lines are written at all.
    #[inline]
    pub fn enabled(self) -> bool {
        self != AccessLog::Off
    }

    /// Formats one request's line, or `None` when the log is off.
    pub fn line(self, e: &AccessEntry<'_>) -> Option<String> {
        let backend = e.backend.unwrap_or("-");
        let micros = e.duration.as_micros();
        let status = e.status.as_u16();
        match self {
            AccessLog::Off => None,
            AccessLog::Text => {
                let mut line = format!("client={} method=", e.client);
                text_value(&mut line, e.method.as_bytes());
                line.push_str(" uri=");
                text_value(&mut line, e.target);
                let _ = write!(line, " status={status} backend={backend} duration_us={micros} request_id=");
                text_value(&mut line, e.request_id);
                Some(line)
            }
            AccessLog::Json => Some(
                serde_json::json!({
                    "client": e.client.to_string(),
                    "method": e.method,
                    "uri": String::from_utf8_lossy(e.target),
                    "status": status,
                    "backend": backend,
                    "duration_us": micros,
                    "request_id": String::from_utf8_lossy(e.request_id),
                })
                .to_string(),
            ),
        }
    }
}

/// Where access lines go: a format and an output.
#[derive(Debug)]
pub(crate) struct AccessSink {
    format: AccessLog,
    /// `None`: stdout.
    file: Option<Mutex<std::fs::File>>,
    /// What the sink was opened from, so a reload can keep it.
    pub(crate) opened_from: (AccessLog, Option<PathBuf>),
}

impl AccessSink {
    /// The sink a configuration asks for; the file is opened for appending now.
    pub(crate) fn open(format: AccessLog, file: Option<&PathBuf>) -> std::io::Result<AccessSink> {
        let opened = match (format, file) {
            (AccessLog::Off, _) | (_, None) => None,
            (_, Some(path)) => {
                Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?))
            }
        };
        Ok(AccessSink { format, file: opened, opened_from: (format, file.cloned()) })
    }

    /// Whether lines are written at all.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.format.enabled()
    }

    /// Writes one request's line, whole, in one write.
    pub(crate) fn write(&self, entry: &AccessEntry<'_>) {
        let Some(mut line) = self.format.line(entry) else { return };
        line.push('\n');
        let written = match &self.file {
            Some(file) => file.lock().unwrap_or_else(PoisonError::into_inner).write_all(line.as_bytes()),
            None => std::io::stdout().lock().write_all(line.as_bytes()),
        };
        if let Err(error) = written {
            tracing::warn!(%error, "cannot write the access log");
        }
    }
}

/// Appends `value` bare when it is plain printable ASCII without spaces,
/// quotes or backslashes, else as a quoted string with those escaped.
fn text_value(line: &mut String, value: &[u8]) {
    let plain = |b: &u8| b.is_ascii_graphic() && *b != b'"' && *b != b'\\';
    if !value.is_empty() && value.iter().all(plain) {
        line.push_str(std::str::from_utf8(value).unwrap_or("-"));
        return;
    }
    line.push('"');
    for &b in value {
        match b {
            b'"' => line.push_str("\\\""),
            b'\\' => line.push_str("\\\\"),
            b' '..=b'~' => line.push(char::from(b)),
            _ => {
                let _ = write!(line, "\\x{b:02x}");
            }
        }
    }
    line.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(target: &'a [u8], request_id: &'a [u8]) -> AccessEntry<'a> {
        AccessEntry {
            client: SocketAddr::from(([127, 0, 0, 1], 5000)),
            method: "GET",
            target,
            status: StatusCode::OK,
            backend: Some("10.0.0.1:80"),
            duration: Duration::from_micros(1500),
            request_id,
        }
    }

    #[test]
    fn lines_in_both_formats() {
        let mut e = entry(b"/a?b=1", b"id-1");
        assert_eq!(
            AccessLog::Text.line(&e).unwrap(),
            "client=127.0.0.1:5000 method=GET uri=/a?b=1 status=200 backend=10.0.0.1:80 duration_us=1500 request_id=id-1"
        );
        e.backend = None;
        let v: serde_json::Value = serde_json::from_str(&AccessLog::Json.line(&e).unwrap()).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["backend"], "-");
        assert!(AccessLog::Off.line(&e).is_none());
    }

    #[test]
    fn request_values_cannot_forge_a_line_or_a_field() {
        let forged = b"x status=200\nclient=6.6.6.6 \"q\" \\";
        let line = AccessLog::Text.line(&entry(b"/a b", forged)).unwrap();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains(r#"uri="/a b""#), "{line}");
        assert!(line.ends_with(r#"request_id="x status=200\x0aclient=6.6.6.6 \"q\" \\""#), "{line}");
        assert_eq!(line.matches(" status=").count(), 2, "the forged one is inside quotes: {line}");
        let json = AccessLog::Json.line(&entry(b"/", forged)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["request_id"], String::from_utf8_lossy(forged).as_ref());
        assert!(!json.contains('\n'));
    }
}
