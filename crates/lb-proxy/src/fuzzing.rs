//! How many cases the fuzz targets (`fuzz::` tests) run: a few hundred in a
//! plain `cargo test`, `LB_FUZZ_CASES` when set (`cargo xtask reliability`
//! sets tens of thousands).

use proptest::test_runner::Config as ProptestConfig;

/// The environment variable that sets the case count of every fuzz target.
pub(crate) const CASES_ENV: &str = "LB_FUZZ_CASES";

/// Cases when `LB_FUZZ_CASES` is not set: enough to exercise each target in a few seconds.
const DEFAULT_CASES: u32 = 512;

/// The proptest configuration of a fuzz target.
pub(crate) fn config() -> ProptestConfig {
    let cases = std::env::var(CASES_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    // A failure is kept as a named regression test instead of a file beside the sources.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}
