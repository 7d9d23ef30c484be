//! Consul discovery through `lb-consul`'s blocking-query health watch.

use lb_consul::{ConsulClient, ConsulConfig, HealthWatch};
use lb_discovery::{ChangeStream, SourceStatus, watched};

use crate::config::ConsulDiscovery;

/// The change stream of a Consul service and its status, or why it cannot be set up.
pub(crate) fn stream(consul: &ConsulDiscovery) -> Result<(ChangeStream, SourceStatus), String> {
    let config = match &consul.address {
        Some(address) => ConsulConfig::new(address),
        None => ConsulConfig::from_env(),
    }
    .map_err(|e| e.to_string())?;
    let config = match std::env::var(lb_consul::TOKEN_ENV) {
        Ok(token) if consul.address.is_some() && !token.is_empty() => config.with_token(token),
        _ => config,
    };
    // The config's tls table, else Consul's own variables (already read when the address came from them).
    let config = match (&consul.tls, &consul.address) {
        (Some(tls), _) => config.with_tls(tls.to_client_tls()),
        (None, Some(_)) => config.with_tls(ConsulConfig::tls_from_env()),
        (None, None) => config,
    };
    let client = ConsulClient::new(config).map_err(|e| e.to_string())?;
    let mut watch = HealthWatch::new(client, consul.service.clone());
    if let Some(dc) = &consul.datacenter {
        watch = watch.datacenter(dc.clone());
    }
    if let Some(tag) = &consul.tag {
        watch = watch.tag(tag.clone());
    }
    Ok(watched(watch))
}

/// Checks the address without starting anything, for `lb-proxy check`.
pub(crate) fn check_address(address: &str) -> Result<(), String> {
    ConsulConfig::new(address).map(|_| ()).map_err(|e| e.to_string())
}
