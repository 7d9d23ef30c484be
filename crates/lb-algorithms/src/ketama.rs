//! The ketama consistent-hash ring, point-for-point compatible with nginx
//! `hash $key consistent`.

use alloc::string::ToString;
use alloc::vec::Vec;

use lb_core::{Address, Balancer, EndpointSet, PickContext};

use crate::ring::{Points, capacity, points_for};
use crate::walk::{HashWalk, Keyless};

/// nginx's (and libketama's) points per unit of weight.
pub const DEFAULT_POINTS_PER_WEIGHT: u32 = 160;

/// A ketama ring compatible with nginx `hash $key consistent`
/// (`ngx_http_upstream_hash_module.c`) and Cache::Memcached::Fast.
///
/// Each endpoint of weight `w` gets `160 * w` points. Its server string
/// (the address as nginx prints it, `host:port`) is split at the last `:`
/// into host and port, and point `j` is `crc32(host "\0" port prev)` where
/// `prev` is point `j-1` as 4 little-endian bytes (0 for the first). Points
/// are sorted and duplicate hashes dropped. A key maps to the first point
/// whose hash is `>= crc32(key)`, wrapping to the first point. So for IPv4
/// endpoints the ring is nginx's: the same key goes to the same server.
///
/// Lookup is a binary search over the sorted points (`log2(160 n)` steps).
/// An ineligible or excluded owner is passed over clockwise to the next
/// eligible endpoint (nginx tries 20 points, then falls back to round robin;
/// we walk the whole ring). Removing an endpoint moves only its keys; adding
/// one moves about `1/(n+1)` of them. Without a key a pick is round robin.
///
/// ```
/// use lb_algorithms::KetamaRing;
/// use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     ["127.0.0.1:7777", "127.0.0.1:7778"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let ring = KetamaRing::new(set);
/// // The mapping nginx itself gives for these two servers.
/// assert_eq!(ring.select(&PickContext::new().with_key(b"/some/path")), Some(1));
/// assert_eq!(ring.select(&PickContext::new().with_key(b"/g")), Some(0));
/// ```
#[derive(Debug)]
pub struct KetamaRing {
    set: EndpointSet,
    points: Points,
    keyless: Keyless,
}

impl KetamaRing {
    /// A ring with nginx's 160 points per unit of weight.
    pub fn new(set: EndpointSet) -> Self {
        Self::with_points(set, DEFAULT_POINTS_PER_WEIGHT)
    }

    /// A ring with `points_per_weight` points per unit of weight (at least 1).
    ///
    /// Rings are nginx-identical up to [`MAX_RING_POINTS`](crate::MAX_RING_POINTS); beyond that
    /// (huge weights from discovery) every endpoint's points are scaled down
    /// in proportion, keeping at least one each, as Envoy's `max_ring_size` does.
    pub fn with_points(set: EndpointSet, points_per_weight: u32) -> Self {
        let per = points_per_weight.max(1);
        let total = set.total_weight();
        // Each point packed as hash << 32 | endpoint index, generated in index
        // order, so on a hash collision the lower index keeps the point.
        let mut points: Vec<u64> = Vec::with_capacity(capacity(&set, per));
        for (index, member) in set.iter().enumerate() {
            let seed = server_hasher(member.endpoint().address());
            let mut prev: u32 = 0;
            for _ in 0..points_for(member.endpoint().weight(), per, total) {
                let mut hasher = seed.clone();
                hasher.update(&prev.to_le_bytes());
                prev = hasher.finalize();
                points.push(u64::from(prev) << 32 | index as u64);
            }
        }
        KetamaRing { set, points: Points::new(points), keyless: Keyless::default() }
    }

    /// How many points the ring holds (after dropping duplicate hashes).
    /// At most [`MAX_RING_POINTS`](crate::MAX_RING_POINTS) plus one per endpoint.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// The owner of a CRC32 key hash, ignoring health: the raw ring lookup.
    #[inline]
    pub fn lookup(&self, hash: u32) -> Option<usize> {
        self.points.lookup(hash)
    }

