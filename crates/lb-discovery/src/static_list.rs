//! A fixed list of endpoints from configuration.

use std::convert::Infallible;

use lb_core::{Address, AddressError, Endpoint};

use crate::source::Source;

/// A fixed list of endpoints, such as the `upstream` block of a config file.
///
/// Emits one [`Change::Snapshot`](lb_core::Change::Snapshot) and ends: the
/// list never changes, and consumers keep it.
#[derive(Debug, Clone)]
pub struct StaticSource {
    endpoints: Option<Vec<Endpoint>>,
}

impl StaticSource {
    /// A source of exactly these endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        StaticSource { endpoints: Some(endpoints.into_iter().collect()) }
    }

    /// A source of weight-1 endpoints read from `host:port` strings.
    ///
    /// # Errors
    /// The first address that does not parse, saying why.
    pub fn parse<'a>(addresses: impl IntoIterator<Item = &'a str>) -> Result<Self, AddressError> {
        let endpoints = addresses
            .into_iter()
            .map(|text| text.parse::<Address>().map(Endpoint::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StaticSource::new(endpoints))
    }
}

impl Source for StaticSource {
    type Error = Infallible;

    fn describe(&self) -> String {
        "static list".to_string()
    }

    async fn next_list(&mut self) -> Option<Result<Vec<Endpoint>, Infallible>> {
        self.endpoints.take().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::changes;
    use futures_util::StreamExt;
    use lb_core::Change;

    #[tokio::test]
    async fn emits_one_sorted_snapshot_then_ends() {
        let source = StaticSource::parse(["10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80"]).unwrap();
        let all: Vec<Change> = changes(source).collect().await;
        let expected = StaticSource::parse(["10.0.0.1:80", "10.0.0.2:80"]).unwrap().endpoints.unwrap();
        assert_eq!(all, [Change::Snapshot(expected)]);
    }

    #[test]
    fn a_bad_address_says_which() {
        let err = StaticSource::parse(["10.0.0.1:80", "web"]).unwrap_err();
        assert_eq!(err.to_string(), "`web` has no port: write host:port");
    }
}
