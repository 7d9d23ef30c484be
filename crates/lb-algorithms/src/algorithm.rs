//! Choosing an algorithm by name or value, and static dispatch over all of them.

use alloc::boxed::Box;
use alloc::string::ToString;
use core::fmt;
use core::str::FromStr;
use core::time::Duration;

use lb_core::{Balancer, Build, EndpointSet, PickContext, Report, Timestamp};

use crate::bounded::DEFAULT_BALANCE_FACTOR;
use crate::fnv_ring::DEFAULT_REPLICAS;
use crate::ketama::DEFAULT_POINTS_PER_WEIGHT;
use crate::maglev::{DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE, check_table_size, is_prime};
use crate::{
    AlgorithmError, BoundedLoad, FnvRing, JumpHash, KetamaRing, LeastConnections, Maglev, PeakEwma,
    PeakEwmaConfig, PowerOfTwoChoices, Rendezvous, RoundRobin, SlowStart, SlowStartConfig,
    SmoothWeightedRoundRobin, StrideScheduler, WeightedRandom,
};

/// Every name [`Algorithm::from_str`] accepts, for error messages.
pub(crate) const KNOWN_NAMES: &str = "round_robin, weighted_round_robin, stride, random, least_conn, p2c, \
     peak_ewma, ring_hash, fnv_ring, maglev, jump, rendezvous, bounded_load[:ring_hash|:maglev], slow_start[:<algorithm>]";

/// The hash structure under [`Algorithm::BoundedLoad`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HashAlgorithm {
    /// A ketama ring ([`KetamaRing`]).
    Ring {
        /// Points per unit of weight (default 160).
        points_per_weight: u32,
    },
    /// A Maglev table ([`Maglev`]).
    Maglev {
        /// Slots in the table, a prime (default 65537).
        table_size: u32,
    },
}

impl Default for HashAlgorithm {
    /// A ring with 160 points per weight, as HAProxy and Envoy bound loads over a ring.
    fn default() -> Self {
        HashAlgorithm::Ring { points_per_weight: DEFAULT_POINTS_PER_WEIGHT }
    }
}

/// A selection algorithm and its parameters: what a config file names.
///
/// Parse one from its name (`"p2c".parse()`); every parameter then takes its
/// default, listed on each variant. [`Build`] turns it into an
/// [`AnyBalancer`] for an [`EndpointSet`]. The default algorithm is
/// [`WeightedRoundRobin`](Algorithm::WeightedRoundRobin), nginx's default.
///
/// ```
/// use lb_algorithms::Algorithm;
/// use lb_core::{Balancer, Build, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let algorithm: Algorithm = "peak_ewma".parse().unwrap();
/// assert_eq!(algorithm.name(), "peak_ewma");
/// let set = EndpointSet::new(
///     ["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let balancer = algorithm.build(set);
/// assert!(balancer.select(&PickContext::new()).is_some());
/// assert_eq!("slow_start:least_conn".parse::<Algorithm>().unwrap().to_string(), "slow_start:least_conn");
/// assert!("fastest".parse::<Algorithm>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Algorithm {
    /// [`RoundRobin`]: `round_robin` (alias `rr`).
    RoundRobin,
    /// [`SmoothWeightedRoundRobin`], nginx's default: `weighted_round_robin` (alias `wrr`).
    #[default]
    WeightedRoundRobin,
    /// [`StrideScheduler`], gRPC's O(1) weighted round robin: `stride`.
    Stride,
    /// [`WeightedRandom`]: `random` (alias `weighted_random`).
    Random,
    /// [`LeastConnections`]: `least_conn` (aliases `least_connections`, `leastconn`).
    LeastConn,
    /// [`PowerOfTwoChoices`]: `p2c` (alias `least_request`).
    P2c {
        /// Envoy's `active_request_bias` (default 1.0).
        active_request_bias: f64,
    },
    /// [`PeakEwma`]: `peak_ewma`.
    PeakEwma {
        /// Decay time constant (default 10 s).
        tau: Duration,
        /// RTT of an endpoint not yet measured (default 30 ms).
        default_rtt: Duration,
    },
    /// [`KetamaRing`], nginx `hash ... consistent`: `ring_hash` (aliases `ketama`, `consistent`).
    Ring {
        /// Points per unit of weight (default 160).
        points_per_weight: u32,
    },
    /// [`FnvRing`], the user's guide's FNV-1a ring: `fnv_ring` (aliases `fnv`, `fnv1a`, `fnv_hash`).
    FnvRing {
        /// Points per unit of weight, the guide's `replicas` (default 160).
        replicas: u32,
    },
    /// [`Maglev`]: `maglev`.
    Maglev {
        /// Slots, a prime (default 65537).
        table_size: u32,
    },
    /// [`JumpHash`]: `jump` (alias `jump_hash`).
    Jump,
    /// [`Rendezvous`]: `rendezvous` (alias `hrw`).
    Rendezvous,
    /// [`BoundedLoad`]: `bounded_load` (over the ring) or `bounded_load:maglev`.
    BoundedLoad {
        /// The hash structure whose walk is bounded (default: the ring).
        over: HashAlgorithm,
        /// The balance factor c > 1 (default 1.25).
        balance_factor: f64,
    },
    /// [`SlowStart`] around another algorithm: `slow_start` (over
    /// `weighted_round_robin`) or `slow_start:<algorithm>`.
    SlowStart {
        /// The algorithm whose picks are ramped.
        inner: Box<Algorithm>,
        /// Ramp duration (default 30 s).
        window: Duration,
        /// Starting share in percent (default 10).
        min_weight_percent: u8,
        /// How fast the ramp rises (Envoy's `aggression`, default 1.0: linear;
        /// above 1 sooner, below 1 later).
        aggression: f64,
    },
}

