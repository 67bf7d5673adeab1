//! RFM: recency, frequency and monetary value over a lookback window, scored
//! 1–5 against the current population and mapped to the usual 11 segments.
//!
//! [`RfmPopulation`] keeps exact counts per value, so one customer's event
//! updates the distribution in O(log n) and any customer can be re-scored
//! at once without rescanning the others.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::RfmConfig;
use super::occasions::PurchaseOccasion;
use super::order_statistics::CountingMultiset;

/// A customer's raw RFM figures at some `as_of`.
///
/// Recency is kept as the day of the last occasion rather than as "days ago"
/// so that the ranking does not go stale as days pass: for one `as_of`, fewer
/// days since the last occasion is exactly a later last occasion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RfmValues {
    pub last_occasion_day: i64,
    /// Purchase occasions in the window.
    pub frequency: u32,
    /// Net spend in the window, reporting-currency minor units.
    pub monetary_minor: i64,
}

impl RfmValues {
    /// Days since the last occasion (0 when it was on `as_of`).
    pub fn recency_days(&self, as_of: i64) -> i64 {
        as_of - self.last_occasion_day
    }
}

fn in_window(day: i64, as_of: i64, config: &RfmConfig) -> bool {
    day <= as_of && day > as_of - config.lookback_days
}

/// RFM figures over the `lookback_days` days ending with `as_of` (inclusive);
/// `None` if the customer had no occasion in that window. Pass the
/// reporting-currency occasions.
pub fn rfm_values(
    occasions: &[PurchaseOccasion],
    as_of: i64,
    config: &RfmConfig,
) -> Option<RfmValues> {
    let mut values: Option<RfmValues> = None;
    for occasion in occasions
        .iter()
        .filter(|occasion| in_window(occasion.day, as_of, config))
    {
        let current = values.get_or_insert(RfmValues {
            last_occasion_day: occasion.day,
            frequency: 0,
            monetary_minor: 0,
        });
        current.last_occasion_day = current.last_occasion_day.max(occasion.day);
        current.frequency += 1;
        current.monetary_minor += occasion.net_minor;
    }
    values
}

/// The first day after `as_of` on which the customer's figures change with no
/// new order, because their oldest occasion leaves the window. The projection
/// re-upserts the customer then; without that a dormant customer would keep
/// their old frequency forever.
pub fn rfm_values_change_on(
    occasions: &[PurchaseOccasion],
    as_of: i64,
    config: &RfmConfig,
) -> Option<i64> {
    occasions
        .iter()
        .filter(|occasion| in_window(occasion.day, as_of, config))
        .map(|occasion| occasion.day + config.lookback_days)
        .min()
}

/// Scores 1–5, higher is better on every axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RfmScores {
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
}

impl RfmScores {
    /// The combined F/M score the segment map uses: the mean of F and M,
    /// rounded half up, so (5, 4) counts as 5 and (2, 1) as 2.
    pub fn frequency_monetary(&self) -> u8 {
        (self.frequency + self.monetary).div_ceil(2)
    }

    /// The segment for these scores; see [`RfmSegment`] for the table.
    pub fn segment(&self) -> RfmSegment {
        segment_for(self.recency, self.frequency_monetary())
    }
}

/// The 11 named segments of the widely published RFM map (Putler's segment
/// list on a recency × frequency/monetary grid). R is the recency score and
/// FM the mean of the frequency and monetary scores rounded half up
/// ([`RfmScores::frequency_monetary`]). Every one of the 25 (R, FM) cells
/// belongs to exactly one segment:
///
/// | Segment             | R     | FM    |
/// |---------------------|-------|-------|
/// | Champions           | 5     | 4–5   |
/// | Loyal Customers     | 3–4   | 4–5   |
/// | Potential Loyalists | 4–5   | 2–3   |
/// | New Customers       | 5     | 1     |
/// | Promising           | 4     | 1     |
/// | Need Attention      | 3     | 3     |
/// | About to Sleep      | 3     | 1–2   |
/// | At Risk             | 1–2   | 3–4   |
/// | Can't Lose Them     | 1–2   | 5     |
/// | Hibernating         | 2     | 1–2   |
/// | Lost                | 1     | 1–2   |
///
/// Published versions of the table overlap (checked top to bottom, several
/// rows are unreachable); this grid keeps each segment's intent and removes
/// the overlaps so no precedence is needed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RfmSegment {
    Champions,
    LoyalCustomers,
    PotentialLoyalists,
    NewCustomers,
    Promising,
    NeedAttention,
    AboutToSleep,
    AtRisk,
    CantLoseThem,
    Hibernating,
    Lost,
}

