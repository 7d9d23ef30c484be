//! What the consistent-hash rings share: sorted 32-bit points, the lookup of
//! the first point at or after a hash, and the clockwise walk.

use alloc::vec::Vec;

use lb_core::{EndpointSet, PickContext};

use crate::walk::first_eligible;

/// The most points a ring holds (Envoy's default `max_ring_size`, 8 Mi):
/// bounds memory and build time whatever weights discovery reports.
pub const MAX_RING_POINTS: usize = 8 * 1024 * 1024;

/// A ring's points, sorted by hash, each owned by an endpoint index.
#[derive(Debug)]
pub(crate) struct Points {
    hashes: Vec<u32>,
    owners: Vec<u32>,
    /// For each of `2^bits` equal slices of the hash space, the first point
    /// at or after the slice's start: a lookup jumps there and scans on.
    index: Vec<u32>,
    shift: u32,
}

impl Points {
    /// Sorts points packed as `hash << 32 | owner`. Of points with the same
    /// hash, the one earliest in `points` keeps it.
    pub(crate) fn new(mut points: Vec<u64>) -> Self {
        radix_sort_by_hash(&mut points);
        points.dedup_by_key(|p| *p >> 32);
        let hashes: Vec<u32> = points.iter().map(|&p| (p >> 32) as u32).collect();
        let owners: Vec<u32> = points.iter().map(|&p| p as u32).collect();
        let (index, shift) = slice_index(&hashes);
        Points { hashes, owners, index, shift }
    }

    /// How many points (after dropping duplicate hashes).
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The point that owns a hash, as a binary search finds it: the first
    /// point `>= hash`, wrapping to 0. O(1) expected: jump to the hash's
    /// slice, scan on.
    #[inline]
    pub(crate) fn position(&self, hash: u32) -> usize {
        let len = self.hashes.len();
        let mut i = self.index[(hash >> self.shift) as usize] as usize;
        while i < len && self.hashes[i] < hash {
            i += 1;
        }
        if i == len { 0 } else { i }
    }

    /// The owner of a hash, ignoring health.
    #[inline]
    pub(crate) fn lookup(&self, hash: u32) -> Option<usize> {
        self.owners.get(self.position(hash)).map(|&o| o as usize)
    }

    /// The owner of a hash if eligible, else the next eligible endpoint clockwise.
    #[inline]
    pub(crate) fn select(&self, hash: u32, set: &EndpointSet, ctx: &PickContext<'_>) -> Option<usize> {
        let owner = self.lookup(hash)?;
        if set.is_eligible(owner, ctx) {
            return Some(owner);
        }
        first_eligible(self.walk(hash), set, ctx)
    }

    /// Every point's owner clockwise from the hash's point, wrapping once.
    pub(crate) fn walk(&self, hash: u32) -> impl Iterator<Item = usize> + '_ {
        let len = self.owners.len();
        let start = if len == 0 { 0 } else { self.position(hash) };
        (0..len).map(move |k| {
            let i = start + k;
            self.owners[if i >= len { i - len } else { i }] as usize
        })
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

/// How many points an endpoint of `weight` gets: `weight * per`, as nginx
/// does, unless the whole ring would exceed [`MAX_RING_POINTS`]; then every
/// share is scaled down in proportion, keeping at least one point each.
pub(crate) fn points_for(weight: u32, per: u32, total_weight: u64) -> u64 {
    let exact = u128::from(weight) * u128::from(per);
    let wanted = u128::from(total_weight) * u128::from(per);
    let cap = MAX_RING_POINTS as u128;
    let scaled = if wanted > cap { exact * cap / wanted } else { exact };
    u64::try_from(scaled).unwrap_or(u64::MAX).max(1)
}

/// Room for every point of a set's ring: the capped total plus one per endpoint.
pub(crate) fn capacity(set: &EndpointSet, per: u32) -> usize {
    MAX_RING_POINTS.min(usize::try_from(set.total_weight() * u64::from(per)).unwrap_or(usize::MAX))
        + set.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_index_agrees_with_binary_search() {
        let mut packed: Vec<u64> =
            (0..91u64).map(|k| (crate::util::splitmix64(k) >> 32 << 32) | (k % 7)).collect();
        packed.push(u64::from(u32::MAX) << 32);
        let points = Points::new(packed);
        let h = &points.hashes;
        for hash in (0..=u32::MAX).step_by(65_521).chain([0, 1, u32::MAX, h[0], h[5], h[5].wrapping_add(1)]) {
            let i = h.partition_point(|&p| p < hash);
            assert_eq!(points.position(hash), if i == h.len() { 0 } else { i }, "{hash}");
        }
        assert!(h.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
    }

    #[test]
    fn each_slice_starts_where_the_points_of_earlier_slices_end() {
        // Four points, so four slices of 2^30 hashes each.
        let hashes = [1, 2 << 30, (2 << 30) + 5, 3 << 30];
        assert_eq!(slice_index(&hashes), (alloc::vec![0, 1, 1, 3], 30));
    }

    #[test]
    fn a_ring_has_room_for_every_point_and_one_spare_each() {
        let set = crate::testing::weighted_set(&[1, 2, 3]);
        assert_eq!(capacity(&set, 160), 6 * 160 + 3);
    }

    #[test]
    fn the_first_of_equal_hashes_keeps_the_point() {
        let points = Points::new(alloc::vec![7 << 32 | 3, 5 << 32 | 1, 7 << 32 | 2]);
        assert_eq!(points.len(), 2);
        assert_eq!(points.lookup(6), Some(3));
        assert_eq!(points.lookup(8), Some(1), "wraps to the first point");
        assert_eq!(points.walk(6).collect::<Vec<_>>(), [3, 1]);
    }

    #[test]
    fn huge_weights_are_scaled_under_the_cap() {
        assert_eq!(points_for(3, 160, 10), 480, "nginx's count below the cap");
        let total = u64::from(u32::MAX) + 1;
        let big = points_for(u32::MAX, 160, total);
        let small = points_for(1, 160, total);
        // Envoy's default `maximum_ring_size`, 8 Mi points.
        assert_eq!(MAX_RING_POINTS, 8 << 20);
        assert!(big as usize <= MAX_RING_POINTS && big as usize > MAX_RING_POINTS - 2);
        assert_eq!(small, 1, "every endpoint keeps a point");
        assert!(points_for(u32::MAX, u32::MAX, u64::from(u32::MAX)) as usize <= MAX_RING_POINTS);
    }
}
