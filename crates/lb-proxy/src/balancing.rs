//! From the configuration's algorithm name and parameters to an
//! `lb-algorithms` [`Algorithm`].

use std::time::Duration;

use lb_algorithms::HashAlgorithm;
pub(crate) use lb_algorithms::{Algorithm, AnyBalancer};

use crate::config::AlgorithmParams;

/// A parsed, validated algorithm.
#[derive(Debug, Clone)]
pub(crate) struct AlgorithmChoice {
    pub(crate) algorithm: Algorithm,
    /// Whether it needs a hash key.
    pub(crate) hashed: bool,
}

/// Reads an algorithm name, applies `params` and the slow-start window, and validates.
pub(crate) fn parse_algorithm(
    name: &str,
    params: &AlgorithmParams,
    slow_start: Option<Duration>,
) -> Result<AlgorithmChoice, String> {
    let mut algorithm: Algorithm = name.parse().map_err(|e: lb_algorithms::AlgorithmError| e.to_string())?;
    apply(&mut algorithm, params);
    if let Some(window) = slow_start {
        algorithm = match algorithm {
            Algorithm::SlowStart { inner, min_weight_percent, aggression, .. } => {
                Algorithm::SlowStart { inner, window, min_weight_percent, aggression }
            }
            inner => {
                let defaults = lb_algorithms::SlowStartConfig::default();
                let mut ramped = Algorithm::SlowStart {
                    inner: Box::new(inner),
                    window,
                    min_weight_percent: defaults.min_weight_percent,
                    aggression: defaults.aggression,
                };
                apply(&mut ramped, params);
                ramped
            }
        };
    }
    algorithm.validate().map_err(|e| e.to_string())?;
    Ok(AlgorithmChoice { hashed: algorithm.uses_key(), algorithm })
}

fn apply(algorithm: &mut Algorithm, p: &AlgorithmParams) {
    match algorithm {
        Algorithm::P2c { active_request_bias } => {
            *active_request_bias = p.active_request_bias.unwrap_or(*active_request_bias);
        }
        Algorithm::PeakEwma { tau, default_rtt } => {
            *tau = p.tau.unwrap_or(*tau);
            *default_rtt = p.default_rtt.unwrap_or(*default_rtt);
        }
        Algorithm::Ring { points_per_weight } => {
            *points_per_weight = p.points_per_weight.unwrap_or(*points_per_weight);
        }
        Algorithm::Maglev { table_size } => *table_size = p.table_size.unwrap_or(*table_size),
        Algorithm::FnvRing { replicas } => *replicas = p.replicas.unwrap_or(*replicas),
        Algorithm::BoundedLoad { over, balance_factor } => {
            *balance_factor = p.balance_factor.unwrap_or(*balance_factor);
            match over {
                HashAlgorithm::Ring { points_per_weight } => {
                    *points_per_weight = p.points_per_weight.unwrap_or(*points_per_weight);
                }
                HashAlgorithm::Maglev { table_size } => *table_size = p.table_size.unwrap_or(*table_size),
            }
        }
        Algorithm::SlowStart { inner, min_weight_percent, aggression, .. } => {
            *min_weight_percent = p.slow_start_min_weight_percent.unwrap_or(*min_weight_percent);
            *aggression = p.slow_start_aggression.unwrap_or(*aggression);
            apply(inner, p);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_params_and_slow_start_combine() {
        let none = AlgorithmParams::default();
        let rr = parse_algorithm("round_robin", &none, None).unwrap();
        assert!(!rr.hashed);
        let maglev = parse_algorithm("maglev", &none, None).unwrap();
        assert!(maglev.hashed);
        let bad = AlgorithmParams { table_size: Some(100), ..AlgorithmParams::default() };
        assert!(parse_algorithm("maglev", &bad, None).unwrap_err().contains("not a prime"));
        let slow = parse_algorithm("least_conn", &none, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(slow.algorithm.to_string(), "slow_start:least_conn");
        assert!(parse_algorithm("fastest", &none, None).unwrap_err().contains("unknown balancing algorithm"));
    }

    #[test]
    fn a_slow_start_window_takes_the_ramp_parameters() {
        let params = AlgorithmParams {
            slow_start_min_weight_percent: Some(25),
            slow_start_aggression: Some(2.0),
            ..AlgorithmParams::default()
        };
        let slow = parse_algorithm("least_conn", &params, Some(Duration::from_secs(5))).unwrap();
        let Algorithm::SlowStart { window, min_weight_percent, aggression, .. } = slow.algorithm else {
            panic!("not wrapped: {:?}", slow.algorithm)
        };
        assert_eq!((window, min_weight_percent, aggression), (Duration::from_secs(5), 25, 2.0));
        let named = parse_algorithm("slow_start:p2c", &params, None).unwrap();
        assert!(matches!(named.algorithm, Algorithm::SlowStart { aggression, .. } if aggression == 2.0));
        let flat = AlgorithmParams { slow_start_aggression: Some(0.0), ..AlgorithmParams::default() };
        let refused = parse_algorithm("least_conn", &flat, Some(Duration::from_secs(5))).unwrap_err();
        assert!(refused.contains("aggression 0 must be a positive number"), "{refused}");
    }
}
