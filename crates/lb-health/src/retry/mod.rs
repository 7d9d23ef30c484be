//! Retries: policy, backoff, budgets, throttling and hedging.

pub(crate) mod backoff;
pub(crate) mod budget;
pub(crate) mod gate;
pub(crate) mod hedging;
pub(crate) mod policy;
pub(crate) mod throttle;
