//! Population figures for the dashboard at one `as_of`, gathered in one
//! pass over everyone's scores: counts, revenue windows, the R × FM grid,
//! retention by cohort, the calibration of BG/NBD, the CLV distribution
//! and the at-risk customers ranked by what their loss would cost.
//!
//! Pure like the rest of the analytics: the same people, scores and
//! `as_of` give the same figures in any order they are added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bg_nbd::BgNbdParameters;
use super::scoring::{CustomerInputs, CustomerScores};
use crate::time::civil_from_days;

/// The trailing windows revenue is shown for, in days ending at `as_of`.
pub const REVENUE_WINDOWS_DAYS: [i64; 3] = [30, 90, 365];
/// The calibration plot counts 0, 1, … and this many or more repeats.
pub const CALIBRATION_TOP: u32 = 7;
/// Retention is shown for this many months after the first purchase.
pub const COHORT_MONTHS: usize = 24;
/// Bin edges of the CLV distribution, in major units of the reporting
/// currency; the last bin is open.
pub const CLV_EDGES_MAJOR: [i64; 9] = [0, 10, 25, 50, 100, 250, 500, 1000, 2500];

/// One cell of the R × FM grid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmCell {
    pub people: u64,
    /// Sum of the members' monetary values (net spend in the RFM window).
    pub spend_minor: i64,
}

impl RfmCell {
    pub fn average_spend_minor(&self) -> Option<i64> {
        (self.people > 0).then(|| self.spend_minor / self.people as i64)
    }
}

/// Net revenue of one trailing window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRevenue {
    pub days: i64,
    pub net_minor: i64,
    /// People with a purchase in the window.
    pub buyers: u64,
}

/// The people whose first purchase fell in one month, and how many of them
/// bought again in each month after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortRow {
    /// Months since January 1970 of the first purchase.
    pub month: i64,
    pub size: u64,
    /// `active[k]`: members buying in month `month + k` (k = 0 is everyone);
    /// only the months up to `as_of`.
    pub active: Vec<u64>,
}

/// One bar pair of the calibration plot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRow {
    /// Repeat purchases; the last row counts this many or more.
    pub repeats: u32,
    pub actual: u64,
    /// What the fitted model expects, given each buyer's time since their
    /// first purchase.
    pub expected: f64,
}

/// One bin of the CLV distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClvBin {
    pub from_major: i64,
    /// `None` for the open last bin.
    pub to_major: Option<i64>,
    pub people: u64,
}

/// A customer at risk, with what losing them would cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtRisk {
    pub customer_id: String,
    /// CLV × (1 − P(alive)): the value expected to walk away.
    pub priority_minor: f64,
    pub clv_minor: f64,
    pub p_alive: f64,
    pub reason: String,
}

/// Everything the overview, churn, models and cohorts pages show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub as_of: i64,
    /// People known by `as_of`.
    pub customers: u64,
    /// People with a purchase by `as_of`.
    pub buyers: u64,
    /// Buyers with more than one purchase occasion.
    pub repeat_buyers: u64,
    pub revenue: Vec<WindowRevenue>,
    /// Buyers flagged at risk of churning; the other buyers are active.
    pub at_risk: u64,
    /// People per RFM segment (by slug), lifecycle stage, value tier and
    /// loyalty tier; names with nobody are absent.
    pub rfm_segment: BTreeMap<String, u64>,
    pub lifecycle: BTreeMap<String, u64>,
    pub value_tier: BTreeMap<String, u64>,
    pub loyalty: BTreeMap<String, u64>,
    /// `rfm_grid[r - 1][fm - 1]`.
    pub rfm_grid: [[RfmCell; 5]; 5],
    pub cohorts: Vec<CohortRow>,
    /// Empty without a BG/NBD fit.
    pub calibration: Vec<CalibrationRow>,
    pub clv: Vec<ClvBin>,
    /// Highest priority first; ties by id.
    pub at_risk_ranked: Vec<AtRisk>,
    /// How long buyers took to buy a second time.
    pub second_purchase: SecondPurchase,
}

/// Lower edges, in days, of the buckets of [`SecondPurchase::buckets`]: a
/// week, a month, a quarter, half a year, a year, two years, longer.
pub const SECOND_PURCHASE_EDGES_DAYS: [i64; 7] = [0, 8, 31, 91, 181, 366, 731];

