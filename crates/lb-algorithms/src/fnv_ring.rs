//! The consistent-hash ring of the user's guide: 32-bit FNV-1a points named
//! `"{server}-{i}"`, as its Go `ConsistentHash` builds them.

use alloc::string::ToString;
use alloc::vec::Vec;

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::ring::{Points, capacity, points_for};
use crate::walk::{HashWalk, Keyless};

/// Replicas (points) per unit of weight when none is configured. The guide
/// leaves its `replicas` field to the caller; 160 matches the ketama ring's
/// density, so both rings cost the same and spread about as evenly.
pub const DEFAULT_REPLICAS: u32 = 160;

const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// 32-bit FNV-1a of `bytes`, as Go's `hash/fnv.New32a` computes it: how
/// [`FnvRing`] hashes keys and replica names. Use it to prehash a key for
/// [`FnvRing::select_hash`].
///
/// ```
/// assert_eq!(lb_algorithms::fnv1a32(b""), 0x811c_9dc5);
/// assert_eq!(lb_algorithms::fnv1a32(b"a"), 0xe40c_292c);
/// ```
#[inline]
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    fnv1a32_from(FNV_OFFSET_BASIS, bytes)
}

/// FNV-1a continued from `state` (to hash a shared prefix once).
#[inline]
fn fnv1a32_from(state: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(state, |h, &b| (h ^ u32::from(b)).wrapping_mul(FNV_PRIME))
}

/// FNV-1a continued from `state` over the decimal digits of `n`, as Go's `%d`
/// prints it, without allocating.
fn fnv1a32_decimal(state: u32, mut n: u64) -> u32 {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    fnv1a32_from(state, &digits[start..])
}

/// The consistent-hash ring of the user's guide (its Go `ConsistentHash`):
/// replica `i` of a server is the point `fnv1a32("{server}-{i}")`, a key goes
/// to the first point `>= fnv1a32(key)`, wrapping to the first point.
///
/// `server` is the endpoint's address as text (`10.0.0.1:80`, `[::1]:80`,
/// `name.example:80`), so an endpoint added to the guide's Go ring under that
/// string owns the same keys here. The guide gives every server the same
/// `replicas` points; weights, on which it is silent, are honoured as the
/// ketama ring does: an endpoint of weight `w` gets `replicas * w` points,
/// named `"{server}-0"` to `"{server}-{replicas * w - 1}"` (weight 1 is the
/// guide's ring exactly), scaled down together beyond
/// [`MAX_RING_POINTS`](crate::MAX_RING_POINTS). On a hash collision
/// between servers the endpoint later in set order owns the point, as the Go
/// map does when servers are added in that order.
///
/// A lookup is the guide's binary search in O(1) expected (a slice index
/// over the hash space, then a short scan) and allocates nothing. An
/// ineligible or excluded owner is passed over clockwise to the next
/// eligible endpoint, as [`KetamaRing`](crate::KetamaRing) does (the guide
/// has no health). Without a key a pick is round robin.
///
/// ```
/// use lb_algorithms::{FnvRing, fnv1a32};
/// use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let ring = FnvRing::new(set);
/// let owner = ring.select(&PickContext::new().with_key(b"session-7")).unwrap();
/// assert_eq!(ring.lookup(fnv1a32(b"session-7")), Some(owner));
/// ```
#[derive(Debug)]
pub struct FnvRing {
    set: EndpointSet,
    points: Points,
    keyless: Keyless,
}

impl FnvRing {
    /// A ring with [`DEFAULT_REPLICAS`] points per unit of weight.
    pub fn new(set: EndpointSet) -> Self {
        Self::with_replicas(set, DEFAULT_REPLICAS)
    }