impl Algorithm {
    /// The plain name, as [`FromStr`] reads it (without the `:inner` part).
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::Stride => "stride",
            Algorithm::Random => "random",
            Algorithm::LeastConn => "least_conn",
            Algorithm::P2c { .. } => "p2c",
            Algorithm::PeakEwma { .. } => "peak_ewma",
            Algorithm::Ring { .. } => "ring_hash",
            Algorithm::FnvRing { .. } => "fnv_ring",
            Algorithm::Maglev { .. } => "maglev",
            Algorithm::Jump => "jump",
            Algorithm::Rendezvous => "rendezvous",
            Algorithm::BoundedLoad { .. } => "bounded_load",
            Algorithm::SlowStart { .. } => "slow_start",
        }
    }

    /// Whether the algorithm maps a request's key to an endpoint (so the
    /// caller should set `PickContext::with_key`).
    pub fn uses_key(&self) -> bool {
        match self {
            Algorithm::Ring { .. }
            | Algorithm::FnvRing { .. }
            | Algorithm::Maglev { .. }
            | Algorithm::Jump
            | Algorithm::Rendezvous
            | Algorithm::BoundedLoad { .. } => true,
            Algorithm::SlowStart { inner, .. } => inner.uses_key(),
            _ => false,
        }
    }

    /// Checks every parameter. [`Build`] never fails: it replaces a bad one
    /// with the nearest valid value, so validate configs when reading them.
    pub fn validate(&self) -> Result<(), AlgorithmError> {
        match self {
            Algorithm::P2c { active_request_bias: b } if !(b.is_finite() && *b >= 0.0) => {
                Err(AlgorithmError::BadBias(*b))
            }
            Algorithm::PeakEwma { tau, default_rtt } if tau.is_zero() || default_rtt.is_zero() => {
                Err(AlgorithmError::ZeroDuration)
            }
            Algorithm::Ring { points_per_weight: 0 }
            | Algorithm::BoundedLoad { over: HashAlgorithm::Ring { points_per_weight: 0 }, .. } => {
                Err(AlgorithmError::NoPoints)
            }
            Algorithm::FnvRing { replicas: 0 } => Err(AlgorithmError::NoReplicas),
            Algorithm::Maglev { table_size: m }
            | Algorithm::BoundedLoad { over: HashAlgorithm::Maglev { table_size: m }, .. }
                if check_table_size(*m).is_err() =>
            {
                check_table_size(*m)
            }
            Algorithm::BoundedLoad { balance_factor: c, .. } if !(*c > 1.0 && *c <= 1_000.0) => {
                Err(AlgorithmError::BadBalanceFactor(*c))
            }
            Algorithm::SlowStart { inner, .. } if matches!(**inner, Algorithm::SlowStart { .. }) => {
                Err(AlgorithmError::NestedSlowStart)
            }
            Algorithm::SlowStart { aggression: a, .. } if !(a.is_finite() && *a > 0.0) => {
                Err(AlgorithmError::BadAggression(*a))
            }
            Algorithm::SlowStart { inner, .. } => inner.validate(),
            _ => Ok(()),
        }
    }

    /// The algorithm called `name`, with default parameters.
    fn named(name: &str) -> Option<Algorithm> {
        Some(match name {
            "round_robin" | "rr" => Algorithm::RoundRobin,
            "weighted_round_robin" | "wrr" | "smooth_weighted_round_robin" => Algorithm::WeightedRoundRobin,
            "stride" => Algorithm::Stride,
            "random" | "weighted_random" => Algorithm::Random,
            "least_conn" | "least_connections" | "leastconn" => Algorithm::LeastConn,
            "p2c" | "least_request" => Algorithm::P2c { active_request_bias: 1.0 },
            "peak_ewma" => {
                let d = PeakEwmaConfig::default();
                Algorithm::PeakEwma { tau: d.tau, default_rtt: d.default_rtt }
            }
            "ring_hash" | "ketama" | "consistent" => {
                Algorithm::Ring { points_per_weight: DEFAULT_POINTS_PER_WEIGHT }
            }
            "fnv_ring" | "fnv" | "fnv1a" | "fnv_hash" => Algorithm::FnvRing { replicas: DEFAULT_REPLICAS },
            "maglev" => Algorithm::Maglev { table_size: DEFAULT_TABLE_SIZE },
            "jump" | "jump_hash" => Algorithm::Jump,
            "rendezvous" | "hrw" => Algorithm::Rendezvous,
            "bounded_load" => Algorithm::BoundedLoad {
                over: HashAlgorithm::default(),
                balance_factor: DEFAULT_BALANCE_FACTOR,
            },
            "slow_start" => Algorithm::slow_start(Algorithm::WeightedRoundRobin),
            _ => return None,
        })
    }

    fn slow_start(inner: Algorithm) -> Algorithm {
        let d = SlowStartConfig::default();
        Algorithm::SlowStart {
            inner: Box::new(inner),
            window: d.window,
            min_weight_percent: d.min_weight_percent,
            aggression: d.aggression,
        }
    }
}

