//! A part of the population's share of the population-wide figures: what
//! RFM ranks and the model fits need of the people one process holds.
//!
//! RFM scores rank a customer against everyone's values, and BG/NBD,
//! Gamma-Gamma, the one-time-buyer horizon and the value-tier cutoffs are
//! all functions of the multiset of buyers' repeat summaries (each sorts or
//! groups what it is given, so the order never matters). A share holds
//! exactly those two things, counted: shares of disjoint parts merge into
//! the share of the whole, and the models fitted over a merged share equal
//! the models fitted over everyone in one process, to the bit.

use std::collections::BTreeMap;

use rapport_proto::internal as wire;

use super::config::AnalyticsConfig;
use super::occasions::RepeatSummary;
use super::rfm::{RfmDistribution, RfmValues};
use super::scoring::{CustomerInputs, PopulationModels};

/// Everything of a [`RepeatSummary`], in an order of its own.
type SummaryKey = (i64, u32, i64, i64, i64, Option<i64>);

fn key_of(summary: &RepeatSummary) -> SummaryKey {
    (
        summary.first_occasion_day,
        summary.repeat_occasions,
        summary.first_to_last_days,
        summary.first_to_as_of_days,
        summary.repeat_net_minor,
        summary.first_to_second_days,
    )
}

fn summary_of(key: &SummaryKey) -> RepeatSummary {
    let (
        first_occasion_day,
        repeat_occasions,
        first_to_last_days,
        first_to_as_of_days,
        repeat_net_minor,
        first_to_second_days,
    ) = *key;
    RepeatSummary {
        first_occasion_day,
        repeat_occasions,
        first_to_last_days,
        first_to_as_of_days,
        repeat_net_minor,
        first_to_second_days,
    }
}

/// Most buyers a share read from another process may count: each is
/// expanded into a summary when the models are fitted.
pub const MAX_BUYERS: u64 = u32::MAX as u64;

/// RFM values and repeat summaries of some people at one `as_of`, counted.
#[derive(Debug, Clone, Default)]
pub struct PopulationShare {
    pub as_of: i64,
    pub rfm: RfmDistribution,
    summaries: BTreeMap<SummaryKey, u64>,
}

impl PartialEq for PopulationShare {
    fn eq(&self, other: &Self) -> bool {
        self.as_of == other.as_of
            && self.summaries == other.summaries
            && self.rfm.axes() == other.rfm.axes()
    }
}

impl PopulationShare {
    pub fn new(as_of: i64) -> Self {
        PopulationShare {
            as_of,
            ..PopulationShare::default()
        }
    }

    /// Counts one person, from their inputs at this share's `as_of`.
    pub fn add(&mut self, inputs: &CustomerInputs) {
        self.add_values(inputs.rfm.as_ref(), inputs.summary.as_ref());
    }

    fn add_values(&mut self, rfm: Option<&RfmValues>, summary: Option<&RepeatSummary>) {
        if let Some(values) = rfm {
            self.rfm.add(values);
        }
        if let Some(summary) = summary {
            *self.summaries.entry(key_of(summary)).or_default() += 1;
        }
    }

    /// Adds the people of `other`, a disjoint part of the population.
    pub fn merge(&mut self, other: &PopulationShare) {
        self.rfm.merge(&other.rfm);
        for (key, count) in &other.summaries {
            *self.summaries.entry(*key).or_default() += count;
        }
    }

    /// Buyers by `as_of`.
    pub fn buyers(&self) -> u64 {
        self.summaries.values().sum()
    }

    /// Every buyer's summary, in summary order.
    pub fn summaries(&self) -> Vec<RepeatSummary> {
        let mut everyone = Vec::with_capacity(self.buyers() as usize);
        for (key, count) in &self.summaries {
            let summary = summary_of(key);
            everyone.extend(std::iter::repeat_n(summary, *count as usize));
        }
        everyone
    }

    /// The population-wide models over these people.
    pub fn models(&self, config: &AnalyticsConfig) -> PopulationModels {
        PopulationModels::fit(&self.summaries(), self.as_of, config)
    }