impl RfmSegment {
    pub const ALL: [RfmSegment; 11] = [
        RfmSegment::Champions,
        RfmSegment::LoyalCustomers,
        RfmSegment::PotentialLoyalists,
        RfmSegment::NewCustomers,
        RfmSegment::Promising,
        RfmSegment::NeedAttention,
        RfmSegment::AboutToSleep,
        RfmSegment::AtRisk,
        RfmSegment::CantLoseThem,
        RfmSegment::Hibernating,
        RfmSegment::Lost,
    ];

    /// The name in URLs and JSON, e.g. `cant_lose_them`.
    pub fn slug(&self) -> &'static str {
        match self {
            RfmSegment::Champions => "champions",
            RfmSegment::LoyalCustomers => "loyal_customers",
            RfmSegment::PotentialLoyalists => "potential_loyalists",
            RfmSegment::NewCustomers => "new_customers",
            RfmSegment::Promising => "promising",
            RfmSegment::NeedAttention => "need_attention",
            RfmSegment::AboutToSleep => "about_to_sleep",
            RfmSegment::AtRisk => "at_risk",
            RfmSegment::CantLoseThem => "cant_lose_them",
            RfmSegment::Hibernating => "hibernating",
            RfmSegment::Lost => "lost",
        }
    }

    /// The name as marketers know it.
    pub fn as_str(&self) -> &'static str {
        match self {
            RfmSegment::Champions => "Champions",
            RfmSegment::LoyalCustomers => "Loyal Customers",
            RfmSegment::PotentialLoyalists => "Potential Loyalists",
            RfmSegment::NewCustomers => "New Customers",
            RfmSegment::Promising => "Promising",
            RfmSegment::NeedAttention => "Need Attention",
            RfmSegment::AboutToSleep => "About to Sleep",
            RfmSegment::AtRisk => "At Risk",
            RfmSegment::CantLoseThem => "Can't Lose Them",
            RfmSegment::Hibernating => "Hibernating",
            RfmSegment::Lost => "Lost",
        }
    }
}

impl std::fmt::Display for RfmSegment {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

fn segment_for(recency: u8, frequency_monetary: u8) -> RfmSegment {
    use RfmSegment::*;
    // One arm per R row of the table, FM columns low to high.
    match recency {
        5.. => match frequency_monetary {
            ..=1 => NewCustomers,
            2..=3 => PotentialLoyalists,
            _ => Champions,
        },
        4 => match frequency_monetary {
            ..=1 => Promising,
            2..=3 => PotentialLoyalists,
            _ => LoyalCustomers,
        },
        3 => match frequency_monetary {
            ..=2 => AboutToSleep,
            3 => NeedAttention,
            _ => LoyalCustomers,
        },
        2 => match frequency_monetary {
            ..=2 => Hibernating,
            3..=4 => AtRisk,
            _ => CantLoseThem,
        },
        _ => match frequency_monetary {
            ..=2 => Lost,
            3..=4 => AtRisk,
            _ => CantLoseThem,
        },
    }
}

/// The distribution of RFM values over every customer with at least one
/// occasion in the window, kept exactly and updated one customer at a time.
///
/// It serialises as its customer → values map alone and rebuilds the counts
/// on load, so the stored form is the same whatever order the updates came
/// in; equality likewise compares the values, not the internal layout.
#[derive(Debug, Clone, Default)]
pub struct RfmPopulation {
    values_by_customer: BTreeMap<String, RfmValues>,
    distribution: RfmDistribution,
}

/// The counts RFM scores rank against — how many customers have each
/// last-occasion day, frequency and monetary value — without who holds
/// which: for owners that keep each customer's values themselves.
#[derive(Debug, Clone, Default)]
pub struct RfmDistribution {
    last_occasion_days: CountingMultiset,
    frequencies: CountingMultiset,
    monetary_minor: CountingMultiset,
}

impl RfmDistribution {
    pub fn new() -> Self {
        Self::default()
    }