impl FromStr for Algorithm {
    type Err = AlgorithmError;

    /// Reads a name (case and `-`/`_` insensitive) with default parameters;
    /// `bounded_load:maglev` and `slow_start:<name>` choose what they wrap.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let normalized = text.trim().to_ascii_lowercase().replace('-', "_");
        let unknown = || AlgorithmError::UnknownName(text.to_string());
        let (head, inner) = match normalized.split_once(':') {
            Some((head, inner)) => (head, Some(inner)),
            None => (normalized.as_str(), None),
        };
        let algorithm = Algorithm::named(head).ok_or_else(unknown)?;
        let Some(inner) = inner else { return Ok(algorithm) };
        match (algorithm, inner.parse::<Algorithm>()?) {
            (Algorithm::SlowStart { .. }, Algorithm::SlowStart { .. }) => {
                Err(AlgorithmError::NestedSlowStart)
            }
            (Algorithm::SlowStart { .. }, inner) => Ok(Algorithm::slow_start(inner)),
            (Algorithm::BoundedLoad { balance_factor, .. }, Algorithm::Ring { points_per_weight }) => {
                Ok(Algorithm::BoundedLoad { over: HashAlgorithm::Ring { points_per_weight }, balance_factor })
            }
            (Algorithm::BoundedLoad { balance_factor, .. }, Algorithm::Maglev { table_size }) => {
                Ok(Algorithm::BoundedLoad { over: HashAlgorithm::Maglev { table_size }, balance_factor })
            }
            _ => Err(unknown()),
        }
    }
}

