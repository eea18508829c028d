//! How courier's property tests run (`crates/channel/tests/properties.rs`,
//! and `crates/pipe/tests/properties.rs`, which includes this file by
//! path): a bounded configuration with a fixed seed, and one line of
//! figures per property.

use std::time::Instant;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config as ProptestConfig, RngSeed, TestCaseError, TestRunner};

/// A bounded configuration: `default_cases` unless `PROPTEST_CASES` says
/// otherwise, the fixed `seed` unless `PROPTEST_RNG_SEED` says otherwise,
/// shrinking bounded in time, no failure files.
pub fn config(default_cases: u32, seed: u64) -> ProptestConfig {
    let mut config = ProptestConfig::default(); // reads PROPTEST_* variables
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(seed);
    }
    if config.max_shrink_time == 0 {
        config.max_shrink_time = 20_000;
    }
    config.failure_persistence = None;
    config
}

/// Runs property `name` over `strategy` under [`config`] and prints its
/// figures (cases, seed, time); a failure panics with the seed.
pub fn run<S: Strategy>(
    name: &str,
    config: ProptestConfig,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let (cases, seed) = (config.cases, config.rng_seed);
    let start = Instant::now();
    let result = TestRunner::new(config).run(&strategy, test);
    eprintln!(
        "properties: test={name} cases={cases} seed={seed} elapsed={:.3}s",
        start.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{name} (seed {seed}): {e}");
    }
}