/// Days from buyers' first purchase to their second, over the buyers who
/// made one by `as_of` (purchases on one day are one occasion).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondPurchase {
    pub buyers: u64,
    /// Nearest-rank percentiles; `None` without any second purchase.
    pub p25_days: Option<i64>,
    pub median_days: Option<i64>,
    pub p75_days: Option<i64>,
    pub mean_days: Option<f64>,
    pub buckets: Vec<SecondPurchaseBucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondPurchaseBucket {
    pub from_days: i64,
    /// The bucket's last day; `None` for the last, open one.
    pub to_days: Option<i64>,
    pub buyers: u64,
}

impl SecondPurchase {
    /// From the buyers per gap in days.
    fn from_gaps(gaps: &BTreeMap<i64, u64>) -> Self {
        let buyers: u64 = gaps.values().sum();
        let percentile = |fraction: f64| {
            let rank = ((fraction * buyers as f64) - 1e-9).ceil().max(1.0) as u64;
            let mut seen = 0;
            gaps.iter().find_map(|(&days, &count)| {
                seen += count;
                (seen >= rank).then_some(days)
            })
        };
        let total_days: f64 = gaps
            .iter()
            .map(|(&days, &count)| days as f64 * count as f64)
            .sum();
        let buckets = SECOND_PURCHASE_EDGES_DAYS
            .iter()
            .enumerate()
            .map(|(index, &from_days)| {
                let next = SECOND_PURCHASE_EDGES_DAYS.get(index + 1).copied();
                SecondPurchaseBucket {
                    from_days,
                    to_days: next.map(|next| next - 1),
                    buyers: gaps
                        .range(from_days..next.unwrap_or(i64::MAX))
                        .map(|(_, count)| count)
                        .sum(),
                }
            })
            .collect();
        SecondPurchase {
            buyers,
            p25_days: percentile(0.25),
            median_days: percentile(0.5),
            p75_days: percentile(0.75),
            mean_days: (buyers > 0).then(|| total_days / buyers as f64),
            buckets,
        }
    }
}

impl Overview {
    pub fn rfm_scored(&self) -> u64 {
        self.rfm_grid.iter().flatten().map(|cell| cell.people).sum()
    }

    pub fn repurchase_rate(&self) -> Option<f64> {
        (self.buyers > 0).then(|| self.repeat_buyers as f64 / self.buyers as f64)
    }
}

/// The index in [`CLV_EDGES_MAJOR`] of the bin `clv_minor` falls in
/// (below zero counts as the first).
pub fn clv_bin(clv_minor: f64, minor_per_major: i64) -> usize {
    let major = (clv_minor / minor_per_major as f64).floor() as i64;
    CLV_EDGES_MAJOR
        .iter()
        .rposition(|&edge| major >= edge)
        .unwrap_or(0)
}

/// Minor units in one major unit for a currency of `minor_digits` decimals.
pub fn minor_per_major(minor_digits: u32) -> i64 {
    10_i64.pow(minor_digits.min(6))
}

/// The months after their first purchase in which a buyer bought: bit k
/// for month k (0 is the month of the first purchase), up to
/// [`COHORT_MONTHS`].
pub fn cohort_months(inputs: &CustomerInputs) -> u32 {
    let occasions = &inputs.occasions.reporting;
    let Some(first) = occasions.first() else {
        return 0;
    };
    let first_month = month_of(first.day);
    occasions
        .iter()
        .map(|occasion| month_of(occasion.day) - first_month)
        .filter(|offset| (0..COHORT_MONTHS as i64).contains(offset))
        .fold(0, |months, offset| months | 1 << offset)
}

/// Months since January 1970 of `day`.
pub fn month_of(day: i64) -> i64 {
    let (year, month, _) = civil_from_days(day);
    (year - 1970) * 12 + i64::from(month) - 1
}