impl fmt::Display for Algorithm {
    /// The name `from_str` reads back (parameters other than the wrapped algorithm are not shown).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Algorithm::SlowStart { inner, .. } => write!(f, "slow_start:{inner}"),
            Algorithm::BoundedLoad { over: HashAlgorithm::Maglev { .. }, .. } => {
                f.write_str("bounded_load:maglev")
            }
            other => f.write_str(other.name()),
        }
    }
}

/// The smallest prime >= `n` (and >= 3), at most [`MAX_TABLE_SIZE`] (itself a prime), so an
/// unvalidated size never builds a huge table.
fn prime_at_least(n: u32) -> u32 {
    (n.clamp(3, MAX_TABLE_SIZE)..=MAX_TABLE_SIZE).find(|&p| is_prime(p)).unwrap_or(MAX_TABLE_SIZE)
}

fn factor_or_default(c: f64) -> f64 {
    if c > 1.0 && c <= 1_000.0 { c } else { DEFAULT_BALANCE_FACTOR }
}

impl Build for Algorithm {
    type Output = AnyBalancer;

    /// Builds the balancer. Bad parameters are replaced (see
    /// [`validate`](Algorithm::validate)): a non-prime table size by the next
    /// prime, zero points by 1, a bad factor or bias by its default. Slow
    /// start takes the newest endpoint's `added_at` as the build time.
    fn build(&self, set: EndpointSet) -> AnyBalancer {
        match self {
            Algorithm::RoundRobin => AnyBalancer::RoundRobin(RoundRobin::new(set)),
            Algorithm::WeightedRoundRobin => {
                AnyBalancer::SmoothWeightedRoundRobin(SmoothWeightedRoundRobin::new(set))
            }
            Algorithm::Stride => AnyBalancer::Stride(StrideScheduler::new(set)),
            Algorithm::Random => AnyBalancer::WeightedRandom(WeightedRandom::new(set)),
            Algorithm::LeastConn => AnyBalancer::LeastConnections(LeastConnections::new(set)),
            Algorithm::P2c { active_request_bias: b } => {
                AnyBalancer::PowerOfTwoChoices(PowerOfTwoChoices::with_bias(set, *b))
            }
            Algorithm::PeakEwma { tau, default_rtt } => AnyBalancer::PeakEwma(PeakEwma::with_config(
                set,
                PeakEwmaConfig { tau: *tau, default_rtt: *default_rtt },
            )),
            Algorithm::Ring { points_per_weight } => {
                AnyBalancer::Ring(KetamaRing::with_points(set, *points_per_weight))
            }
            Algorithm::FnvRing { replicas } => AnyBalancer::FnvRing(FnvRing::with_replicas(set, *replicas)),
            Algorithm::Maglev { table_size } => {
                AnyBalancer::Maglev(Maglev::build(set, prime_at_least(*table_size)))
            }
            Algorithm::Jump => AnyBalancer::Jump(JumpHash::new(set)),
            Algorithm::Rendezvous => AnyBalancer::Rendezvous(Rendezvous::new(set)),
            Algorithm::BoundedLoad { over: HashAlgorithm::Ring { points_per_weight }, balance_factor } => {
                let ring = KetamaRing::with_points(set, *points_per_weight);
                AnyBalancer::BoundedRing(BoundedLoad::build(ring, factor_or_default(*balance_factor)))
            }
            Algorithm::BoundedLoad { over: HashAlgorithm::Maglev { table_size }, balance_factor } => {
                let maglev = Maglev::build(set, prime_at_least(*table_size));
                AnyBalancer::BoundedMaglev(BoundedLoad::build(maglev, factor_or_default(*balance_factor)))
            }
            Algorithm::SlowStart { inner, window, min_weight_percent, aggression } => {
                let now = set.iter().map(|m| m.state().added_at()).max().unwrap_or(Timestamp::ZERO);
                let config = SlowStartConfig {
                    window: *window,
                    min_weight_percent: *min_weight_percent,
                    aggression: *aggression,
                };
                let inner = match &**inner {
                    // Nested slow start is refused by validate; build it once.
                    Algorithm::SlowStart { inner, .. } => inner.build(set),
                    other => other.build(set),
                };
                AnyBalancer::SlowStart(Box::new(SlowStart::new(inner, config, now)))
            }
        }
    }
}