    pub fn to_wire(&self) -> wire::PopulationShare {
        let counts = |axis: Vec<(i64, u64)>| {
            axis.into_iter()
                .map(|(value, count)| wire::ValueCount { value, count })
                .collect()
        };
        let [days, frequencies, monetary] = self.rfm.axes();
        wire::PopulationShare {
            as_of_day: self.as_of,
            last_occasion_days: counts(days),
            frequencies: counts(frequencies),
            monetary_minor: counts(monetary),
            summaries: self
                .summaries
                .iter()
                .map(|(key, count)| {
                    let summary = summary_of(key);
                    wire::SummaryCount {
                        first_occasion_day: summary.first_occasion_day,
                        repeat_occasions: summary.repeat_occasions,
                        first_to_last_days: summary.first_to_last_days,
                        first_to_as_of_days: summary.first_to_as_of_days,
                        repeat_net_minor: summary.repeat_net_minor,
                        first_to_second_days: summary.first_to_second_days,
                        count: *count,
                    }
                })
                .collect(),
        }
    }

    /// The share another process sent; an error naming what is wrong with
    /// it (RFM axes out of order or disagreeing, a summary twice or
    /// counted zero times).
    pub fn from_wire(share: &wire::PopulationShare) -> Result<Self, String> {
        let axis = |counts: &[wire::ValueCount]| -> Vec<(i64, u64)> {
            counts.iter().map(|one| (one.value, one.count)).collect()
        };
        let rfm = RfmDistribution::from_axes([
            axis(&share.last_occasion_days),
            axis(&share.frequencies),
            axis(&share.monetary_minor),
        ])
        .ok_or("its RFM axes are not ascending counts of the same customers")?;
        if rfm.len() > MAX_BUYERS {
            return Err(format!("its RFM axes count more than {MAX_BUYERS} buyers"));
        }
        let mut summaries = BTreeMap::new();
        let mut buyers: u64 = 0;
        for one in &share.summaries {
            if one.count == 0 {
                return Err("a summary is counted zero times".to_owned());
            }
            buyers = buyers
                .checked_add(one.count)
                .filter(|buyers| *buyers <= MAX_BUYERS)
                .ok_or(format!("it counts more than {MAX_BUYERS} buyers"))?;
            let key = key_of(&RepeatSummary {
                first_occasion_day: one.first_occasion_day,
                repeat_occasions: one.repeat_occasions,
                first_to_last_days: one.first_to_last_days,
                first_to_as_of_days: one.first_to_as_of_days,
                repeat_net_minor: one.repeat_net_minor,
                first_to_second_days: one.first_to_second_days,
            });
            if summaries.insert(key, one.count).is_some() {
                return Err("a summary is listed twice".to_owned());
            }
        }
        Ok(PopulationShare {
            as_of: share.as_of_day,
            rfm,
            summaries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Person {
        rfm: Option<RfmValues>,
        summary: Option<RepeatSummary>,
    }

    impl PopulationShare {
        fn count(&mut self, person: &Person) {
            self.add_values(person.rfm.as_ref(), person.summary.as_ref());
        }
    }

    fn person(seed: u64) -> Person {
        let repeats = (seed % 4) as u32;
        let first = 19_000 + (seed % 97) as i64;
        let last = first + i64::from(repeats) * (1 + (seed % 13) as i64);
        Person {
            rfm: Some(RfmValues {
                last_occasion_day: last,
                frequency: repeats + 1,
                monetary_minor: 1_000 + (seed % 7) as i64 * 250,
            }),
            summary: Some(RepeatSummary {
                first_occasion_day: first,
                repeat_occasions: repeats,
                first_to_last_days: last - first,
                first_to_as_of_days: 19_400 - first,
                repeat_net_minor: i64::from(repeats) * (900 + (seed % 5) as i64 * 40),
                first_to_second_days: (repeats > 0).then_some(1 + (seed % 13) as i64),
            }),
        }
    }

    #[test]
    fn shares_of_parts_merge_into_the_share_and_the_models_of_the_whole() {
        let config = AnalyticsConfig::default();
        let people: Vec<Person> = (0..400).map(person).collect();
        let mut whole = PopulationShare::new(19_400);
        let mut parts = [
            PopulationShare::new(19_400),
            PopulationShare::new(19_400),
            PopulationShare::new(19_400),
        ];
        for (index, inputs) in people.iter().enumerate() {
            whole.count(inputs);
            parts[(index * 7) % 3].count(inputs);
        }
        let mut merged = PopulationShare::new(19_400);
        for part in parts.iter().rev() {
            merged.merge(part);
        }
        assert_eq!(merged, whole);
        // The models over everyone, in the order they came, equal those
        // over the merged share.
        let everyone: Vec<RepeatSummary> = people
            .iter()
            .filter_map(|one| one.summary.clone())
            .collect();
        let direct = PopulationModels::fit(&everyone, 19_400, &config);
        assert!(direct.bg_nbd.is_ok(), "{:?}", direct.bg_nbd);
        assert_eq!(merged.models(&config), direct);
    }

    #[test]
    fn a_share_goes_over_the_wire_and_back_unchanged() {
        let mut share = PopulationShare::new(19_400);
        for seed in 0..50 {
            share.count(&person(seed));
        }
        let back = PopulationShare::from_wire(&share.to_wire()).expect("valid");
        assert_eq!(back, share);
        assert_eq!(back.buyers(), 50);
    }

    fn arbitrary_counts() -> impl proptest::strategy::Strategy<Value = Vec<wire::ValueCount>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            (
                -3_i64..3,
                prop_oneof![Just(0_u64), 1_u64..3, Just(u64::MAX)],
            )
                .prop_map(|(value, count)| wire::ValueCount { value, count }),
            0..5,
        )
    }

    /// Fuzz-style: a share another process sent, however malformed (axes
    /// out of order or disagreeing, counts that overflow, summaries twice),
    /// is read or refused, never a panic; one read is valid and goes back
    /// over the wire unchanged.
    #[test]
    fn fuzz_any_share_from_the_wire_is_read_or_refused() {
        use proptest::prelude::*;
        let summary = (
            -2_i64..2,
            0_u32..3,
            proptest::option::of(-1_i64..3),
            prop_oneof![Just(0_u64), 1_u64..4, Just(u64::MAX)],
        )
            .prop_map(|(day, repeats, second, count)| wire::SummaryCount {
                first_occasion_day: day,
                repeat_occasions: repeats,
                first_to_last_days: i64::from(repeats),
                first_to_as_of_days: 10,
                repeat_net_minor: i64::from(repeats) * 100,
                first_to_second_days: second,
                count,
            });
        let share = (
            arbitrary_counts(),
            arbitrary_counts(),
            arbitrary_counts(),
            proptest::collection::vec(summary, 0..5),
        )
            .prop_map(
                |(days, frequencies, monetary, summaries)| wire::PopulationShare {
                    as_of_day: 19_400,
                    last_occasion_days: days,
                    frequencies,
                    monetary_minor: monetary,
                    summaries,
                },
            );
        proptest::test_runner::TestRunner::new(rapport_fuzzing::config())
            .run(&share, |sent| {
                if let Ok(read) = PopulationShare::from_wire(&sent) {
                    prop_assert_eq!(PopulationShare::from_wire(&read.to_wire()), Ok(read));
                }
                Ok(())
            })
            .expect("no share panics or changes on the way back");
    }

    #[test]
    fn a_malformed_share_is_refused_with_its_reason() {
        let mut share = PopulationShare::new(19_400);
        for seed in 0..5 {
            share.count(&person(seed));
        }
        let mut wire = share.to_wire();
        wire.frequencies.reverse();
        assert!(PopulationShare::from_wire(&wire).is_err());
        let mut wire = share.to_wire();
        wire.monetary_minor.pop();
        assert!(PopulationShare::from_wire(&wire).is_err());
        let mut wire = share.to_wire();
        wire.summaries[0].count = 0;
        assert!(PopulationShare::from_wire(&wire).is_err());
        let mut wire = share.to_wire();
        let first = wire.summaries[0];
        wire.summaries.push(first);
        assert!(PopulationShare::from_wire(&wire).is_err());
        let mut wire = share.to_wire();
        wire.summaries[0].count = MAX_BUYERS;
        assert!(PopulationShare::from_wire(&wire).is_err());
    }
}