    /// A ring with `replicas` points per unit of weight (at least 1).
    pub fn with_replicas(set: EndpointSet, replicas: u32) -> Self {
        let per = replicas.max(1);
        let total = set.total_weight();
        let mut points: Vec<u64> = Vec::with_capacity(capacity(&set, per));
        // Last endpoint first: of equal hashes the first generated keeps the
        // point, and the guide's map keeps the server added last.
        for (index, member) in set.iter().enumerate().rev() {
            let mut server = member.endpoint().address().to_string();
            server.push('-');
            let prefix = fnv1a32(server.as_bytes());
            for i in 0..points_for(member.endpoint().weight(), per, total) {
                points.push(u64::from(fnv1a32_decimal(prefix, i)) << 32 | index as u64);
            }
        }
        FnvRing { set, points: Points::new(points), keyless: Keyless::default() }
    }

    /// How many points the ring holds (after dropping duplicate hashes).
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// The owner of an FNV-1a key hash, ignoring health: the guide's `Get`.
    #[inline]
    pub fn lookup(&self, hash: u32) -> Option<usize> {
        self.points.lookup(hash)
    }

    /// Selects for a prehashed key ([`fnv1a32`]), skipping ineligible endpoints clockwise.
    #[inline]
    pub fn select_hash(&self, hash: u32, ctx: &PickContext<'_>) -> Option<usize> {
        self.points.select(hash, &self.set, ctx)
    }
}

impl HashWalk for FnvRing {
    /// The guide hashes the key with 32-bit FNV-1a.
    fn key_hash(&self, key: &[u8]) -> u64 {
        u64::from(fnv1a32(key))
    }

    fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        self.points.walk(hash as u32)
    }
}

impl Balancer for FnvRing {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        match ctx.key() {
            Some(key) => self.select_hash(fnv1a32(key), ctx),
            None => self.keyless.select_out_of_line(&self.set, ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, set_of, weighted_set};
    use alloc::string::String;
    use lb_core::{Endpoint, Timestamp};

    /// FNV-1a, 32 bits, written out from its definition (independent of the code under test).
    fn reference_fnv(bytes: &[u8]) -> u32 {
        let mut h: u32 = 2_166_136_261;
        for &b in bytes {
            h ^= b as u32;
            h = h.wrapping_mul(16_777_619);
        }
        h
    }

    /// The guide's Go `ConsistentHash`, line by line: a map from point to
    /// server, sorted keys, `sort.Search`, wrap to 0.
    struct GoRing {
        ring: alloc::collections::BTreeMap<u32, String>,
        sorted_keys: Vec<u32>,
        replicas: u32,
    }

    impl GoRing {
        fn add(&mut self, server: &str) {
            for i in 0..self.replicas {
                let key = reference_fnv(alloc::format!("{server}-{i}").as_bytes());
                self.ring.insert(key, server.into());
                self.sorted_keys.push(key);
            }
            self.sorted_keys.sort_unstable();
        }

        fn get(&self, key: &str) -> &str {
            let h = reference_fnv(key.as_bytes());
            let mut idx = self.sorted_keys.partition_point(|&k| k < h);
            if idx == self.sorted_keys.len() {
                idx = 0;
            }
            &self.ring[&self.sorted_keys[idx]]
        }
    }

    fn address_of(ring: &FnvRing, index: usize) -> String {
        ring.endpoints().get(index).unwrap().endpoint().address().to_string()
    }

    #[test]
    fn fnv1a32_known_vectors() {
        for (input, expected) in [
            (&b""[..], 0x811c_9dc5),
            (b"a", 0xe40c_292c),
            (b"foobar", 0xbf9c_f968),
            (b"10.0.0.1:80-0", reference_fnv(b"10.0.0.1:80-0")),
        ] {
            assert_eq!(fnv1a32(input), expected, "{input:?}");
            assert_eq!(reference_fnv(input), expected, "the reference agrees: {input:?}");
        }
        for n in [0u64, 7, 10, 159, 1_000_000, u64::MAX] {
            let text = alloc::format!("x-{n}");
            assert_eq!(fnv1a32_decimal(fnv1a32(b"x-"), n), reference_fnv(text.as_bytes()), "{n}");
        }
    }

