//! Service discovery for lb: where the endpoints come from and how their
//! changes reach the proxy and the client pool.
//!
//! Every source is consumed the same way, as a [`ChangeStream`]: a
//! `futures` [`Stream`](futures_util::Stream) of [`lb_core::Change`] that
//! starts with one [`Change::Snapshot`](lb_core::Change::Snapshot) and then
//! carries increments in id order, never repeating a state. A stream is the
//! shape tokio code already knows how to select on, combine and drop (which
//! stops the source). Sources themselves implement the small [`Source`]
//! trait, "wait, then give me the whole current list"; [`changes`] turns any
//! of them into the stream, so snapshot-first, diffing, de-duplication and
//! "a failure never empties the set" are written once.
//!
//! Sources: [`StaticSource`] (a list from configuration), [`FileSource`] (a
//! watched TOML or JSON file) and [`DnsSource`] (A/AAAA or SRV, re-resolved
//! at the TTL). `lb-consul` adds a Consul health watch. [`SourceConfig`] is
//! the serde form of the first three for config files.
//!
//! Most consumers want snapshots, not changes: [`watch_snapshots`] folds a
//! stream into [`lb_core::EndpointSet`]s published on a
//! [`tokio::sync::watch`] channel; build a balancer from each.
//!
//! ```
//! use lb_core::{Balancer, BalancerExt, EndpointSet, MonotonicClock, PickContext};
//! use lb_discovery::{StaticSource, changes, watch_snapshots};
//!
//! struct FirstEligible(EndpointSet);
//! impl Balancer for FirstEligible {
//!     fn endpoints(&self) -> &EndpointSet { &self.0 }
//!     fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
//!         (0..self.0.len()).find(|&i| self.0.is_eligible(i, ctx))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let source = StaticSource::parse(["10.0.0.2:80", "10.0.0.1:80"]).unwrap();
//! let mut snapshots = watch_snapshots(changes(source), MonotonicClock::new());
//! snapshots.changed().await.expect("the first snapshot");
//! let balancer = FirstEligible(snapshots.borrow_and_update().clone());
//! let pick = balancer.pick(&PickContext::new()).expect("an endpoint");
//! assert_eq!(pick.endpoint().address().to_string(), "10.0.0.1:80");
//! # });
//! ```

mod config;
mod dns;
mod file;
mod file_format;
#[cfg(test)]
mod fuzz;
mod snapshots;
mod source;
mod static_list;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ConfigEntry, SourceConfig, SourceConfigError};
pub use dns::{DnsConfig, DnsError, DnsQuery, DnsSource};
pub use file::{DEFAULT_DEBOUNCE, FileError, FileSource};
pub use file_format::{FileFormat, ParseError, parse_endpoints};
pub use snapshots::{fold_snapshots, watch_snapshots};
pub use source::{ChangeStream, ListDiffer, Source, SourceReport, SourceStatus, changes, watched};
pub use static_list::StaticSource;

/// `docs/discovery.md`, compiled here so its examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/discovery.md")]
pub struct DiscoveryGuide;
