//! Why an algorithm name or parameter was refused.

use alloc::string::String;

/// A bad algorithm name or parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlgorithmError {
    /// The name is not one [`Algorithm`](crate::Algorithm) knows.
    #[error("unknown balancing algorithm `{0}`; known: {known}", known = crate::algorithm::KNOWN_NAMES)]
    UnknownName(String),
    /// A Maglev table size must be a prime of at least 3.
    #[error("Maglev table size {0} is not a prime of at least 3 (65537 is the usual choice)")]
    TableSizeNotPrime(u32),
    /// A Maglev table size must be at most [`MAX_TABLE_SIZE`](crate::MAX_TABLE_SIZE).
    #[error("Maglev table size {0} is too large: at most 5000011 (Envoy's limit)")]
    TableSizeTooLarge(u32),
    /// A bounded-load balance factor must be greater than 1.
    #[error("balance factor {0} must be greater than 1 and at most 1000 (1.25 is common)")]
    BadBalanceFactor(f64),
    /// A slow-start aggression must be a positive number.
    #[error("slow-start aggression {0} must be a positive number (1.0 is a linear ramp)")]
    BadAggression(f64),
    /// The ring needs at least one point per unit of weight.
    #[error("points per weight must be at least 1")]
    NoPoints,
    /// The FNV ring needs at least one replica per unit of weight.
    #[error("replicas must be at least 1")]
    NoReplicas,
    /// The P2C active-request bias must be a finite number >= 0.
    #[error("active request bias {0} must be a finite number >= 0")]
    BadBias(f64),
    /// Peak-EWMA's tau and default RTT must be positive.
    #[error("peak-EWMA tau and default RTT must be greater than zero")]
    ZeroDuration,
    /// Slow start cannot wrap itself.
    #[error("slow start cannot wrap slow start")]
    NestedSlowStart,
}