/// Any algorithm of this crate behind one type, dispatched statically
/// (a `match`, no vtable): what [`Algorithm::build`](Build::build) returns.
#[derive(Debug)]
pub enum AnyBalancer {
    /// [`RoundRobin`].
    RoundRobin(RoundRobin),
    /// [`SmoothWeightedRoundRobin`].
    SmoothWeightedRoundRobin(SmoothWeightedRoundRobin),
    /// [`StrideScheduler`].
    Stride(StrideScheduler),
    /// [`WeightedRandom`].
    WeightedRandom(WeightedRandom),
    /// [`LeastConnections`].
    LeastConnections(LeastConnections),
    /// [`PowerOfTwoChoices`].
    PowerOfTwoChoices(PowerOfTwoChoices),
    /// [`PeakEwma`].
    PeakEwma(PeakEwma),
    /// [`KetamaRing`].
    Ring(KetamaRing),
    /// [`FnvRing`].
    FnvRing(FnvRing),
    /// [`Maglev`].
    Maglev(Maglev),
    /// [`JumpHash`].
    Jump(JumpHash),
    /// [`Rendezvous`].
    Rendezvous(Rendezvous),
    /// [`BoundedLoad`] over a [`KetamaRing`].
    BoundedRing(BoundedLoad<KetamaRing>),
    /// [`BoundedLoad`] over [`Maglev`].
    BoundedMaglev(BoundedLoad<Maglev>),
    /// [`SlowStart`] around another algorithm.
    SlowStart(Box<SlowStart<AnyBalancer>>),
}

macro_rules! dispatch {
    ($self:expr, $b:ident => $body:expr) => {
        match $self {
            AnyBalancer::RoundRobin($b) => $body,
            AnyBalancer::SmoothWeightedRoundRobin($b) => $body,
            AnyBalancer::Stride($b) => $body,
            AnyBalancer::WeightedRandom($b) => $body,
            AnyBalancer::LeastConnections($b) => $body,
            AnyBalancer::PowerOfTwoChoices($b) => $body,
            AnyBalancer::PeakEwma($b) => $body,
            AnyBalancer::Ring($b) => $body,
            AnyBalancer::FnvRing($b) => $body,
            AnyBalancer::Maglev($b) => $body,
            AnyBalancer::Jump($b) => $body,
            AnyBalancer::Rendezvous($b) => $body,
            AnyBalancer::BoundedRing($b) => $body,
            AnyBalancer::BoundedMaglev($b) => $body,
            AnyBalancer::SlowStart($b) => $body,
        }
    };
}

impl AnyBalancer {
    /// Makes every random draw of the balancer (P2C's and peak-EWMA's
    /// candidates, weighted random, slow start's ramp) a fixed sequence of
    /// `seed`, the same on every run: for simulations (`lb-sim`) and tests.
    /// Deterministic algorithms ignore it. Concurrent pickers may then draw
    /// the same number; leave production balancers unseeded.
    pub fn seed_rng(&self, seed: u64) {
        match self {
            AnyBalancer::PowerOfTwoChoices(b) => b.seed_rng(seed),
            AnyBalancer::PeakEwma(b) => b.seed_rng(seed),
            AnyBalancer::WeightedRandom(b) => b.seed_rng(seed),
            AnyBalancer::SlowStart(b) => {
                b.seed_rng(seed);
                b.inner().seed_rng(seed ^ 0x5EED);
            }
            _ => {}
        }
    }
}