    /// The distribution of `values`, built at once: sorting each axis
    /// is much faster than counting customers one by one. Walks `values`
    /// once per axis, so that only one axis is held unsorted at a time.
    pub fn from_values(values: impl Iterator<Item = RfmValues> + Clone) -> Self {
        let axis = |key: fn(&RfmValues) -> i64| {
            CountingMultiset::from_keys(values.clone().map(|one| key(&one)).collect())
        };
        RfmDistribution {
            last_occasion_days: axis(|one| one.last_occasion_day),
            frequencies: axis(|one| i64::from(one.frequency)),
            monetary_minor: axis(|one| one.monetary_minor),
        }
    }

    /// Adds the customers counted in `other` (another part of the
    /// population): scores against the result equal scores against the
    /// whole population's distribution.
    pub fn merge(&mut self, other: &RfmDistribution) {
        self.last_occasion_days = self.last_occasion_days.merged(&other.last_occasion_days);
        self.frequencies = self.frequencies.merged(&other.frequencies);
        self.monetary_minor = self.monetary_minor.merged(&other.monetary_minor);
    }

    /// Each axis (last-occasion days, frequencies, monetary values) as its
    /// values with the customers holding them, values ascending: the
    /// distribution's whole content, to send elsewhere.
    pub fn axes(&self) -> [Vec<(i64, u64)>; 3] {
        [
            self.last_occasion_days.counts(),
            self.frequencies.counts(),
            self.monetary_minor.counts(),
        ]
    }

    /// The distribution [`RfmDistribution::axes`] gave; `None` unless each
    /// axis is strictly ascending, without zero counts, and all three count
    /// the same customers.
    pub fn from_axes(axes: [Vec<(i64, u64)>; 3]) -> Option<Self> {
        let valid = |axis: &[(i64, u64)]| {
            axis.iter().all(|(_, count)| *count > 0)
                && axis.windows(2).all(|pair| pair[0].0 < pair[1].0)
        };
        let total = |axis: &[(i64, u64)]| {
            axis.iter()
                .try_fold(0u64, |sum, (_, count)| sum.checked_add(*count))
        };
        if !axes.iter().all(|axis| valid(axis)) {
            return None;
        }
        let totals: Vec<Option<u64>> = axes.iter().map(|axis| total(axis)).collect();
        if totals[0].is_none() || totals.iter().any(|sum| *sum != totals[0]) {
            return None;
        }
        let [days, frequencies, monetary] = axes;
        Some(RfmDistribution {
            last_occasion_days: CountingMultiset::from_sorted_counts(days),
            frequencies: CountingMultiset::from_sorted_counts(frequencies),
            monetary_minor: CountingMultiset::from_sorted_counts(monetary),
        })
    }

    /// Customers counted.
    pub fn len(&self) -> u64 {
        self.last_occasion_days.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one customer with `values`. O(log n).
    pub fn add(&mut self, values: &RfmValues) {
        self.last_occasion_days.insert(values.last_occasion_day);
        self.frequencies.insert(i64::from(values.frequency));
        self.monetary_minor.insert(values.monetary_minor);
    }

    /// Stops counting one customer with `values` (counted before). O(log n).
    pub fn remove(&mut self, values: &RfmValues) {
        self.last_occasion_days.remove(values.last_occasion_day);
        self.frequencies.remove(i64::from(values.frequency));
        self.monetary_minor.remove(values.monetary_minor);
    }

    /// Scores `values` against the distribution, in O(log n):
    /// F = ⌈5·#{c : F(c) ≤ F}/N⌉, M likewise, and
    /// R = ⌈5·#{c : recency(c) ≥ recency}/N⌉, so equal values share a score
    /// and the most recent buyers score highest. `None` for an empty
    /// distribution. Values not counted are scored as if they were
    /// (without being counted), floored at 1.
    pub fn score(&self, values: &RfmValues) -> Option<RfmScores> {
        let population = self.last_occasion_days.len();
        if population == 0 {
            return None;
        }
        let score = |count: u64| -> u8 { (5 * count).div_ceil(population).clamp(1, 5) as u8 };
        Some(RfmScores {
            // recency(c) ≥ recency(x) ⇔ last day(c) ≤ last day(x).
            recency: score(
                self.last_occasion_days
                    .count_at_most(values.last_occasion_day),
            ),
            frequency: score(self.frequencies.count_at_most(i64::from(values.frequency))),
            monetary: score(self.monetary_minor.count_at_most(values.monetary_minor)),
        })
    }
}

impl RfmPopulation {
    pub fn new() -> Self {
        Self::default()
    }

