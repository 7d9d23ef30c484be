//! The TOML configuration: its model, loading, and the checks `lb-proxy check` runs.
//!
//! Loading is two steps: serde reads the text (syntax, unknown keys, bad
//! values; toml reports where), then `validate` checks rules that involve
//! several keys (a route naming an unknown upstream, two listeners on one
//! address). Both kinds of error name `file:line:column`.

mod duration;
mod error;
mod model;
mod validate;

use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use model::*;

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config = Config::parse(&text, path)?;
        config.resolve_relative_paths(path);
        Ok(config)
    }

    /// Parses and validates `text`; `path` only names the text in errors.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::at(path, text, e.span(), e.message().trim_end().to_string()))?;
        if let Some(v) = validate::check(&config).into_iter().next() {
            return Err(ConfigError::at(path, text, Some(v.span), v.reason));
        }
        Ok(config)
    }

    /// File discovery paths are relative to the configuration file.
    fn resolve_relative_paths(&mut self, config_path: &Path) {
        let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
        for upstream in self.upstreams.values_mut() {
            if let Discovery::File(file) = upstream.get_mut().discovery.get_mut()
                && file.path.is_relative()
            {
                file.path = base.join(&file.path);
            }
        }
    }

    /// The listener addresses, in file order.
    pub fn listen_addresses(&self) -> Vec<std::net::SocketAddr> {
        self.listeners.iter().map(|l| *l.get_ref().listen.get_ref()).collect()
    }

    /// A name for configuration given as text in tests and examples.
    pub fn inline_name() -> PathBuf {
        PathBuf::from("<inline>")
    }
}
