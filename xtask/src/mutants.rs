//! `cargo xtask mutants`: cargo-mutants over the pure crates whose tests
//! are meant to pin every behaviour, lb-algorithms and lb-health.
//!
//! A whole run is about 2,000 mutants, some hours on this 2-core box, so it
//! goes one shard at a time: `--shard k/n` tests every n-th mutant from the
//! k-th, spread over every file. Each mutant builds once and runs the
//! crate's tests with every feature under nextest, for at most 20 s (a
//! mutant that loops counts as caught by its timeout). cargo-mutants is
//! installed from crates.io when missing.
//!
//! Known equivalent mutants, which no test can kill because the behaviour
//! does not change. In lb-algorithms:
//! - `swrr.rs`, `jump`: `position + len - from` as `+ from`. Distances of
//!   wrapped positions are only compared with each other and with unwrapped
//!   ones, and both orders survive the change. And `<=` for `<` between
//!   distances: every position belongs to one endpoint, so no two
//!   candidates are at the same distance.
//! - `rendezvous.rs`, `score`: the leading `-` deleted. The scores turn
//!   negative, and the bits of negative floats order by magnitude as the
//!   positive ones do, so every rank keeps its place.
//! - `util.rs`, `Rng::next`: the two addresses of the salt combined, or
//!   the salt mixed in, with `|` or `&` instead of `^`. The salt still
//!   differs by stack frame (which a test pins) and draws stay uniform
//!   enough for every statistical test; seeded draws have no salt at all.
//! - `maglev.rs`, `populate`: the switch to the tail strategy one slot
//!   earlier (`>=` for `>`), or never (`m + filled` for `m - filled`). The
//!   tail finds the same slot a probe would, faster; the tables stay
//!   identical (pinned by their fingerprints). Likewise any other length
//!   of the tail (`sqrt(m) % 4` or `* 4` for `sqrt(m) / 4`).
//! - `maglev.rs`, `pow_mod`: `base += m` for `base %= m`. Equal modulo `m`,
//!   and no product overflows at the table sizes allowed.
//! - `stride.rs`, `next_turn`: `index *= 1` for `index += 1`. The stepping
//!   loop stops moving and falls through to `jump`, which computes the
//!   same turn the steps would have reached.
//! - `util.rs`, `Rotation::select_inlined`: `start * 1` for `start + 1`
//!   where the turn's endpoint is down, or `turn * 1` for `turn + 1` where
//!   it is excluded. The search then checks that index once more, finds it
//!   unusable again, and goes on from the same place.
//! - `random.rs`, `alias_table`: `<=` for `<` when sorting columns into
//!   small and large. A column of exactly full mass keeps all of it
//!   either way (its threshold is the whole range, its alias never drawn).
//! - `ring.rs`, `points_for`: `>=` for `>` against the ring's cap. At
//!   exactly the cap, scaling by `cap / wanted` is scaling by one.
//! - `p2c.rs`, `two_of_the_eligible`: `<=` for `<` between the two draws,
//!   which are distinct by construction; or `>`, after which the pair
//!   leads with the second draw instead of the first, drawn alike.
//! - `p2c.rs`, `eligible_or_redrawn` returning `None`: every pick whose
//!   draw lands on a down endpoint then goes to `two_of_the_eligible`,
//!   which draws as uniformly among the eligible, in O(n) instead of O(1).
//! - `algorithm.rs`, `AnyBalancer::seed_rng`: slow start's inner seed made
//!   with `|` or `&` for `^`. Both draws stay fixed sequences of the one
//!   seed; at worst the inner's seed equals the ramp's, which correlates
//!   the two sequences and leaves each uniform.
//!
//! In both crates, `^` for `|` between bit fields that never overlap: a
//! ring point's hash and index (`ketama.rs`, `fnv_ring.rs`), and in
//! lb-health `breaker/window.rs`, `record_otherwise`, and `breaker/word.rs`,
//! `Word::encode`, `tagged` and `Streak::failure` (a run's count stays
//! below its flag bit).
//!
//! In lb-health:
//! - `outlier/mod.rs`, `success_rate_outliers`: one `r - mean` of the
//!   variance as `r + mean`. The sum of `(r - m)(r + m)` over the rates
//!   equals the sum of `(r - m)^2`, since the rates average to `m`.
//! - `outlier/config.rs`, `consecutive_failures`: deleting the fields it
//!   sets to their defaults (gateway failures, split local origin, failure
//!   percentage); they are written out to say "nothing else". And
//!   `OutlierConfig::envoy` as `Default::default()`: that is what it
//!   returns (Envoy's defaults are the defaults).
//! - `breaker/word.rs`, `Streak::success`: `|` for `&` in the fast path's
//!   check, which then never holds; `start_success_run` makes the same
//!   check and answers the same.
//! - `breaker/circuit.rs`, `record_verdict`: the fast path taken for a
//!   stale ticket (`!=` for `==` on the generation). Its counters are
//!   tagged by generation and take a stale increment back, and the slow
//!   path does the same for a current ticket.
//! - `active.rs`, `next_delay`: `!=` for `==` on the coin that picks the
//!   sign of the jitter. Either way it is a fair coin.
//! - `retry/throttle.rs`, `on_success`: `<=` for `<` against the full
//!   bucket. A full bucket then stores its own value again.
//!
//! Five survivors need an interleaving a unit test cannot force:
//! - either answer of `GenCounter::repair`'s check that a word was taken
//!   over again (`breaker/word.rs`);
//! - `Streak::start_success_run`'s check that a racing success already
//!   started the run (its stress tests race it without pinning that exact
//!   schedule);
//! - `SlidingWindowBreaker::advance`'s `&&` for `||`: only a word re-opened
//!   by another thread between two loads is Open and not yet expired there;
//! - `p2c.rs`, `two_of_the_eligible`'s fallback searching from `a * 1` for
//!   `a + 1`: with one eligible endpoint both find none other; two or more
//!   reach it only when health changes between its two passes over the set.