    /// Customers with at least one occasion in the window.
    pub fn len(&self) -> usize {
        self.values_by_customer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values_by_customer.is_empty()
    }

    /// The counts scores rank against.
    pub fn distribution(&self) -> &RfmDistribution {
        &self.distribution
    }

    pub fn values_of(&self, customer_id: &str) -> Option<&RfmValues> {
        self.values_by_customer.get(customer_id)
    }

    /// Replaces a customer's contribution with `values` (`None` removes them,
    /// e.g. when their last in-window occasion ages out). Returns what was
    /// there before. O(log n).
    pub fn upsert(&mut self, customer_id: &str, values: Option<RfmValues>) -> Option<RfmValues> {
        let previous = match values {
            Some(new_values) => self
                .values_by_customer
                .insert(customer_id.to_owned(), new_values),
            None => self.values_by_customer.remove(customer_id),
        };
        if let Some(old) = &previous {
            self.distribution.remove(old);
        }
        if let Some(new_values) = &values {
            self.distribution.add(new_values);
        }
        previous
    }

    /// A member's scores; `None` if they have no occasion in the window.
    pub fn score_of(&self, customer_id: &str) -> Option<RfmScores> {
        self.score(self.values_of(customer_id)?)
    }

    /// Scores `values` against the population (see
    /// [`RfmDistribution::score`]).
    pub fn score(&self, values: &RfmValues) -> Option<RfmScores> {
        self.distribution.score(values)
    }
}

impl PartialEq for RfmPopulation {
    fn eq(&self, other: &Self) -> bool {
        self.values_by_customer == other.values_by_customer
    }
}

impl Eq for RfmPopulation {}

impl Serialize for RfmPopulation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.values_by_customer.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RfmPopulation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let values_by_customer = BTreeMap::<String, RfmValues>::deserialize(deserializer)?;
        let mut population = RfmPopulation::new();
        for (customer_id, values) in values_by_customer {
            population.upsert(&customer_id, Some(values));
        }
        Ok(population)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn occasion(day: i64, net_minor: i64) -> PurchaseOccasion {
        PurchaseOccasion {
            day,
            net_minor,
            orders: 1,
        }
    }

    fn values(last_occasion_day: i64, frequency: u32, monetary_minor: i64) -> RfmValues {
        RfmValues {
            last_occasion_day,
            frequency,
            monetary_minor,
        }
    }

    #[test]
    fn values_count_only_the_window_ending_on_as_of() {
        // Given occasions just outside, at the edge of, and on as_of
        let config = RfmConfig { lookback_days: 30 };
        let occasions = [occasion(69, 1_000), occasion(70, 200), occasion(100, 300)];
        // When the figures are taken at day 100
        let figures = rfm_values(&occasions, 100, &config).expect("in window");
        // Then the window is days 71..=100, so only day 100 counts
        assert_eq!(figures, values(100, 1, 300));
        assert_eq!(figures.recency_days(100), 0);
        // And the figures change when day 100 leaves the window
        assert_eq!(rfm_values_change_on(&occasions, 100, &config), Some(130));
        assert_eq!(rfm_values(&occasions, 130, &config), None);
    }

