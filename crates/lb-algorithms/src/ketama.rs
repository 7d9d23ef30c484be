//! The ketama consistent-hash ring, point-for-point compatible with nginx
//! `hash $key consistent`.

use alloc::string::ToString;
use alloc::vec::Vec;

use lb_core::{Address, Balancer, EndpointSet, PickContext};

use crate::walk::{HashWalk, Keyless, first_eligible};

/// nginx's (and libketama's) points per unit of weight.
pub const DEFAULT_POINTS_PER_WEIGHT: u32 = 160;

/// The most points a ring holds (Envoy's default `max_ring_size`, 8 Mi):
/// bounds memory and build time whatever weights discovery reports.
pub const MAX_RING_POINTS: usize = 8 * 1024 * 1024;

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
    hashes: Vec<u32>,
    owners: Vec<u32>,
    /// For each of `2^bits` equal slices of the hash space, the first point
    /// at or after the slice's start: a lookup jumps there and scans on.
    index: Vec<u32>,
    shift: u32,
    keyless: Keyless,
}

impl KetamaRing {
    /// A ring with nginx's 160 points per unit of weight.
    pub fn new(set: EndpointSet) -> Self {
        Self::with_points(set, DEFAULT_POINTS_PER_WEIGHT)
    }

    /// A ring with `points_per_weight` points per unit of weight (at least 1).
    ///
    /// Rings are nginx-identical up to [`MAX_RING_POINTS`]; beyond that
    /// (huge weights from discovery) every endpoint's points are scaled down
    /// in proportion, keeping at least one each, as Envoy's `max_ring_size` does.
    pub fn with_points(set: EndpointSet, points_per_weight: u32) -> Self {
        let per = points_per_weight.max(1);
        let total = set.total_weight();
        let capacity =
            MAX_RING_POINTS.min(usize::try_from(total * u64::from(per)).unwrap_or(usize::MAX)) + set.len();
        // Each point packed as hash << 32 | endpoint index, generated in index order.
        let mut points: Vec<u64> = Vec::with_capacity(capacity);
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
        radix_sort_by_hash(&mut points);
        // On a hash collision the lower index (the first generated) keeps the point.
        points.dedup_by_key(|p| *p >> 32);
        let hashes: Vec<u32> = points.iter().map(|&p| (p >> 32) as u32).collect();
        let owners: Vec<u32> = points.iter().map(|&p| p as u32).collect();
        let (index, shift) = slice_index(&hashes);
        let keyless = Keyless::new(&set);
        KetamaRing { set, hashes, owners, index, shift, keyless }
    }

    /// How many points the ring holds (after dropping duplicate hashes).
    /// At most [`MAX_RING_POINTS`] plus one per endpoint.
    pub fn points(&self) -> usize {
        self.hashes.len()
    }

    /// The ring position (a point index) that owns a key hash, as nginx
    /// finds it: the first point `>= hash`, wrapping to 0. Same answer as a
    /// binary search, in O(1) expected: jump to the hash's slice, scan on.
    #[inline]
    fn position(&self, hash: u32) -> usize {
        let len = self.hashes.len();
        let mut i = self.index[(hash >> self.shift) as usize] as usize;
        while i < len && self.hashes[i] < hash {
            i += 1;
        }
        if i == len { 0 } else { i }
    }

    /// The owner of a CRC32 key hash, ignoring health: the raw ring lookup.
    #[inline]
    pub fn lookup(&self, hash: u32) -> Option<usize> {
        self.owners.get(self.position(hash)).map(|&o| o as usize)
    }

    /// Selects for a prehashed key (`crc32(key)`), skipping ineligible endpoints clockwise.
    #[inline]
    pub fn select_hash(&self, hash: u32, ctx: &PickContext<'_>) -> Option<usize> {
        if self.owners.is_empty() {
            return None;
        }
        let owner = self.owners[self.position(hash)] as usize;
        if self.set.is_eligible(owner, ctx) {
            return Some(owner);
        }
        first_eligible(self.walk(u64::from(hash)), &self.set, ctx)
    }
}

