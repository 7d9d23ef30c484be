//! The TOML configuration: its model, loading, and the checks `lb-proxy check` runs.
//!
//! Loading is two steps: serde reads the text (syntax, unknown keys, bad
//! values; toml reports where), then `validate` checks rules that involve
//! several keys (a route naming an unknown upstream, two listeners on one
//! address). Both kinds of error name `file:line:column`.

mod duration;
mod error;
#[cfg(test)]
mod fuzz;
mod model;
mod validate;

use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use model::*;

/// The line of `text` that holds byte `offset`.
fn line_at(text: &str, offset: usize) -> &str {
    // An error span may fall inside a multi-byte character; slice at the character's start.
    let offset = text.floor_char_boundary(offset);
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    &text[start..end]
}

/// serde's words for a table that names several variants, or a variant
/// that needs a value, said in terms of the keys the line is about.
fn plain_words(message: &str, line: &str) -> String {
    let key = if line.trim_start().starts_with("hash_key") { "hash_key" } else { "discovery" };
    match (message, key) {
        ("wanted exactly 1 element, more than 1 element", "discovery") => {
            "discovery takes exactly one source: static, file, dns or consul".to_string()
        }
        ("wanted exactly 1 element, more than 1 element", _) => {
            "hash_key takes exactly one source: header, cookie, client_ip, path or query".to_string()
        }
        ("invalid type: unit variant, expected newtype variant", "discovery") => {
            "discovery needs its source's settings: write e.g. discovery.static.endpoints = [\"10.0.0.1:80\"]"
                .to_string()
        }
        ("invalid type: unit variant, expected newtype variant", _) => {
            "hash_key `header`, `cookie` and `query` need a name: write hash_key = { header = \"x-user-id\" }"
                .to_string()
        }
        _ => message.to_string(),
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config = Config::parse(&text, path)?;
        config.resolve_relative_paths(path);
        // Certificates are read now, so `check` refuses a missing file or a key that is not the certificate's.
        for listener in &config.listeners {
            if let Some(tls) = &listener.get_ref().tls
                && let Err(error) = tls.get_ref().server_config()
            {
                return Err(ConfigError::at(path, &text, Some(tls.span()), error.to_string()));
            }
        }
        for upstream in config.upstreams.values() {
            let upstream = upstream.get_ref();
            if let Some(tls) = &upstream.tls
                && let Err(error) = tls.get_ref().to_client_tls().connector(&[upstream.protocol.alpn()])
            {
                return Err(ConfigError::at(path, &text, Some(tls.span()), error.to_string()));
            }
        }
        Ok(config)
    }

    /// Parses and validates `text`; `path` only names the text in errors.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or("", |span| line_at(text, span.start));
            ConfigError::at(path, text, e.span(), plain_words(e.message().trim_end(), line))
        })?;
        if let Some(v) = validate::check(&config).into_iter().next() {
            return Err(ConfigError::at(path, text, Some(v.span), v.reason));
        }
        config.text = text.to_string();
        Ok(config)
    }

    /// File discovery paths, TLS files and the access log file are relative to the configuration file.
    fn resolve_relative_paths(&mut self, config_path: &Path) {
        let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
        for listener in &mut self.listeners {
            if let Some(tls) = listener.get_mut().tls.as_mut() {
                for certificate in &mut tls.get_mut().certificates {
                    for file in [&mut certificate.cert_file, &mut certificate.key_file] {
                        if file.is_relative() {
                            *file = base.join(&*file);
                        }
                    }
                }
            }
        }
        if let Some(file) = self.global.access_log_file.as_mut()
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
        for upstream in self.upstreams.values_mut() {
            if let Some(tls) = upstream.get_mut().tls.as_mut() {
                tls.get_mut().resolve_relative_paths(&base);
            }
            match upstream.get_mut().discovery.get_mut() {
                Discovery::File(file) if file.path.is_relative() => file.path = base.join(&file.path),
                Discovery::Consul(consul) => {
                    if let Some(tls) = consul.tls.as_mut() {
                        tls.resolve_relative_paths(&base);
                    }
                }
                _ => {}
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

#[cfg(test)]
mod tests {
    use super::line_at;

    #[test]
    fn line_at_takes_the_whole_line_even_from_inside_a_character() {
        let text = "a = \"é\"\nb = 1\n";
        let inside = text.find('é').unwrap() + 1;
        assert!(!text.is_char_boundary(inside));
        assert_eq!(line_at(text, inside), "a = \"é\"");
        assert_eq!(line_at(text, text.len() + 10), "");
        assert_eq!(line_at(text, text.find('b').unwrap()), "b = 1");
    }
}