    #[test]
    fn tied_customers_share_a_score_and_recent_ones_score_high() {
        // Given five customers, two of them identical
        let mut population = RfmPopulation::new();
        population.upsert("a", Some(values(100, 1, 100)));
        population.upsert("b", Some(values(90, 2, 200)));
        population.upsert("c", Some(values(90, 2, 200)));
        population.upsert("d", Some(values(50, 5, 900)));
        population.upsert("e", Some(values(10, 1, 50)));
        // When scored
        let score_of = |id: &str| population.score_of(id).expect("member");
        // Then the most recent buyer has R = 5 and the identical pair share scores
        assert_eq!(score_of("a").recency, 5);
        assert_eq!(score_of("b"), score_of("c"));
        // b and c: 4 of 5 have recency ≥ theirs → R = 4; 4 of 5 have F ≤ 2 → F = 4
        assert_eq!(
            score_of("b"),
            RfmScores {
                recency: 4,
                frequency: 4,
                monetary: 4
            }
        );
        assert_eq!(
            score_of("e"),
            RfmScores {
                recency: 1,
                frequency: 2,
                monetary: 1
            }
        );
        assert_eq!(score_of("e").segment(), RfmSegment::Lost);
        assert_eq!(score_of("d").segment(), RfmSegment::CantLoseThem);
    }

    #[test]
    fn an_update_moves_the_customer_and_everyone_else_at_once() {
        // Given a scored population
        let mut population = RfmPopulation::new();
        population.upsert("a", Some(values(10, 1, 100)));
        population.upsert("b", Some(values(20, 1, 100)));
        assert_eq!(population.score(&values(20, 1, 100)).unwrap().recency, 5);
        // When a buys again
        let previous = population.upsert("a", Some(values(30, 2, 300)));
        // Then the old figures are gone, a leads and b drops
        assert_eq!(previous, Some(values(10, 1, 100)));
        assert_eq!(population.len(), 2);
        assert_eq!(population.score(&values(30, 2, 300)).unwrap().recency, 5);
        assert_eq!(population.score(&values(20, 1, 100)).unwrap().recency, 3);
        // And removing a customer leaves the other alone at the top
        population.upsert("a", None);
        assert_eq!(
            population.score(&values(20, 1, 100)),
            Some(RfmScores {
                recency: 5,
                frequency: 5,
                monetary: 5
            })
        );
        population.upsert("b", None);
        assert!(population.is_empty());
        assert_eq!(population.score(&values(20, 1, 100)), None);
    }

    #[test]
    fn stored_form_does_not_depend_on_update_order() {
        // Given the same final population reached by two different histories
        let mut direct = RfmPopulation::new();
        direct.upsert("a", Some(values(5, 1, 10)));
        direct.upsert("b", Some(values(7, 2, 30)));
        let mut roundabout = RfmPopulation::new();
        roundabout.upsert("b", Some(values(1, 1, 1)));
        roundabout.upsert("c", Some(values(2, 2, 2)));
        roundabout.upsert("a", Some(values(5, 1, 10)));
        roundabout.upsert("c", None);
        roundabout.upsert("b", Some(values(7, 2, 30)));
        // When stored
        let stored = postcard::to_allocvec(&direct).expect("serialise");
        // Then both store the same bytes and a reload scores the same
        assert_eq!(
            stored,
            postcard::to_allocvec(&roundabout).expect("serialise")
        );
        assert_eq!(direct, roundabout);
        let reloaded: RfmPopulation = postcard::from_bytes(&stored).expect("deserialise");
        assert_eq!(
            reloaded.score(&values(5, 1, 10)),
            direct.score(&values(5, 1, 10))
        );
    }