/// A stable LSD radix sort on the upper 32 bits (four byte-wide passes):
/// several times faster than a comparison sort for ring-sized inputs.
fn radix_sort_by_hash(points: &mut Vec<u64>) {
    let mut spare = alloc::vec![0u64; points.len()];
    for shift in [32u32, 40, 48, 56] {
        let mut starts = [0usize; 256];
        for &p in points.iter() {
            starts[((p >> shift) & 0xFF) as usize] += 1;
        }
        let mut sum = 0;
        for s in starts.iter_mut() {
            (*s, sum) = (sum, sum + *s);
        }
        for &p in points.iter() {
            let digit = ((p >> shift) & 0xFF) as usize;
            spare[starts[digit]] = p;
            starts[digit] += 1;
        }
        core::mem::swap(points, &mut spare);
    }
}

/// Splits the 32-bit hash space into a power of two of slices, about one
/// per point, and records where each slice's points begin.
fn slice_index(hashes: &[u32]) -> (Vec<u32>, u32) {
    let bits = hashes.len().max(2).next_power_of_two().trailing_zeros().min(24);
    let shift = 32 - bits;
    // The first point at or after a slice's start = how many points lie in earlier slices.
    let mut index = alloc::vec![0u32; (1 << bits) + 1];
    for &h in hashes {
        index[(h >> shift) as usize + 1] += 1;
    }
    for s in 1..index.len() {
        index[s] += index[s - 1];
    }
    index.pop();
    (index, shift)
}

/// The CRC32 state after `host "\0" port`, split as nginx splits its server string.
fn server_hasher(address: &Address) -> crc32fast::Hasher {
    let server = address.to_string();
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => (host, port),
        _ => (server.as_str(), ""),
    };
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
        let len = self.owners.len();
        let start = if len == 0 { 0 } else { self.position(hash as u32) };
        (0..len).map(move |k| {
            let i = start + k;
            self.owners[if i >= len { i - len } else { i }] as usize
        })
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
            None => self.keyless.select(&self.set, ctx),
        }
    }
}

/// How many points an endpoint of `weight` gets: `weight * per`, as nginx
/// does, unless the whole ring would exceed [`MAX_RING_POINTS`]; then every
/// share is scaled down in proportion, keeping at least one point each.
fn points_for(weight: u32, per: u32, total_weight: u64) -> u64 {
    let exact = u128::from(weight) * u128::from(per);
    let wanted = u128::from(total_weight) * u128::from(per);
    let cap = MAX_RING_POINTS as u128;
    let scaled = if wanted > cap { exact * cap / wanted } else { exact };
    u64::try_from(scaled).unwrap_or(u64::MAX).max(1)
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
    fn slice_index_agrees_with_binary_search() {
        let ring = KetamaRing::with_points(set_of(7), 13);
        for h in (0..=u32::MAX).step_by(65_521).chain([
            0,
            1,
            u32::MAX,
            ring.hashes[0],
            ring.hashes[5],
            ring.hashes[5].wrapping_add(1),
        ]) {
            let i = ring.hashes.partition_point(|&p| p < h);
            assert_eq!(ring.position(h), if i == ring.hashes.len() { 0 } else { i }, "{h}");
        }
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

    #[test]
    fn huge_weights_are_scaled_under_the_cap() {
        assert_eq!(points_for(3, 160, 10), 480, "nginx's count below the cap");
        let total = u64::from(u32::MAX) + 1;
        let big = points_for(u32::MAX, 160, total);
        let small = points_for(1, 160, total);
        assert!(big as usize <= MAX_RING_POINTS && big as usize > MAX_RING_POINTS - 2);
        assert_eq!(small, 1, "every endpoint keeps a point");
        assert!(points_for(u32::MAX, u32::MAX, u64::from(u32::MAX)) as usize <= MAX_RING_POINTS);
    }
}
