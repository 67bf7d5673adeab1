//! What the fuzz-style properties share. A property whose name holds
//! `fuzz` feeds a parser or a router any input and checks that it refuses
//! or reads it, never panics; `make test` runs 20 000 cases of each and
//! `make fuzz` as many as `RAPPORT_FUZZ_CASES` says.

use proptest::test_runner::Config;

/// Cases per fuzz-style property when `RAPPORT_FUZZ_CASES` is not set.
pub const DEFAULT_CASES: u32 = 20_000;

/// The proptest configuration of a fuzz-style property.
pub fn config() -> Config {
    let cases = std::env::var("RAPPORT_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config::with_cases(cases)
}