    #[test]
    fn every_grid_cell_has_the_documented_segment() {
        use RfmSegment::*;
        // Rows R = 5 down to 1, columns FM = 1 to 5, as in the doc table.
        let grid = [
            [
                NewCustomers,
                PotentialLoyalists,
                PotentialLoyalists,
                Champions,
                Champions,
            ],
            [
                Promising,
                PotentialLoyalists,
                PotentialLoyalists,
                LoyalCustomers,
                LoyalCustomers,
            ],
            [
                AboutToSleep,
                AboutToSleep,
                NeedAttention,
                LoyalCustomers,
                LoyalCustomers,
            ],
            [Hibernating, Hibernating, AtRisk, AtRisk, CantLoseThem],
            [Lost, Lost, AtRisk, AtRisk, CantLoseThem],
        ];
        for (row, segments) in grid.iter().enumerate() {
            for (column, segment) in segments.iter().enumerate() {
                let recency = 5 - row as u8;
                let frequency_monetary = column as u8 + 1;
                assert_eq!(
                    segment_for(recency, frequency_monetary),
                    *segment,
                    "R={recency} FM={frequency_monetary}"
                );
            }
        }
        let scores = RfmScores {
            recency: 5,
            frequency: 4,
            monetary: 3,
        };
        assert_eq!(scores.frequency_monetary(), 4);
        assert_eq!(scores.segment().to_string(), "Champions");
    }

    fn brute_force_score(all: &[RfmValues], values: &RfmValues) -> RfmScores {
        let population = all.len() as f64;
        let score = |count: usize| (5.0 * count as f64 / population).ceil().clamp(1.0, 5.0) as u8;
        let as_of = 1_000;
        RfmScores {
            recency: score(
                all.iter()
                    .filter(|other| other.recency_days(as_of) >= values.recency_days(as_of))
                    .count(),
            ),
            frequency: score(
                all.iter()
                    .filter(|other| other.frequency <= values.frequency)
                    .count(),
            ),
            monetary: score(
                all.iter()
                    .filter(|other| other.monetary_minor <= values.monetary_minor)
                    .count(),
            ),
        }
    }

    fn arbitrary_values() -> impl Strategy<Value = Option<RfmValues>> {
        // Narrow ranges so ties are common; None removes the customer.
        proptest::option::weighted(
            0.85,
            (990_i64..=1_000, 1_u32..6, -50_i64..300)
                .prop_map(|(day, frequency, monetary)| values(day, frequency, monetary)),
        )
    }

    proptest! {
        #[test]
        fn distributions_of_parts_merge_into_the_whole(
            customers in proptest::collection::vec((0_usize..3, arbitrary_values()), 0..150)
        ) {
            // Given a population spread over three parts
            let all: Vec<RfmValues> = customers.iter().filter_map(|(_, values)| *values).collect();
            let mut merged = RfmDistribution::new();
            for part in 0..3 {
                let mine = customers
                    .iter()
                    .filter(|(owner, _)| *owner == part)
                    .filter_map(|(_, values)| *values);
                // When each part's distribution is merged in
                merged.merge(&RfmDistribution::from_values(mine));
            }
            // Then everyone scores as against the whole population
            let whole = RfmDistribution::from_values(all.iter().copied());
            prop_assert_eq!(merged.len(), all.len() as u64);
            for values in &all {
                prop_assert_eq!(merged.score(values), whole.score(values));
                prop_assert_eq!(merged.score(values), Some(brute_force_score(&all, values)));
            }
        }

        #[test]
        fn incremental_scores_equal_a_full_recomputation(
            updates in proptest::collection::vec((0_usize..25, arbitrary_values()), 1..120)
        ) {
            let mut population = RfmPopulation::new();
            let mut truth: BTreeMap<String, RfmValues> = BTreeMap::new();
            for (step, (customer, update)) in updates.iter().enumerate() {
                let customer_id = format!("c-{customer}");
                population.upsert(&customer_id, *update);
                match update {
                    Some(new_values) => { truth.insert(customer_id, *new_values); }
                    None => { truth.remove(&customer_id); }
                }
                // Check everyone after a few steps and at the end.
                if step % 7 == 0 || step + 1 == updates.len() {
                    let all: Vec<RfmValues> = truth.values().copied().collect();
                    prop_assert_eq!(population.len(), all.len());
                    for (id, values) in &truth {
                        prop_assert_eq!(population.values_of(id), Some(values));
                        prop_assert_eq!(population.score(values), Some(brute_force_score(&all, values)));
                    }
                }
            }
        }
    }
}
