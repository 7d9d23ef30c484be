//! Durations written as text (`"250ms"`, `"2s"`, `"1m 30s"`), read with humantime.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Reads a duration such as `"1s"` or `"250ms"`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. \"250ms\", \"2s\" or \"1m\""))
}

/// Durations that must be longer than zero (timeouts that cannot be off).
pub(crate) mod positive {
    use super::*;

    /// Reads a duration and refuses zero.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        match parse(&text) {
            Ok(d) if d.is_zero() => Err(serde::de::Error::custom("must be longer than zero")),
            Ok(d) => Ok(d),
            Err(e) => Err(serde::de::Error::custom(e)),
        }
    }
}

/// The same for optional durations.
pub(crate) mod option {
    use super::*;

    /// Reads an optional duration.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map(Some).map_err(serde::de::Error::custom)
    }
}

/// The same for durations that later checks point at.
pub(crate) mod spanned {
    use toml::Spanned;

    use super::*;

    /// Reads a duration and keeps where it was written.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Spanned<Duration>, D::Error> {
        let text = Spanned::<String>::deserialize(deserializer)?;
        let span = text.span();
        parse(text.get_ref()).map(|d| Spanned::new(span, d)).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_human_durations() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse("soon").unwrap_err().contains("`soon` is not a duration"));
    }
}