/// `YYYY-MM` of a month index.
pub fn format_month(month: i64) -> String {
    format!(
        "{:04}-{:02}",
        1970 + month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// Collects the figures one person at a time. Builders of disjoint parts
/// of the population [`merge`](OverviewBuilder::merge) into the builder of
/// the whole, so the figures can be gathered from several processes.
#[derive(Debug, Serialize, Deserialize)]
pub struct OverviewBuilder {
    overview: Overview,
    /// Buyers by days from their first purchase to `as_of` (T).
    ages: BTreeMap<i64, u64>,
    actual_repeats: Vec<u64>,
    cohorts: BTreeMap<i64, (u64, Vec<u64>)>,
    clv: Vec<u64>,
    minor_per_major: i64,
    /// Buyers by days from their first purchase to their second.
    second_purchase_gaps: BTreeMap<i64, u64>,
}

impl OverviewBuilder {
    /// `minor_digits`: the reporting currency's decimals (2 for USD).
    pub fn new(as_of: i64, minor_digits: u32) -> Self {
        OverviewBuilder {
            overview: Overview {
                as_of,
                customers: 0,
                buyers: 0,
                repeat_buyers: 0,
                revenue: REVENUE_WINDOWS_DAYS
                    .iter()
                    .map(|&days| WindowRevenue {
                        days,
                        net_minor: 0,
                        buyers: 0,
                    })
                    .collect(),
                at_risk: 0,
                rfm_segment: BTreeMap::new(),
                lifecycle: BTreeMap::new(),
                value_tier: BTreeMap::new(),
                loyalty: BTreeMap::new(),
                rfm_grid: [[RfmCell::default(); 5]; 5],
                cohorts: Vec::new(),
                calibration: Vec::new(),
                clv: Vec::new(),
                at_risk_ranked: Vec::new(),
                second_purchase: SecondPurchase::default(),
            },
            ages: BTreeMap::new(),
            second_purchase_gaps: BTreeMap::new(),
            actual_repeats: vec![0; CALIBRATION_TOP as usize + 1],
            cohorts: BTreeMap::new(),
            clv: vec![0; CLV_EDGES_MAJOR.len()],
            minor_per_major: minor_per_major(minor_digits),
        }
    }

    /// Adds one person known by `as_of`, with their inputs and scores at it.
    pub fn add(&mut self, customer_id: &str, inputs: &CustomerInputs, scores: &CustomerScores) {
        let as_of = self.overview.as_of;
        let figures = &mut self.overview;
        figures.customers += 1;
        if let Some(stage) = scores.lifecycle {
            *figures.lifecycle.entry(stage.as_str().into()).or_default() += 1;
        }
        if let Some(tier) = scores.value_tier {
            *figures.value_tier.entry(tier.as_str().into()).or_default() += 1;
        }
        *figures
            .loyalty
            .entry(scores.loyalty.tier.clone())
            .or_default() += 1;
        if let Some(rfm) = &scores.rfm {
            *figures
                .rfm_segment
                .entry(rfm.segment.slug().into())
                .or_default() += 1;
            let fm = (rfm.f + rfm.m).div_ceil(2);
            if (1..=5).contains(&rfm.r) && (1..=5).contains(&fm) {
                let cell = &mut figures.rfm_grid[usize::from(rfm.r - 1)][usize::from(fm - 1)];
                cell.people += 1;
                cell.spend_minor += rfm.monetary_minor;
            }
        }
        let Some(summary) = &inputs.summary else {
            return;
        };
        figures.buyers += 1;
        if summary.repeat_occasions > 0 {
            figures.repeat_buyers += 1;
        }
        for window in &mut figures.revenue {
            let from = as_of - window.days;
            let mut bought = false;
            for occasion in inputs.occasions.reporting.iter().rev() {
                if occasion.day <= from {
                    break;
                }
                window.net_minor += occasion.net_minor;
                bought = true;
            }
            window.buyers += u64::from(bought);
        }
        *self.ages.entry(summary.first_to_as_of_days).or_default() += 1;
        if let Some(gap) = summary.first_to_second_days {
            *self.second_purchase_gaps.entry(gap).or_default() += 1;
        }
        self.actual_repeats[summary.repeat_occasions.min(CALIBRATION_TOP) as usize] += 1;
        let first_month = month_of(summary.first_occasion_day);
        let (size, active) = self
            .cohorts
            .entry(first_month)
            .or_insert_with(|| (0, vec![0; COHORT_MONTHS]));
        *size += 1;
        let months = cohort_months(inputs);
        for (offset, people) in active.iter_mut().enumerate() {
            *people += u64::from(months >> offset & 1);
        }
        let Some(churn) = &scores.churn else {
            return;
        };
        let clv_minor = scores
            .clv
            .as_ref()
            .and_then(|clv| clv.expected_value_minor)
            .unwrap_or(0.0);
        self.clv[clv_bin(clv_minor, self.minor_per_major)] += 1;
        if churn.at_risk {
            figures.at_risk += 1;
            let p_alive = churn.p_alive.unwrap_or(1.0);
            figures.at_risk_ranked.push(AtRisk {
                customer_id: customer_id.to_owned(),
                priority_minor: clv_minor * (1.0 - p_alive),
                clv_minor,
                p_alive,
                reason: churn.reason.clone(),
            });
        }
    }

    /// Adds the people `other` collected: a disjoint part of the population
    /// at the same `as_of`.
    pub fn merge(&mut self, other: OverviewBuilder) {
        fn add_counts(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
            for (name, count) in from {
                *into.entry(name).or_default() += count;
            }
        }
        fn add_each(into: &mut [u64], from: &[u64]) {
            for (into, from) in into.iter_mut().zip(from) {
                *into += from;
            }
        }
        let figures = &mut self.overview;
        let theirs = other.overview;
        figures.customers += theirs.customers;
        figures.buyers += theirs.buyers;
        figures.repeat_buyers += theirs.repeat_buyers;
        figures.at_risk += theirs.at_risk;
        for (window, their) in figures.revenue.iter_mut().zip(&theirs.revenue) {
            window.net_minor += their.net_minor;
            window.buyers += their.buyers;
        }
        add_counts(&mut figures.rfm_segment, theirs.rfm_segment);
        add_counts(&mut figures.lifecycle, theirs.lifecycle);
        add_counts(&mut figures.value_tier, theirs.value_tier);
        add_counts(&mut figures.loyalty, theirs.loyalty);
        for (row, their_row) in figures.rfm_grid.iter_mut().zip(&theirs.rfm_grid) {
            for (cell, their) in row.iter_mut().zip(their_row) {
                cell.people += their.people;
                cell.spend_minor += their.spend_minor;
            }
        }
        figures.at_risk_ranked.extend(theirs.at_risk_ranked);
        for (age, people) in other.ages {
            *self.ages.entry(age).or_default() += people;
        }
        for (gap, people) in other.second_purchase_gaps {
            *self.second_purchase_gaps.entry(gap).or_default() += people;
        }
        add_each(&mut self.actual_repeats, &other.actual_repeats);
        add_each(&mut self.clv, &other.clv);
        for (month, (size, active)) in other.cohorts {
            let (into_size, into_active) = self
                .cohorts
                .entry(month)
                .or_insert_with(|| (0, vec![0; COHORT_MONTHS]));
            *into_size += size;
            add_each(into_active, &active);
        }
    }

    /// The figures, with the model's side of the calibration plot from
    /// `bg_nbd` (none without a fit).
    pub fn finish(mut self, bg_nbd: Option<&BgNbdParameters>) -> Overview {
        self.overview.second_purchase = SecondPurchase::from_gaps(&self.second_purchase_gaps);
        let as_of_month = month_of(self.overview.as_of);
        self.overview.cohorts = self
            .cohorts
            .into_iter()
            .map(|(month, (size, mut active))| {
                let months = (as_of_month - month + 1).clamp(0, COHORT_MONTHS as i64);
                active.truncate(months as usize);
                CohortRow {
                    month,
                    size,
                    active,
                }
            })
            .collect();
        if let Some(parameters) = bg_nbd {
            let mut expected = vec![0.0; CALIBRATION_TOP as usize + 1];
            for (&age_days, &people) in &self.ages {
                let mut below_top = 0.0;
                for repeats in 0..CALIBRATION_TOP {
                    let probability = parameters.probability_of_repeats(repeats, age_days);
                    expected[repeats as usize] += probability * people as f64;
                    below_top += probability;
                }
                expected[CALIBRATION_TOP as usize] += (1.0 - below_top).max(0.0) * people as f64;
            }
            self.overview.calibration = (0..=CALIBRATION_TOP)
                .map(|repeats| CalibrationRow {
                    repeats,
                    actual: self.actual_repeats[repeats as usize],
                    expected: expected[repeats as usize],
                })
                .collect();
        }
        self.overview.clv = CLV_EDGES_MAJOR
            .iter()
            .enumerate()
            .map(|(index, &from_major)| ClvBin {
                from_major,
                to_major: CLV_EDGES_MAJOR.get(index + 1).copied(),
                people: self.clv[index],
            })
            .collect();
        self.overview.at_risk_ranked.sort_by(|left, right| {
            right
                .priority_minor
                .total_cmp(&left.priority_minor)
                .then_with(|| left.customer_id.cmp(&right.customer_id))
        });
        self.overview
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::config::AnalyticsConfig;
    use crate::analytics::rfm::RfmPopulation;
    use crate::analytics::scoring::{CustomerFacts, OrderHistory, PopulationModels, inputs, score};
    use crate::time::days_from_civil;

    fn order(id: &str, day: i64, total_minor: i64) -> OrderHistory {
        OrderHistory {
            order_id: id.into(),
            placed_day: day,
            placed_at_ms: day * 86_400_000,
            currency: "USD".into(),
            total_minor,
            cancelled_day: None,
            refunds: Vec::new(),
        }
    }

    fn person(orders: Vec<OrderHistory>) -> CustomerFacts {
        CustomerFacts {
            first_seen_day: orders.first().map(|order| order.placed_day),
            orders,
            ..CustomerFacts::default()
        }
    }

    /// `count` people `p00`…; `order(index, n)` says whether person
    /// `index` has an `n`th order (n < 5), and its day and total.
    fn generated(
        count: u32,
        order_of: impl Fn(u32, u32) -> (bool, i64, i64),
    ) -> Vec<(String, CustomerFacts)> {
        (0..count)
            .map(|index| {
                let orders = (0..5)
                    .filter_map(|n| {
                        let (placed, day, total) = order_of(index, n);
                        placed.then(|| order(&format!("o{index}-{n}"), day, total))
                    })
                    .collect();
                (format!("p{index:02}"), person(orders))
            })
            .collect()
    }

    fn borrowed(people: &[(String, CustomerFacts)]) -> Vec<(&str, CustomerFacts)> {
        people
            .iter()
            .map(|(id, facts)| (id.as_str(), facts.clone()))
            .collect()
    }

    fn overview_of(people: &[(&str, CustomerFacts)], as_of: i64) -> Overview {
        overview_in_parts(people, as_of, 1)
    }

    /// The overview gathered by `parts` builders, each over every
    /// `parts`-th person, merged through their serialised form.
    fn overview_in_parts(people: &[(&str, CustomerFacts)], as_of: i64, parts: usize) -> Overview {
        let config = AnalyticsConfig::default();
        let mut rfm = RfmPopulation::new();
        let mut summaries = Vec::new();
        for (id, facts) in people {
            let inputs = inputs(facts, as_of, &config);
            rfm.upsert(id, inputs.rfm);
            summaries.extend(inputs.summary);
        }
        let models = PopulationModels::fit(&summaries, as_of, &config);
        let mut builders: Vec<OverviewBuilder> =
            (0..parts).map(|_| OverviewBuilder::new(as_of, 2)).collect();
        for (index, (id, facts)) in people.iter().enumerate() {
            let scores = score(facts, as_of, rfm.distribution(), &models, &config);
            builders[index % parts].add(id, &inputs(facts, as_of, &config), &scores);
        }
        let mut whole = OverviewBuilder::new(as_of, 2);
        for part in builders.into_iter().rev() {
            let sent = postcard::to_allocvec(&part).expect("a builder serialises");
            whole.merge(postcard::from_bytes(&sent).expect("and reads back"));
        }
        whole.finish(models.bg_nbd.as_ref().ok().map(|fit| &fit.parameters))
    }

    #[test]
    fn second_purchase_percentiles_and_buckets_by_hand() {
        // Gaps 3, 10, 10, 40 and 400 days
        let gaps: BTreeMap<i64, u64> = [(3, 1), (10, 2), (40, 1), (400, 1)].into();
        let second = SecondPurchase::from_gaps(&gaps);
        assert_eq!(second.buyers, 5);
        // Nearest rank: ceil(0.25·5) = 2nd, ceil(0.5·5) = 3rd, ceil(0.75·5) = 4th
        assert_eq!(
            (second.p25_days, second.median_days, second.p75_days),
            (Some(10), Some(10), Some(40))
        );
        assert_eq!(second.mean_days, Some(463.0 / 5.0));
        let counts: Vec<u64> = second.buckets.iter().map(|bucket| bucket.buyers).collect();
        assert_eq!(counts, [1, 2, 1, 0, 0, 1, 0]);
        assert_eq!(second.buckets[0].to_days, Some(7));
        assert_eq!(second.buckets[6].to_days, None);
        let none = SecondPurchase::from_gaps(&BTreeMap::new());
        assert_eq!(
            (none.buyers, none.median_days, none.mean_days),
            (0, None, None)
        );
    }

    #[test]
    fn cohorts_revenue_and_repurchase_on_a_hand_computed_example() {
        // Given three buyers and a visitor, as of 2024-03-31
        let day = |month, day| days_from_civil(2024, month, day);
        let as_of = day(3, 31);
        let people = [
            // January cohort: buys in Jan, Feb and Mar (two orders on one day)
            (
                "a",
                person(vec![
                    order("a1", day(1, 5), 1000),
                    order("a2", day(2, 10), 2000),
                    order("a3", day(3, 20), 500),
                    order("a4", day(3, 20), 500),
                ]),
            ),
            // January cohort: buys once
            ("b", person(vec![order("b1", day(1, 20), 4000)])),
            // March cohort
            ("c", person(vec![order("c1", day(3, 2), 3000)])),
            (
                "visitor",
                CustomerFacts {
                    first_seen_day: Some(day(2, 1)),
                    ..CustomerFacts::default()
                },
            ),
        ];
        // When the overview is gathered
        let overview = overview_of(&people, as_of);
        // Then the counts, the windows and the triangle are as by hand
        assert_eq!(overview.customers, 4);
        assert_eq!(overview.buyers, 3);
        assert_eq!(overview.repeat_buyers, 1);
        assert_eq!(overview.repurchase_rate(), Some(1.0 / 3.0));
        // 30 days: Mar 2 … Mar 31 → a's 1000 on Mar 20 and c's 3000
        assert_eq!(overview.revenue[0].net_minor, 4000);
        assert_eq!(overview.revenue[0].buyers, 2);
        // 90 days: Jan 2 … Mar 31 → everything
        assert_eq!(overview.revenue[1].net_minor, 11_000);
        assert_eq!(overview.revenue[1].buyers, 3);
        let january = month_of(day(1, 1));
        assert_eq!(format_month(january), "2024-01");
        assert_eq!(
            overview.cohorts,
            vec![
                CohortRow {
                    month: january,
                    size: 2,
                    active: vec![2, 1, 1],
                },
                CohortRow {
                    month: january + 2,
                    size: 1,
                    active: vec![1],
                },
            ]
        );
        // Only a bought a second time: 36 days after the first (Jan 5 → Feb 10)
        let second = &overview.second_purchase;
        assert_eq!(second.buyers, 1);
        assert_eq!(
            (second.p25_days, second.median_days, second.p75_days),
            (Some(36), Some(36), Some(36))
        );
        assert_eq!(second.mean_days, Some(36.0));
        let bucket: Vec<u64> = second.buckets.iter().map(|bucket| bucket.buyers).collect();
        assert_eq!(bucket, [0, 0, 1, 0, 0, 0, 0], "31-90 days");
        // Every scored buyer is in exactly one grid cell
        assert_eq!(overview.rfm_scored(), 3);
        // Calibration counts each buyer once, by repeats
        let actual: Vec<u64> = overview.calibration.iter().map(|row| row.actual).collect();
        if !actual.is_empty() {
            assert_eq!(actual[0], 2);
            assert_eq!(actual[2], 1);
        }
        assert_eq!(overview.clv.iter().map(|bin| bin.people).sum::<u64>(), 3);
    }

    #[test]
    fn the_order_people_are_added_in_does_not_matter() {
        let day = |month, day| days_from_civil(2024, month, day);
        let people = generated(40, |index, n| {
            (
                n < index % 5,
                day(1 + n % 3, 1 + index % 27),
                1000 + 10 * i64::from(index),
            )
        });
        let borrowed = borrowed(&people);
        let mut reversed = borrowed.clone();
        reversed.reverse();
        let as_of = day(4, 30);
        assert_eq!(overview_of(&borrowed, as_of), overview_of(&reversed, as_of));
    }

    #[test]
    fn builders_of_parts_merge_into_the_overview_of_the_whole() {
        let day = |month, day| days_from_civil(2024, month, day);
        let people = generated(60, |index, n| {
            (
                n < index % 4,
                day(1 + (n + index) % 4, 1 + index % 27),
                900 + 25 * i64::from(index),
            )
        });
        let borrowed = borrowed(&people);
        let as_of = day(6, 30);
        let whole = overview_of(&borrowed, as_of);
        assert!(whole.at_risk > 0 && !whole.cohorts.is_empty(), "{whole:?}");
        assert_eq!(overview_in_parts(&borrowed, as_of, 3), whole);
    }
}