use std::process::Command;

use crate::cmd;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The shard of each crate's mutants to test, `k/n` (about 50 per crate at 1/20).
    #[arg(long, default_value = "1/20")]
    shard: String,
}

/// The crates, and the files of theirs that are test helpers, not behaviour.
const CRATES: &[(&str, &[&str])] =
    &[("lb-algorithms", &["crates/lb-algorithms/src/testing.rs"]), ("lb-health", &[])];

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let cargo = cmd::cargo();
    if !cmd::succeeds(&cargo, &["mutants", "--version"]) {
        cmd::step("installing cargo-mutants");
        cmd::run(&cargo, &["install", "cargo-mutants", "--locked"])?;
    }
    let mut survivors = Vec::new();
    for (krate, helpers) in CRATES {
        cmd::step(&format!("mutants of {krate}, shard {}", args.shard));
        let out = cmd::workspace_root().join("target/mutants").join(krate);
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let out = out.to_string_lossy();
        let mut mutants = Command::new(&cargo);
        mutants.current_dir(cmd::workspace_root()).args(["mutants", "--package", krate, "--all-features"]);
        mutants.args(["--test-tool", "nextest", "--timeout", "20", "--sharding", "round-robin"]);
        mutants.args(["--shard", &args.shard, "--output", &out]);
        for helper in *helpers {
            mutants.args(["--exclude", helper]);
        }
        let status = mutants.status().map_err(|e| format!("could not start cargo mutants: {e}"))?;
        // 0: all caught; 2: some missed; 3: some timed out (caught by the timeout). With both
        // missed and timed-out mutants the code says 3, so the list of missed ones decides.
        if !matches!(status.code(), Some(0 | 2 | 3)) {
            return Err(format!("cargo mutants on {krate} failed ({status})"));
        }
        let missed = format!("{out}/mutants.out/missed.txt");
        let count = std::fs::read_to_string(&missed).map_err(|e| format!("{missed}: {e}"))?.lines().count();
        if count > 0 {
            survivors.push(format!("{krate}: {count} (see {missed})"));
        }
    }
    if survivors.is_empty() { Ok(()) } else { Err(format!("mutants survived: {}", survivors.join("; "))) }
}
