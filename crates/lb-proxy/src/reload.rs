//! Reloading a running proxy with a new configuration (`SIGHUP` in `lb-proxy run`).
//!
//! A reload builds the next generation off the request path and swaps it in
//! atomically. Requests in flight finish on the generation they started on.
//! Upstreams whose section did not change are carried over whole, and a
//! changed one keeps its endpoints when its discovery source is the same.
//! Anything a reload cannot apply refuses the whole reload; the running
//! configuration stays, so a bad edit never costs traffic.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::access_log::AccessSink;
use crate::background::{self, UpstreamTasks};
use crate::config::Config;
use crate::runtime::{Previous, Runtime};
use crate::server::{RunningProxy, StartError};
use crate::upstream::UpstreamConnectors;

/// Why a reload was refused. The running configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration changes settings that only a restart applies.
    #[error("these settings only change with a restart: {}", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
    /// A new or changed upstream's background tasks could not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

impl RunningProxy {
    /// Applies `config` (already loaded and validated) to the running proxy.
    ///
    /// Routes, upstreams and the request-level global settings
    /// (`max_body_bytes`, `replay_buffer_bytes`, `access_log`) change live.
    /// Listeners, the admin listener, tracing and the connection-level global
    /// settings need a restart; changing them refuses the reload.
    pub async fn reload(&mut self, config: Config) -> Result<(), ReloadError> {
        let needs_restart = restart_only_changes(&self.config, &config);
        if !needs_restart.is_empty() {
            return Err(ReloadError::NeedsRestart(needs_restart));
        }
        // Certificate files are read again (renewed ones); any that cannot be used fails the reload.
        let mut renewed = Vec::with_capacity(self.certificates.len());
        for (index, served) in &self.certificates {
            let listener = config.listeners[*index].get_ref();
            let Some(tls) = &listener.tls else { continue };
            let prepared = served
                .prepare(&tls.get_ref().to_server_tls())
                .map_err(|source| StartError::Tls { address: *listener.listen.get_ref(), source })?;
            renewed.push(prepared);
        }
        // So are the endpoints' TLS files: new connections use them, open ones keep theirs.
        let connectors = UpstreamConnectors::read(&config)?;
        let running = self.runtime.load_full();
        let global = &config.global;
        let access_log =
            if running.access_log.opened_from == (global.access_log, global.access_log_file.clone()) {
                Arc::clone(&running.access_log)
            } else {
                let path = global.access_log_file.clone().unwrap_or_default();
                let opened = AccessSink::open(global.access_log, global.access_log_file.as_ref());
                Arc::new(opened.map_err(|source| StartError::AccessLog { path, source })?)
            };
        let previous = Previous { config: &self.config, runtime: &running };
        let next = Arc::new(Runtime::build(
            &config,
            Arc::clone(&running.clock),
            self.tracing.clone(),
            access_log,
            &connectors,
            Some(previous),
        ));
        let carried_over = |name: &str| matches!((running.upstream(name), next.upstream(name)), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
        // Start the new upstreams' tasks first: if one cannot start, nothing has changed.
        let mut started: BTreeMap<String, UpstreamTasks> = BTreeMap::new();
        for (name, cfg) in &config.upstreams {
            let Some(upstream) = next.upstream(name) else { continue };
            if carried_over(name) {
                continue;
            }
            match background::spawn_upstream(name, cfg.get_ref(), upstream, &next.clock) {
                Ok(tasks) => {
                    started.insert(name.clone(), tasks);
                }
                Err(error) => {
                    for (_, tasks) in started {
                        tasks.stop().await;
                    }
                    return Err(error.into());
                }
            }
        }
        self.runtime.store(Arc::clone(&next));
        for prepared in renewed {
            prepared.apply();
        }
        for upstream in next.upstreams.iter().filter(|u| carried_over(&u.name)) {
            if let (Some(tls), Some(connector)) = (&upstream.settings.tls, connectors.get(&upstream.name)) {
                tls.renew(connector);
            }
        }
        for (name, tasks) in std::mem::take(&mut self.upstream_tasks) {
            if carried_over(&name) {
                started.insert(name, tasks);
            } else {
                tasks.stop().await;
            }
        }
        self.upstream_tasks = started;
        self.config = config;
        Ok(())
    }
}

/// The settings that differ between `running` and `next` and that only a restart applies.
fn restart_only_changes(running: &Config, next: &Config) -> Vec<&'static str> {
    let (a, b) = (&running.global, &next.global);
    [
        ("listeners", running.listeners != next.listeners),
        ("admin", running.admin != next.admin),
        ("tracing", running.tracing != next.tracing),
        ("global.worker_threads", a.worker_threads != b.worker_threads),
        ("global.max_header_bytes", a.max_header_bytes != b.max_header_bytes),
        ("global.max_headers", a.max_headers != b.max_headers),
        ("global.client_idle_timeout", a.client_idle_timeout != b.client_idle_timeout),
        ("global.client_header_timeout", a.client_header_timeout != b.client_header_timeout),
        ("global.client_body_timeout", a.client_body_timeout != b.client_body_timeout),
        ("global.send_timeout", a.send_timeout != b.send_timeout),
        ("global.tunnel_idle_timeout", a.tunnel_idle_timeout != b.tunnel_idle_timeout),
        ("global.http2", a.http2 != b.http2),
        ("global.drain_timeout", a.drain_timeout != b.drain_timeout),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}
