//! A watched endpoint file (TOML or JSON).

use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_core::Endpoint;
use notify::event::{MetadataKind, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::file_format::{FileFormat, parse_endpoints};
use crate::source::Source;

/// Why reading an endpoint file failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file name has no `.toml` or `.json` extension; name the format.
    #[error("{path}: cannot tell the format from the extension; use .toml or .json, or set it explicitly")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file (or its directory) could not be watched.
    #[error("{path}: cannot watch for changes: {source}")]
    Watch {
        /// The file.
        path: PathBuf,
        /// What the watcher said.
        source: notify::Error,
    },
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file's content is not a valid endpoint list.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the problem.
        line: usize,
        /// The 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// An endpoint file, re-read whenever it changes.
///
/// The file's directory is watched (not the file itself), so editors that
/// save by writing a new file and renaming it over the old one are seen.
/// Changes are debounced: after an event the source waits
/// [`debounce`](FileSource::with_debounce) for the writer to finish, then
/// reads once. A bad, half-written, missing or unreadable file is logged as
/// an error with file, line and column, and the last good list stays.
pub struct FileSource {
    path: PathBuf,
    format: FileFormat,
    debounce: Duration,
    events: mpsc::Receiver<()>,
    read_once: bool,
    // Dropping the watcher stops its thread; it lives as long as the source.
    _watcher: RecommendedWatcher,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("debounce", &self.debounce)
            .finish_non_exhaustive()
    }
}

/// The default pause between a change event and the read.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);

impl FileSource {
    /// Watches `path`, whose format comes from its extension.
    ///
    /// The file itself need not exist yet; its directory must.
    ///
    /// # Errors
    /// [`FileError::UnknownFormat`] for another extension (see
    /// [`with_format`](Self::with_format)); [`FileError::Watch`] when the
    /// directory cannot be watched.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, FileError> {
        let path = path.into();
        let format =
            FileFormat::from_path(&path).ok_or_else(|| FileError::UnknownFormat { path: path.clone() })?;
        Self::with_format(path, format)
    }

    /// Watches `path`, written in `format` whatever its extension.
    ///
    /// # Errors
    /// [`FileError::Watch`] when the file's directory cannot be watched.
    pub fn with_format(path: impl Into<PathBuf>, format: FileFormat) -> Result<Self, FileError> {
        let path = path.into();
        let watch_error = |source| FileError::Watch { path: path.clone(), source };
        let directory = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().map(ToOwned::to_owned);
        // One slot: events that arrive while a read is pending coalesce into it.
        let (sender, events) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) => {
                    // Our own reads raise access events; reacting to them would loop.
                    let mutates = !matches!(
                        event.kind,
                        EventKind::Access(_)
                            | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
                    );
                    let ours = event.paths.iter().any(|p| p.file_name() == file_name.as_deref());
                    if mutates && ours {
                        let _ = sender.try_send(());
                    }
                }
                Err(error) => tracing::warn!(%error, "endpoint file watcher error"),
            })
            .map_err(watch_error)?;
        watcher.watch(&directory, RecursiveMode::NonRecursive).map_err(watch_error)?;
        Ok(FileSource {
            path,
            format,
            debounce: DEFAULT_DEBOUNCE,
            events,
            read_once: false,
            _watcher: watcher,
        })
    }

    /// Sets how long to wait after a change event before reading.
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read(&self) -> Result<Vec<Endpoint>, FileError> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|source| FileError::Read { path: self.path.clone(), source })?;
        parse_endpoints(&text, self.format).map_err(|e| FileError::Parse {
            path: self.path.clone(),
            line: e.line,
            column: e.column,
            message: e.message,
        })
    }
}

impl Source for FileSource {
    type Error = FileError;

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn next_list(&mut self) -> Option<Result<Vec<Endpoint>, FileError>> {
        if self.read_once {
            // The watcher holds the sender; `None` means it is gone for good.
            self.events.recv().await?;
            tokio::time::sleep(self.debounce).await;
            while self.events.try_recv().is_ok() {}
        }
        self.read_once = true;
        Some(self.read().await)
    }
}
