//! Request paths as routes see them and endpoints get them.
//!
//! Routing on the bytes a client sent invites path confusion: `/api/../admin`
//! starts with `/api`, and a backend that resolves dot segments serves
//! `/admin`. So the path is normalised first, as RFC 3986 §6.2.2 says:
//! percent-encoded unreserved characters are decoded (`%41` is `A`, `%2E` a
//! dot), other percent-encodings are upper-cased (`%2f` stays encoded, as
//! `%2F`), and dot segments are removed. Routes match the normalised path,
//! and the normalised path is what goes to the endpoint; the query is passed
//! on as sent. A path whose `..` would climb above the root, or with a
//! broken percent-encoding, is refused (nginx answers 400 too).

/// Why a path cannot be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// `..` climbs above the root.
    #[error("the path climbs above the root")]
    AboveRoot,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in the path")]
    Encoding,
}

/// Writes the normalised form of `target` (path and query as sent) into `out`.
pub(crate) fn normalize(target: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    out.clear();
    let (path, query) = crate::route::split_query(target);
    if path == b"*" {
        out.extend_from_slice(target);
        return Ok(());
    }
    let mut segments = path.split(|&b| b == b'/').skip(usize::from(path.first() == Some(&b'/'))).peekable();
    while let Some(segment) = segments.next() {
        let start = out.len();
        out.push(b'/');
        decode_unreserved(segment, out)?;
        match &out[start + 1..] {
            b"." => out.truncate(start),
            b".." => {
                out.truncate(start);
                let parent = out.iter().rposition(|&b| b == b'/').ok_or(PathError::AboveRoot)?;
                out.truncate(parent);
            }
            _ => continue,
        }
        // A path that ends in a dot segment names a directory.
        if segments.peek().is_none() {
            out.push(b'/');
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    if let Some(query) = query {
        out.push(b'?');
        out.extend_from_slice(query);
    }
    Ok(())
}

/// Appends `segment` with percent-encoded unreserved characters decoded and
/// other percent-encodings upper-cased.
fn decode_unreserved(segment: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    let mut i = 0;
    while i < segment.len() {
        if segment[i] != b'%' {
            out.push(segment[i]);
            i += 1;
            continue;
        }
        let hex = segment.get(i + 1..i + 3).ok_or(PathError::Encoding)?;
        let value = std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
        let value = value.ok_or(PathError::Encoding)?;
        if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
            out.push(value);
        } else {
            out.push(b'%');
            out.extend_from_slice(&hex.to_ascii_uppercase());
        }
        i += 3;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(target: &str) -> Result<String, PathError> {
        let mut out = Vec::new();
        normalize(target.as_bytes(), &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn dot_segments_are_resolved_as_rfc_3986_says() {
        for (given, want) in [
            ("/", "/"),
            ("", "/"),
            ("/a/b/c", "/a/b/c"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/api/../admin?x=../y", "/admin?x=../y"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a//b", "/a//b"),
            ("/a/b/", "/a/b/"),
            ("/..a/b..", "/..a/b.."),
            ("/a/%2e%2E/b", "/b"),
            ("/%41%62c%2f%3a", "/Abc%2F%3A"),
            ("/a/..", "/"),
            ("*", "*"),
        ] {
            assert_eq!(normalized(given).as_deref(), Ok(want), "{given}");
        }
    }

    #[test]
    fn escapes_and_bad_encodings_are_refused() {
        for (given, why) in [
            ("/..", PathError::AboveRoot),
            ("/../etc/passwd", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
            ("/a%2", PathError::Encoding),
            ("/a%zz", PathError::Encoding),
        ] {
            assert_eq!(normalized(given), Err(why), "{given}");
        }
    }
}