impl Balancer for AnyBalancer {
    fn endpoints(&self) -> &EndpointSet {
        dispatch!(self, b => b.endpoints())
    }

    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        dispatch!(self, b => b.select(ctx))
    }

    fn observe(&self, index: usize, report: &Report) {
        dispatch!(self, b => b.observe(index, report))
    }

    /// Slow start recomputes its ramps, peak-EWMA decays idle estimates;
    /// the others have nothing to do.
    fn tick(&self, now: Timestamp) {
        dispatch!(self, b => b.tick(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::set_of;

    #[test]
    fn a_chosen_balance_factor_is_used_and_a_bad_one_replaced_by_1_25() {
        use lb_core::BalancerExt;
        let owner_load = |balance_factor: f64| {
            let algorithm = Algorithm::BoundedLoad { over: HashAlgorithm::default(), balance_factor };
            let balancer = algorithm.build(set_of(4));
            let held: alloc::vec::Vec<_> =
                (0..100).map(|_| balancer.pick(&PickContext::new().with_key(b"hot")).unwrap()).collect();
            let max = balancer.endpoints().iter().map(|m| m.state().in_flight()).max().unwrap();
            drop(held);
            max
        };
        // ceil(c * 100 / 4): 50 for c = 2, 32 for the default 1.25.
        assert!((48..=50).contains(&owner_load(2.0)), "{}", owner_load(2.0));
        for bad in [1.0, 0.5, f64::NAN, 5_000.0] {
            assert!((30..=32).contains(&owner_load(bad)), "{bad}: {}", owner_load(bad));
        }
    }

    #[test]
    fn bounded_load_by_name_uses_the_common_factor_of_1_25() {
        use lb_core::BalancerExt;
        let balancer = "bounded_load".parse::<Algorithm>().unwrap().build(set_of(4));
        let held: alloc::vec::Vec<_> =
            (0..100).map(|_| balancer.pick(&PickContext::new().with_key(b"hot")).unwrap()).collect();
        let max = balancer.endpoints().iter().map(|m| m.state().in_flight()).max().unwrap();
        // ceil(1.25 * 100 / 4) = 32 at most; a factor near 1 would hold it to 26.
        assert!((30..=32).contains(&max), "the hot key's owner holds {max}");
        drop(held);
    }

    fn slow_start(inner: Algorithm, aggression: f64) -> Algorithm {
        Algorithm::SlowStart {
            inner: Box::new(inner),
            window: Duration::from_secs(30),
            min_weight_percent: 10,
            aggression,
        }
    }

    #[test]
    fn bad_parameters_are_reported_and_replaced_on_build() {
        let bad = [
            (Algorithm::Maglev { table_size: 65_536 }, AlgorithmError::TableSizeNotPrime(65_536)),
            (
                Algorithm::Maglev { table_size: 4_294_967_291 },
                AlgorithmError::TableSizeTooLarge(4_294_967_291),
            ),
            (Algorithm::Ring { points_per_weight: 0 }, AlgorithmError::NoPoints),
            (Algorithm::FnvRing { replicas: 0 }, AlgorithmError::NoReplicas),
            (Algorithm::P2c { active_request_bias: -1.0 }, AlgorithmError::BadBias(-1.0)),
            (
                Algorithm::PeakEwma { tau: Duration::ZERO, default_rtt: Duration::from_millis(1) },
                AlgorithmError::ZeroDuration,
            ),
            (
                Algorithm::BoundedLoad { over: HashAlgorithm::default(), balance_factor: 0.5 },
                AlgorithmError::BadBalanceFactor(0.5),
            ),
            (
                // A good table does not vouch for the factor.
                Algorithm::BoundedLoad {
                    over: HashAlgorithm::Maglev { table_size: 65_537 },
                    balance_factor: 0.5,
                },
                AlgorithmError::BadBalanceFactor(0.5),
            ),
            (slow_start(Algorithm::RoundRobin, 0.0), AlgorithmError::BadAggression(0.0)),
            (slow_start(Algorithm::RoundRobin, f64::INFINITY), AlgorithmError::BadAggression(f64::INFINITY)),
            (
                slow_start(Algorithm::Maglev { table_size: 65_536 }, 1.0),
                AlgorithmError::TableSizeNotPrime(65_536),
            ),
            (slow_start(slow_start(Algorithm::RoundRobin, 1.0), 1.0), AlgorithmError::NestedSlowStart),
        ];
        let bounded =
            |balance_factor| Algorithm::BoundedLoad { over: HashAlgorithm::default(), balance_factor };
        assert_eq!(
            bounded(1.0).validate(),
            Err(AlgorithmError::BadBalanceFactor(1.0)),
            "a cap of exactly the mean"
        );
        assert_eq!(bounded(1_000.0).validate(), Ok(()), "the largest factor");
        assert_eq!(bounded(1_000.5).validate(), Err(AlgorithmError::BadBalanceFactor(1_000.5)));
        for (algorithm, error) in bad {
            assert_eq!(algorithm.validate(), Err(error));
            let b = algorithm.build(set_of(3));
            assert!(b.select(&PickContext::new().with_key(b"k")).is_some(), "{algorithm}");
        }
        match (Algorithm::Maglev { table_size: 65_536 }).build(set_of(2)) {
            AnyBalancer::Maglev(m) => assert_eq!(m.table().len(), 65_537, "the next prime"),
            other => panic!("built {other:?}"),
        }
        match (Algorithm::Maglev { table_size: u32::MAX }).build(set_of(2)) {
            AnyBalancer::Maglev(m) => {
                assert_eq!(m.table().len(), MAX_TABLE_SIZE as usize, "the largest table")
            }
            other => panic!("built {other:?}"),
        }
    }

    #[test]
    fn seeded_balancers_repeat_their_picks_and_another_seed_changes_them() {
        for name in ["p2c", "peak_ewma", "random", "slow_start:p2c", "round_robin"] {
            let picks = |seed| {
                let b = name.parse::<Algorithm>().unwrap().build(set_of(8));
                b.seed_rng(seed);
                (0..64).map(|_| b.select(&PickContext::new()).unwrap()).collect::<alloc::vec::Vec<_>>()
            };
            assert_eq!(picks(42), picks(42), "{name}");
            // Round robin draws nothing; the others must take the seed.
            assert_eq!(picks(42) == picks(43), name == "round_robin", "{name}");
        }
    }

    #[test]
    fn observe_reaches_the_algorithm_inside() {
        let report = Report {
            outcome: lb_core::Outcome::Success,
            latency: Duration::from_millis(3),
            at: Timestamp::ZERO,
        };
        for name in ["peak_ewma", "slow_start:peak_ewma"] {
            let b = name.parse::<Algorithm>().unwrap().build(set_of(2));
            b.observe(1, &report);
            let estimate = b.endpoints().get(1).unwrap().state().latency_estimate().0;
            assert_eq!(estimate, 3_000_000, "{name}");
        }
    }

    #[test]
    fn tick_reaches_slow_start_and_peak_ewma() {
        let slow = "slow_start:peak_ewma".parse::<Algorithm>().unwrap().build(set_of(2));
        let state = slow.endpoints().get(0).unwrap().state();
        state.set_latency_estimate(1_000_000_000, Timestamp::ZERO);
        // Ten time constants (tau = 10 s) through the slow-start wrapper.
        slow.tick(Timestamp::from_nanos(100_000_000_000));
        assert!(state.latency_estimate().0 < 1_000_000, "the wrapped peak-EWMA decayed");
        assert!(slow.select(&PickContext::new()).is_some());
        let uses_key = |name: &str| name.parse::<Algorithm>().unwrap().uses_key();
        assert!(!Algorithm::default().uses_key() && uses_key("bounded_load"));
        assert!(uses_key("slow_start:maglev") && !uses_key("slow_start:p2c"), "slow start asks its inner");
    }
}