    /// Selects for a prehashed key (`crc32(key)`), skipping ineligible endpoints clockwise.
    #[inline]
    pub fn select_hash(&self, hash: u32, ctx: &PickContext<'_>) -> Option<usize> {
        self.points.select(hash, &self.set, ctx)
    }
}

/// The CRC32 state after `host "\0" port`, split as nginx splits its server
/// string: at the last colon (every address ends in `:port`; IPv6 hosts
/// keep their brackets).
fn server_hasher(address: &Address) -> crc32fast::Hasher {
    let server = address.to_string();
    let (host, port) = server.rsplit_once(':').unwrap_or((&server, ""));
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(host.as_bytes());
    hasher.update(b"\0");
    hasher.update(port.as_bytes());
    hasher
}

impl HashWalk for KetamaRing {
    /// nginx hashes the key with CRC32.
    fn key_hash(&self, key: &[u8]) -> u64 {
        u64::from(crc32fast::hash(key))
    }

    fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        self.points.walk(hash as u32)
    }
}

impl Balancer for KetamaRing {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        match ctx.key() {
            Some(key) => self.select_hash(crc32fast::hash(key), ctx),
            None => self.keyless.select_out_of_line(&self.set, ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, set_of};
    use lb_core::{Endpoint, Timestamp};

    fn nginx_pair() -> KetamaRing {
        let eps = ["127.0.0.1:7777", "127.0.0.1:7778"].map(|a| Endpoint::new(a.parse::<Address>().unwrap()));
        KetamaRing::new(EndpointSet::new(eps, Timestamp::ZERO))
    }

    #[test]
    fn matches_nginx_known_mappings() {
        // Mappings observed from nginx `hash $request_uri consistent` for these two servers.
        let ring = nginx_pair();
        let expect = [
            (&b"/some/path"[..], 1),
            (b"/some/longer/path", 0),
            (b"/sad/zaidoon", 1),
            (b"/g", 0),
            (b"/pingora/team/is/cool/and/this/is/a/long/uri", 1),
            (b"/i/am/not/confident/in/this/code", 0),
        ];
        for (key, owner) in expect {
            assert_eq!(ring.select(&PickContext::new().with_key(key)), Some(owner), "{key:?}");
        }
        assert_eq!(ring.points(), 320);
    }

    #[test]
    fn the_raw_lookup_is_what_a_healthy_ring_selects() {
        let ring = KetamaRing::new(set_of(9));
        let mut owners = [0usize; 9];
        for k in 0u32..500 {
            let key = k.to_le_bytes();
            let owner = ring.lookup(crc32fast::hash(&key));
            assert_eq!(owner, ring.select(&PickContext::new().with_key(&key)), "key {k}");
            owners[owner.unwrap()] += 1;
        }
        assert!(owners.iter().all(|&n| n > 0), "every endpoint owns some keys: {owners:?}");
    }

    #[test]
    fn failover_walks_clockwise_to_distinct_endpoints() {
        let ring = KetamaRing::new(set_of(4));
        let order: Vec<usize> = ring.candidates(b"user-7").collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3]);
        let first = order[0];
        assert_eq!(ring.select(&PickContext::new().with_key(b"user-7")), Some(first));
        eject(ring.endpoints(), first);
        assert_eq!(ring.select(&PickContext::new().with_key(b"user-7")), Some(order[1]));
        assert_eq!(
            ring.select(&PickContext::new().with_key(b"user-7").excluding(&[order[1]])),
            Some(order[2])
        );
    }

    #[test]
    fn keyless_is_round_robin_and_empty_is_none() {
        let ring = KetamaRing::new(set_of(3));
        let picks: Vec<_> = (0..3).map(|_| ring.select(&PickContext::new()).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2]);
        let empty = KetamaRing::new(EndpointSet::empty());
        assert_eq!(empty.select(&PickContext::new().with_key(b"k")), None);
        assert_eq!(empty.candidates(b"k").count(), 0);
    }
}
