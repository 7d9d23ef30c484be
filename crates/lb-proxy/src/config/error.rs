//! Configuration errors that point at the exact place in the file.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
///
/// Every error found in the text names `file:line:column`, like a compiler,
/// so `lb-proxy check` output can be pasted into an editor.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text is not valid TOML, has an unknown key or a bad value, or
    /// breaks a rule that spans several keys.
    #[error("{}:{line}:{column}: {reason}", path.display())]
    Invalid {
        /// The file (or `<inline>` for text given directly).
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column (in characters) of the offending text.
        column: usize,
        /// What is wrong and, where it helps, what to write instead.
        reason: String,
    },
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`] for the byte range `span` of `text`.
    pub(crate) fn at(path: &Path, text: &str, span: Option<Range<usize>>, reason: impl Into<String>) -> Self {
        let (line, column) = line_column(text, span.map_or(0, |s| s.start));
        ConfigError::Invalid { path: path.to_path_buf(), line, column, reason: reason.into() }
    }

    /// The 1-based line and column, for errors in the text.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
            ConfigError::Read { .. } => None,
        }
    }

    /// The reason alone, without the location.
    pub fn reason(&self) -> String {
        match self {
            ConfigError::Invalid { reason, .. } => reason.clone(),
            ConfigError::Read { source, .. } => source.to_string(),
        }
    }
}

/// A rule broken by a value, found after parsing; located by the value's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) span: Range<usize>,
    pub(crate) reason: String,
}

impl Violation {
    pub(crate) fn new(span: Range<usize>, reason: impl Into<String>) -> Self {
        Violation { span, reason: reason.into() }
    }
}

/// The 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 3), "columns count characters, not bytes");
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn errors_render_like_a_compiler() {
        let e = ConfigError::at(Path::new("lb.toml"), "x\ny = 1", Some(2..3), "bad y");
        assert_eq!(e.to_string(), "lb.toml:2:1: bad y");
        assert_eq!(e.location(), Some((2, 1)));
        assert_eq!(e.reason(), "bad y");
    }
}