    #[test]
    fn owners_match_the_guides_go_ring() {
        let addresses = [
            "10.0.0.1:8080",
            "10.0.0.2:8080",
            "10.0.0.3:8080",
            "[2001:db8::7]:443",
            "cache-a.internal:11211",
        ];
        for replicas in [1, 3, DEFAULT_REPLICAS] {
            let set = EndpointSet::new(
                addresses.map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
                Timestamp::ZERO,
            );
            let mut go = GoRing { ring: Default::default(), sorted_keys: Vec::new(), replicas };
            for member in set.iter() {
                go.add(&member.endpoint().address().to_string());
            }
            assert_eq!(go.ring.len(), go.sorted_keys.len(), "no collisions, so the comparison is exact");
            let ring = FnvRing::with_replicas(set, replicas);
            assert_eq!(ring.points(), addresses.len() * replicas as usize);
            for k in 0..3_000 {
                let key = alloc::format!("user-{k}");
                let ours = ring.select(&PickContext::new().with_key(key.as_bytes())).unwrap();
                assert_eq!(address_of(&ring, ours), go.get(&key), "{key} with {replicas} replicas");
            }
        }
    }

    #[test]
    fn wraps_past_the_last_point_and_keeps_the_later_server_on_collisions() {
        let ring = FnvRing::with_replicas(set_of(3), 2);
        let first_owner = ring.points.walk(0).next();
        assert_eq!(ring.lookup(u32::MAX), first_owner, "past the last point wraps to the first");
        // A point both endpoints claim (same address, different ids) goes to the later one.
        let twins = EndpointSet::new(
            ["a", "b"]
                .map(|id| Endpoint::new("10.0.0.9:80".parse::<lb_core::Address>().unwrap()).with_id(id)),
            Timestamp::ZERO,
        );
        let ring = FnvRing::with_replicas(twins, 4);
        assert_eq!(ring.points(), 4);
        assert!((0..200u32).all(|k| ring.lookup(reference_fnv(&k.to_le_bytes())) == Some(1)));
    }

    #[test]
    fn weights_multiply_replicas() {
        assert_eq!(FnvRing::with_replicas(weighted_set(&[1, 3]), 10).points(), 40);
        // FNV-1a spreads similar names unevenly, so shares follow weights only roughly.
        let ring = FnvRing::new(weighted_set(&[1, 3]));
        let heavy = (0..20_000)
            .filter(|k| {
                ring.select(&PickContext::new().with_key(alloc::format!("user-{k}").as_bytes())) == Some(1)
            })
            .count();
        assert!((13_000..17_000).contains(&heavy), "{heavy}");
    }

    #[test]
    fn failover_walks_clockwise_and_keyless_is_round_robin() {
        let ring = FnvRing::new(set_of(4));
        let order: Vec<usize> = ring.candidates(b"user-7").collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3]);
        assert_eq!(ring.select(&PickContext::new().with_key(b"user-7")), Some(order[0]));
        eject(ring.endpoints(), order[0]);
        let ctx = PickContext::new().with_key(b"user-7");
        assert_eq!(ring.select(&ctx), Some(order[1]));
        assert_eq!(ring.select(&ctx.excluding(&[order[1]])), Some(order[2]));
        assert_eq!(ring.select(&ctx.ignoring_health()), Some(order[0]), "panic mode ignores the ejection");
        let fresh = FnvRing::new(set_of(3));
        assert_eq!([0; 3].map(|_| fresh.select(&PickContext::new()).unwrap()), [0, 1, 2]);
        let empty = FnvRing::new(EndpointSet::empty());
        assert_eq!(empty.select(&PickContext::new().with_key(b"k")), None);
        assert_eq!(empty.lookup(5), None);
    }
}
