//! How long to wait before a retry.

use core::time::Duration;

use crate::rng::Rng;

/// How an exponential delay is randomised (AWS Architecture blog,
/// "Exponential Backoff And Jitter", 2015).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// Exactly `min(cap, base * 2^(n-1))`.
    None,
    /// `U(0, t)`: the least total work, the widest spread.
    Full,
    /// `t/2 + U(0, t/2)`: never shorter than half.
    Equal,
}

/// A backoff schedule. `retry` counts retries from 1 (the delay before the
/// second attempt).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// Retry at once.
    Immediate,
    /// Always the same delay.
    Constant(Duration),
    /// `min(cap, base * 2^(n-1))` with jitter.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The largest delay.
        cap: Duration,
        /// How to randomise it.
        jitter: Jitter,
    },
    /// AWS decorrelated jitter: `min(cap, U(base, previous * 3))`.
    Decorrelated {
        /// The smallest delay, and the first.
        base: Duration,
        /// The largest delay.
        cap: Duration,
    },
    /// gRPC (gRFC A6): `min(initial * multiplier^(n-1), max) * U(0.8, 1.2)`.
    Grpc {
        /// `initialBackoff`.
        initial: Duration,
        /// `backoffMultiplier`.
        multiplier: f64,
        /// `maxBackoff`.
        max: Duration,
    },
}

impl Default for Backoff {
    /// Envoy's retry backoff: 25 ms base, 250 ms cap, full jitter.
    fn default() -> Self {
        Backoff::Exponential {
            base: Duration::from_millis(25),
            cap: Duration::from_millis(250),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (1 = the first retry), given
    /// the delay used before the previous one (for decorrelated jitter).
    pub fn delay(&self, retry: u32, previous: Duration, rng: &mut impl Rng) -> Duration {
        let exponent = retry.saturating_sub(1);
        match *self {
            Backoff::Immediate => Duration::ZERO,
            Backoff::Constant(d) => d,
            Backoff::Exponential { base, cap, jitter } => {
                let t = scaled(base, libm::pow(2.0, f64::from(exponent))).min(cap);
                match jitter {
                    Jitter::None => t,
                    Jitter::Full => t.mul_f64(rng.unit()),
                    Jitter::Equal => t / 2 + (t / 2).mul_f64(rng.unit()),
                }
            }
            Backoff::Decorrelated { base, cap } => {
                let high = previous.max(base).saturating_mul(3);
                secs(rng.between(base.as_secs_f64(), high.as_secs_f64())).min(cap)
            }
            Backoff::Grpc { initial, multiplier, max } => {
                let t = scaled(initial, libm::pow(multiplier.max(1.0), f64::from(exponent))).min(max);
                t.mul_f64(rng.between(0.8, 1.2))
            }
        }
    }
}

fn scaled(d: Duration, factor: f64) -> Duration {
    secs(d.as_secs_f64() * factor)
}

/// Seconds to a duration, saturating instead of panicking on huge values.
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let b = Backoff::Exponential { base: 10 * MS, cap: 70 * MS, jitter: Jitter::None };
        let mut rng = SplitMix64::new(1);
        let delays: std::vec::Vec<_> = (1..=5).map(|n| b.delay(n, Duration::ZERO, &mut rng)).collect();
        assert_eq!(delays, [10 * MS, 20 * MS, 40 * MS, 70 * MS, 70 * MS]);
        assert_eq!(b.delay(u32::MAX, Duration::ZERO, &mut rng), 70 * MS, "huge exponents saturate");
    }

    #[test]
    fn jitters_stay_in_their_ranges() {
        let mut rng = SplitMix64::new(9);
        let full = Backoff::Exponential { base: 100 * MS, cap: Duration::from_secs(1), jitter: Jitter::Full };
        let equal =
            Backoff::Exponential { base: 100 * MS, cap: Duration::from_secs(1), jitter: Jitter::Equal };
        let grpc = Backoff::Grpc { initial: 100 * MS, multiplier: 2.0, max: 300 * MS };
        let deco = Backoff::Decorrelated { base: 10 * MS, cap: 500 * MS };
        let mut previous = Duration::ZERO;
        for n in 1..200 {
            let t = (100 * MS * 2u32.pow((n - 1).min(10))).min(Duration::from_secs(1));
            assert!(full.delay(n, previous, &mut rng) <= t);
            let e = equal.delay(n, previous, &mut rng);
            assert!(e >= t / 2 && e <= t);
            let g = grpc.delay(n, previous, &mut rng);
            let g_base = (100 * MS * 2u32.pow((n - 1).min(10))).min(300 * MS);
            assert!(g >= g_base.mul_f64(0.8) && g <= g_base.mul_f64(1.2), "{g:?} vs {g_base:?}");
            let d = deco.delay(n, previous, &mut rng);
            assert!(d >= 10 * MS && d <= (previous.max(10 * MS) * 3).min(500 * MS));
            previous = d;
        }
        assert_eq!(Backoff::Immediate.delay(3, previous, &mut rng), Duration::ZERO);
        assert_eq!(Backoff::Constant(MS).delay(3, previous, &mut rng), MS);
    }
}
