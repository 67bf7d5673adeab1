//! The Gamma-Gamma spend model of Fader, Hardie & Lee (2005), "RFM and CLV:
//! using iso-value curves", and customer lifetime value built from it and
//! BG/NBD.
//!
//! Each occasion's value is Gamma(p, ν) with ν ~ Gamma(q, γ) across customers,
//! so a customer's expected occasion value shrinks their own mean towards the
//! population's, more so the fewer repeat occasions they have. The model
//! assumes spend per occasion is independent of how often one buys.

use serde::{Deserialize, Serialize};

use super::bg_nbd::BgNbdParameters;
use super::config::ClvConfig;
use super::numerics::{Minimum, ln_gamma, minimise_from_starts, polish};
use super::occasions::RepeatSummary;
use super::{Error, Result};

/// p, q and γ as named in the paper; γ is in reporting-currency minor units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GammaGammaParameters {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GammaGammaFit {
    pub parameters: GammaGammaParameters,
    pub log_likelihood: f64,
    pub customers: usize,
}

/// The customer's repeat count and mean repeat value, if the model can use
/// them: it needs at least one repeat occasion and a positive mean (a fully
/// refunded history carries no information about spend).
fn usable_spend(customer: &RepeatSummary) -> Option<(f64, f64)> {
    let mean = customer.mean_repeat_value_minor()?;
    (mean > 0.0).then_some((f64::from(customer.repeat_occasions), mean))
}

impl GammaGammaParameters {
    /// ln density of the customer's mean repeat value m̄ given x:
    /// lnΓ(px+q) − lnΓ(px) − lnΓ(q) + q·lnγ + (px−1)·ln m̄ + px·ln x − (px+q)·ln(γ + x·m̄).
    /// `None` if the customer has no usable repeat spend.
    pub fn log_likelihood(&self, customer: &RepeatSummary) -> Option<f64> {
        let (repeats, mean) = usable_spend(customer)?;
        Some(self.log_likelihood_of(repeats, mean))
    }

    fn log_likelihood_of(&self, repeats: f64, mean: f64) -> f64 {
        let GammaGammaParameters { p, q, gamma } = *self;
        let shape = p * repeats;
        ln_gamma(shape + q) - ln_gamma(shape) - ln_gamma(q)
            + q * gamma.ln()
            + (shape - 1.0) * mean.ln()
            + shape * repeats.ln()
            - (shape + q) * (gamma + repeats * mean).ln()
    }

    /// The population's mean occasion value, pγ/(q−1); `None` when q ≤ 1 and
    /// that mean does not exist.
    pub fn population_mean_value_minor(&self) -> Option<f64> {
        (self.q > 1.0).then(|| self.p * self.gamma / (self.q - 1.0))
    }

    /// E[occasion value | x, m̄] = p(γ + x·m̄)/(px + q − 1), in minor units.
    /// Customers without usable repeat spend get the population mean.
    pub fn expected_order_value_minor(&self, customer: &RepeatSummary) -> Option<f64> {
        let GammaGammaParameters { p, q, gamma } = *self;
        match usable_spend(customer) {
            Some((repeats, mean)) => {
                let denominator = p * repeats + q - 1.0;
                (denominator > 0.0).then(|| p * (gamma + repeats * mean) / denominator)
            }
            None => self.population_mean_value_minor(),
        }
    }
}

/// Buyers' spends as the likelihood needs them. Apart from γ it needs, per
/// repeat count x, only the number of buyers and Σ ln m̄; the one term that
/// mixes γ with each buyer's own mean, Σ ln(γ + x·m̄), is a pass over them.
/// So for a given γ the likelihood in p and q costs one term per distinct
/// x, and the fit maximises over p and q for each γ it tries (the profile
/// likelihood of γ), passing over everyone once per γ.
struct SpendGroups {
    /// Distinct repeat counts, ascending.
    repeats: Vec<f64>,
    counts: Vec<f64>,
    ln_mean_sums: Vec<f64>,
    /// x·m̄ of every buyer (means scaled by `scale`), group by group:
    /// group g holds `products[starts[g]..starts[g + 1]]`.
    products: Vec<f64>,
    starts: Vec<usize>,
    buyers: f64,
}

/// Buyers past which a pass over them is split between two threads.
const PARALLEL_BUYERS: usize = 50_000;

impl SpendGroups {
    /// `spends` sorted by (x, m̄), so sums are taken in an order that
    /// depends on the data only.
    fn new(spends: &[(f64, f64)], scale: f64) -> Self {
        let mut groups = SpendGroups {
            repeats: Vec::new(),
            counts: Vec::new(),
            ln_mean_sums: Vec::new(),
            products: Vec::with_capacity(spends.len()),
            starts: vec![0],
            buyers: spends.len() as f64,
        };
        for (index, (repeats, mean)) in spends.iter().enumerate() {
            let mean = mean / scale;
            if groups.repeats.last() != Some(repeats) {
                if index > 0 {
                    groups.starts.push(index);
                }
                groups.repeats.push(*repeats);
                groups.counts.push(0.0);
                groups.ln_mean_sums.push(0.0);
            }
            let last = groups.repeats.len() - 1;
            groups.counts[last] += 1.0;
            groups.ln_mean_sums[last] += mean.ln();
            groups.products.push(repeats * mean);
        }
        groups.starts.push(spends.len());
        groups
    }

    /// Σ ln(γ + x·m̄) per group.
    fn ln_sums(&self, gamma: f64) -> Vec<f64> {
        let groups = self.repeats.len();
        let sums_over = |buyers: std::ops::Range<usize>| -> Vec<f64> {
            (0..groups)
                .map(|group| {
                    let from = self.starts[group].max(buyers.start);
                    let to = self.starts[group + 1].min(buyers.end);
                    self.products[from..to.max(from)]
                        .iter()
                        .map(|product| (gamma + product).ln())
                        .sum()
                })
                .collect()
        };
        let buyers = self.products.len();
        if buyers < PARALLEL_BUYERS {
            return sums_over(0..buyers);
        }
        // Two halves summed apart and added in a fixed order: the same sums
        // every time, whatever the threads' timing.
        let middle = buyers / 2;
        std::thread::scope(|scope| {
            let second = scope.spawn(|| sums_over(middle..buyers));
            let first = sums_over(0..middle);
            let second = second.join().expect("a likelihood thread");
            first
                .iter()
                .zip(&second)
                .map(|(one, other)| one + other)
                .collect()
        })
    }

    /// The log-likelihood of everyone at (p, q, γ) in scaled units, given
    /// `ln_sums` = [`Self::ln_sums`] of that γ.
    fn log_likelihood(&self, p: f64, q: f64, gamma: f64, ln_sums: &[f64]) -> f64 {
        let (ln_gamma_q, ln_scale) = (ln_gamma(q), gamma.ln());
        let mut total = 0.0;
        let groups = self
            .repeats
            .iter()
            .zip(&self.counts)
            .zip(&self.ln_mean_sums)
            .zip(ln_sums);
        for (((repeats, count), ln_mean_sum), ln_sum) in groups {
            let shape = p * repeats;
            total += count
                * (ln_gamma(shape + q) - ln_gamma(shape) - ln_gamma_q
                    + q * ln_scale
                    + shape * repeats.ln())
                + (shape - 1.0) * ln_mean_sum
                - (shape + q) * ln_sum;
        }
        total
    }

    /// The best (ln p, ln q) for γ = e^`ln_scale`, and −log-likelihood per
    /// buyer there. `warm` is the optimum found for a nearby γ.
    fn profile(&self, ln_scale: f64, warm: Option<&[f64]>) -> Option<Minimum> {
        let gamma = ln_scale.exp();
        let ln_sums = self.ln_sums(gamma);
        let objective = |log_parameters: &[f64]| -> f64 {
            if log_parameters.iter().any(|value| value.abs() > 15.0) {
                return f64::NAN;
            }
            let (p, q) = (log_parameters[0].exp(), log_parameters[1].exp());
            -self.log_likelihood(p, q, gamma, &ln_sums) / self.buyers
        };
        match warm {
            Some(warm) => polish(&objective, warm),
            // Each start puts the population mean pγ/(q−1) at the data's
            // mean of 1.
            None => {
                let starts: Vec<Vec<f64>> = [1.5, 2.0, 3.0, 6.0]
                    .iter()
                    .map(|q: &f64| vec![((q - 1.0) / gamma).ln(), q.ln()])
                    .collect();
                minimise_from_starts(&objective, &starts)
            }
        }
    }
}

/// ln γ (scaled) tried first: a grid over where a fit can be, then a
/// golden-section search around the best point of the grid.
const GRID_FROM: f64 = -10.0;
const GRID_TO: f64 = 10.0;
const GRID_STEP: f64 = 0.5;
const LN_SCALE_TOLERANCE: f64 = 1e-7;

/// Maximum-likelihood fit over every customer with at least one repeat
/// occasion and a positive mean repeat value, by the profile likelihood of
/// γ (see [`SpendGroups`]): its maximum over p and q for each γ, searched
/// over a grid of ln γ and then by golden section.
///
/// Values are divided by their mean before fitting (γ scales with the
/// currency unit, p and q do not), so the same grid and tolerances serve
/// cents and yen alike; γ is scaled back afterwards.
/// What Gamma-Gamma's fit needs of a population: each usable buyer's
/// repeat count x and mean repeat value m̄, sorted. The statistics of parts
/// of a population merge into those of the whole, and the fit depends on
/// them alone, in this order: a population spread over several processes
/// is fitted exactly as if it were in one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GammaGammaStatistics {
    /// (x, m̄), sorted.
    spends: Vec<(f64, f64)>,
}

fn by_spend(left: &(f64, f64), right: &(f64, f64)) -> std::cmp::Ordering {
    left.0.total_cmp(&right.0).then(left.1.total_cmp(&right.1))
}

impl GammaGammaStatistics {
    pub fn of<'a>(customers: impl IntoIterator<Item = &'a RepeatSummary>) -> Self {
        let mut spends: Vec<(f64, f64)> = customers.into_iter().filter_map(usable_spend).collect();
        spends.sort_by(by_spend);
        GammaGammaStatistics { spends }
    }

    /// Adds the buyers of `other` (another part of the population).
    pub fn merge(&mut self, other: &GammaGammaStatistics) {
        self.spends.extend_from_slice(&other.spends);
        self.spends.sort_by(by_spend);
    }

    /// Buyers with a repeat purchase of positive value.
    pub fn customers(&self) -> usize {
        self.spends.len()
    }

    /// The maximum-likelihood fit over these buyers (see [`fit_gamma_gamma`]).
    pub fn fit(&self) -> Result<GammaGammaFit> {
        fit_spends(&self.spends)
    }
}

pub fn fit_gamma_gamma(customers: &[RepeatSummary]) -> Result<GammaGammaFit> {
    GammaGammaStatistics::of(customers).fit()
}

/// The fit over `spends`, sorted by (x, m̄).
fn fit_spends(spends: &[(f64, f64)]) -> Result<GammaGammaFit> {
    if spends.len() < 2 {
        return Err(Error::NotEnoughData {
            model: "Gamma-Gamma",
            reason: format!(
                "{} customers with a repeat purchase of positive value; need at least 2",
                spends.len()
            ),
        });
    }
    let scale = spends.iter().map(|(_, mean)| mean).sum::<f64>() / spends.len() as f64;
    let groups = SpendGroups::new(spends, scale);
    let failed = || Error::FitFailed {
        model: "Gamma-Gamma",
        reason: "the likelihood is not finite anywhere it was tried".into(),
    };
    // The grid, each point warm-started from the one before.
    let mut best: Option<(f64, Minimum)> = None;
    let mut warm: Option<Vec<f64>> = None;
    let points = ((GRID_TO - GRID_FROM) / GRID_STEP).round() as usize;
    for step in 0..=points {
        let ln_scale = GRID_FROM + step as f64 * GRID_STEP;
        let Some(found) = groups
            .profile(ln_scale, warm.as_deref())
            .or_else(|| groups.profile(ln_scale, None))
        else {
            continue;
        };
        warm = Some(found.point.clone());
        if best
            .as_ref()
            .is_none_or(|(_, incumbent)| found.value < incumbent.value)
        {
            best = Some((ln_scale, found));
        }
    }
    let (centre, mut found) = best.ok_or_else(failed)?;
    // Golden section over the grid cells either side of the best point.
    let ratio = (5_f64.sqrt() - 1.0) / 2.0;
    let (mut low, mut high) = (centre - GRID_STEP, centre + GRID_STEP);
    let mut best_ln_scale = centre;
    let start = found.point.clone();
    let mut evaluate = |ln_scale: f64, warm: &[f64]| -> f64 {
        match groups.profile(ln_scale, Some(warm)) {
            Some(minimum) => {
                let value = minimum.value;
                if value < found.value {
                    best_ln_scale = ln_scale;
                    found = minimum;
                }
                value
            }
            None => f64::INFINITY,
        }
    };
    let mut left = high - ratio * (high - low);
    let mut right = low + ratio * (high - low);
    let mut left_value = evaluate(left, &start);
    let mut right_value = evaluate(right, &start);
    while high - low > LN_SCALE_TOLERANCE {
        if left_value <= right_value {
            high = right;
            right = left;
            right_value = left_value;
            left = high - ratio * (high - low);
            left_value = evaluate(left, &start);
        } else {
            low = left;
            left = right;
            left_value = right_value;
            right = low + ratio * (high - low);
            right_value = evaluate(right, &start);
        }
    }
    let parameters = GammaGammaParameters {
        p: found.point[0].exp(),
        q: found.point[1].exp(),
        gamma: best_ln_scale.exp() * scale,
    };
    // Reported on the caller's own units; rescaling shifts it by a constant.
    let log_likelihood = spends
        .iter()
        .map(|(repeats, mean)| parameters.log_likelihood_of(*repeats, *mean))
        .sum();
    Ok(GammaGammaFit {
        parameters,
        log_likelihood,
        customers: spends.len(),
    })
}

/// Days in the month used for discounting.
const DAYS_PER_MONTH: i64 = 30;

/// Expected value of the customer's occasions over `config.horizon_days`,
/// discounted, in reporting-currency minor units.
///
/// The horizon is cut into 30-day months (the last one possibly shorter).
/// Each month's expected purchases are the BG/NBD expectation at its end
/// minus at its start, and are discounted as if paid at the month's end:
/// by (1 + monthly rate)^(end day / 30). That is the convention of the
/// lifetimes library, so results can be cross-checked against it. `None` when
/// the Gamma-Gamma expectation does not exist (q ≤ 1 and no usable spend).
pub fn customer_lifetime_value(
    bg_nbd: &BgNbdParameters,
    gamma_gamma: &GammaGammaParameters,
    customer: &RepeatSummary,
    config: &ClvConfig,
) -> Option<f64> {
    let order_value = gamma_gamma.expected_order_value_minor(customer)?;
    let month_ends = clv_month_ends(config);
    let if_alive = bg_nbd.expected_purchases_if_alive(
        customer.repeat_occasions,
        customer.first_to_as_of_days,
        &month_ends,
    );
    let discounted = discounted_purchases(&if_alive, &month_ends, config);
    Some(order_value * bg_nbd.probability_alive(customer) * discounted)
}

/// The days after `as_of` on which the CLV's months end.
pub fn clv_month_ends(config: &ClvConfig) -> Vec<i64> {
    let mut ends = Vec::new();
    let mut end = 0;
    while end < config.horizon_days {
        end = (end + DAYS_PER_MONTH).min(config.horizon_days);
        ends.push(end);
    }
    ends
}

/// Σ over months of (purchases by the month's end − by its start), each
/// discounted to `as_of`; `purchases_by_end[i]` is the cumulative expectation
/// at `month_ends[i]`.
pub fn discounted_purchases(
    purchases_by_end: &[f64],
    month_ends: &[i64],
    config: &ClvConfig,
) -> f64 {
    let mut discounted = 0.0;
    let mut purchases_so_far = 0.0;
    for (&purchases, &month_end) in purchases_by_end.iter().zip(month_ends) {
        let discount =
            (1.0 + config.monthly_discount_rate).powf(month_end as f64 / DAYS_PER_MONTH as f64);
        discounted += (purchases - purchases_so_far) / discount;
        purchases_so_far = purchases;
    }
    discounted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::simulation::SplitMix64;

    #[test]
    fn spend_statistics_of_parts_merge_into_the_whole_and_fit_alike() {
        // Given 2 000 buyers with varied repeat spend, spread over three parts
        let mut random = SplitMix64::new(7);
        let buyers: Vec<(u64, RepeatSummary)> = (0..2_000)
            .map(|_| {
                let repeats = (random.next_u64() % 6) as u32;
                let value = 500 + (random.gamma(4.0, 1.0) * 1_000.0 * f64::from(repeats)) as i64;
                (random.next_u64() % 3, summary(repeats, value))
            })
            .collect();
        // When each part's statistics are merged
        let mut merged = GammaGammaStatistics::default();
        for part in [1, 2, 0] {
            let mine = buyers
                .iter()
                .filter(|(owner, _)| *owner == part)
                .map(|(_, buyer)| buyer);
            merged.merge(&GammaGammaStatistics::of(mine));
        }
        // Then they and the fit are the whole population's, to the bit
        let whole: Vec<RepeatSummary> = buyers.iter().map(|(_, buyer)| buyer.clone()).collect();
        assert_eq!(merged, GammaGammaStatistics::of(&whole));
        assert_eq!(
            merged.fit().expect("fit"),
            fit_gamma_gamma(&whole).expect("fit")
        );
    }

    fn summary(repeats: u32, repeat_net_minor: i64) -> RepeatSummary {
        RepeatSummary {
            first_occasion_day: 0,
            repeat_occasions: repeats,
            first_to_last_days: 10 * i64::from(repeats),
            first_to_as_of_days: 200,
            repeat_net_minor,
            first_to_second_days: (repeats > 0).then_some(10),
        }
    }

    /// The CDNOW spend fit in the paper, in cents.
    const CDNOW_SPEND: GammaGammaParameters = GammaGammaParameters {
        p: 6.25,
        q: 3.74,
        gamma: 1_544.0,
    };

    #[test]
    fn expected_value_shrinks_towards_the_population_mean() {
        let population = CDNOW_SPEND.population_mean_value_minor().expect("q > 1");
        // Given a one-time buyer, a customer with 1 repeat and one with 50,
        // both repeat buyers averaging 100.00
        let newcomer = CDNOW_SPEND
            .expected_order_value_minor(&summary(0, 0))
            .unwrap();
        let one_repeat = CDNOW_SPEND
            .expected_order_value_minor(&summary(1, 10_000))
            .unwrap();
        let many_repeats = CDNOW_SPEND
            .expected_order_value_minor(&summary(50, 500_000))
            .unwrap();
        // Then the newcomer gets the population mean and more repeats pull
        // the expectation towards the customer's own mean
        assert_eq!(newcomer, population);
        assert!(population < one_repeat && one_repeat < many_repeats && many_repeats < 10_000.0);
        // p(γ + x·m̄)/(px + q − 1) by hand for x = 1, m̄ = 10 000
        assert!((one_repeat - 6.25 * (1_544.0 + 10_000.0) / (6.25 + 2.74)).abs() < 1e-9);
        // And a fully refunded repeat history counts as no spend information
        assert_eq!(
            CDNOW_SPEND.expected_order_value_minor(&summary(2, 0)),
            Some(population)
        );
        assert_eq!(CDNOW_SPEND.log_likelihood(&summary(2, 0)), None);
    }

    #[test]
    fn clv_is_expected_purchases_times_value_discounted_monthly() {
        let bg_nbd = BgNbdParameters {
            r: 0.24,
            alpha: 4.41,
            a: 0.79,
            b: 2.43,
        };
        let customer = summary(3, 30_000);
        let value = CDNOW_SPEND.expected_order_value_minor(&customer).unwrap();
        // Given no discounting, CLV is exactly purchases × value
        let undiscounted = ClvConfig {
            horizon_days: 365,
            monthly_discount_rate: 0.0,
        };
        let clv = customer_lifetime_value(&bg_nbd, &CDNOW_SPEND, &customer, &undiscounted).unwrap();
        let purchases = bg_nbd.expected_purchases(&customer, 365);
        assert!((clv - purchases * value).abs() < 1e-6 * clv);
        // When a 1 % monthly rate applies, CLV drops but by less than a
        // full year's discount
        let discounted =
            customer_lifetime_value(&bg_nbd, &CDNOW_SPEND, &customer, &ClvConfig::default())
                .unwrap();
        assert!(discounted < clv && discounted > clv / 1.01_f64.powf(365.0 / 30.0));
    }

    #[test]
    fn a_horizon_is_cut_into_thirty_day_months_and_a_short_last_one() {
        let months = |horizon_days| {
            clv_month_ends(&ClvConfig {
                horizon_days,
                monthly_discount_rate: 0.0,
            })
        };
        assert_eq!(months(0), Vec::<i64>::new());
        assert_eq!(months(30), vec![30]);
        assert_eq!(months(75), vec![30, 60, 75]);
        assert_eq!(months(365).len(), 13);
        assert_eq!(months(365).last(), Some(&365));
    }

    #[test]
    fn too_few_repeat_buyers_is_an_error() {
        let error = fit_gamma_gamma(&[summary(0, 0), summary(1, 500)]).expect_err("one usable");
        assert!(matches!(
            error,
            Error::NotEnoughData {
                model: "Gamma-Gamma",
                ..
            }
        ));
    }

    #[test]
    fn fit_recovers_the_cdnow_spend_parameters_from_simulated_customers() {
        // Given 4 000 repeat buyers with 1–6 repeat occasions each, whose
        // occasion values in cents are drawn from the paper's CDNOW fit
        // (p = 6.25, q = 3.74, γ = 15.44 dollars) and rounded to the cent
        let customers = simulated_spenders(&CDNOW_SPEND, 4_000, 2005);
        // When fitted
        let fit = fit_gamma_gamma(&customers).expect("fit");
        let fitted = fit.parameters;
        // Then the fit is at least as likely as the truth ...
        let at_truth: f64 = customers
            .iter()
            .filter_map(|customer| CDNOW_SPEND.log_likelihood(customer))
            .sum();
        assert!(
            fit.log_likelihood >= at_truth - 1e-6,
            "{fit:?} vs {at_truth}"
        );
        assert_eq!(fit.customers, 4_000);
        // ... and near the truth. p and γ are the weakly identified pair
        // (their product is what the data pins down): over independent
        // seeds at this sample size they spread by about ±20 % and ±30 %,
        // q by ±5 % and the population mean pγ/(q−1) by ±3 %. The
        // tolerances are about 1.5 times those spreads.
        let relative = |fitted: f64, truth: f64| (fitted - truth).abs() / truth;
        assert!(relative(fitted.p, CDNOW_SPEND.p) < 0.3, "{fitted:?}");
        assert!(relative(fitted.q, CDNOW_SPEND.q) < 0.1, "{fitted:?}");
        assert!(
            relative(fitted.gamma, CDNOW_SPEND.gamma) < 0.45,
            "{fitted:?}"
        );
        assert!(
            relative(
                fitted.population_mean_value_minor().unwrap(),
                CDNOW_SPEND.population_mean_value_minor().unwrap()
            ) < 0.05,
            "{fitted:?}"
        );
    }

    /// The direct fit: Nelder–Mead on all three ln-parameters at once, the
    /// likelihood summed buyer by buyer.
    fn direct_fit(customers: &[RepeatSummary]) -> GammaGammaParameters {
        let spends: Vec<(f64, f64)> = customers.iter().filter_map(usable_spend).collect();
        let scale = spends.iter().map(|(_, mean)| mean).sum::<f64>() / spends.len() as f64;
        let from_log = |point: &[f64]| GammaGammaParameters {
            p: point[0].exp(),
            q: point[1].exp(),
            gamma: point[2].exp(),
        };
        let objective = |point: &[f64]| -> f64 {
            let parameters = from_log(point);
            -spends
                .iter()
                .map(|(repeats, mean)| parameters.log_likelihood_of(*repeats, mean / scale))
                .sum::<f64>()
        };
        let start = |p: f64, q: f64| vec![p.ln(), q.ln(), ((q - 1.0) / p).ln()];
        let starts = [
            start(1.0, 2.0),
            start(4.0, 3.0),
            start(0.5, 1.5),
            start(10.0, 6.0),
        ];
        let found = minimise_from_starts(&objective, &starts).expect("a direct fit");
        let scaled = from_log(&found.point);
        GammaGammaParameters {
            gamma: scaled.gamma * scale,
            ..scaled
        }
    }

    /// `count` repeat buyers with 1–6 repeat occasions whose values are
    /// drawn from `truth`.
    fn simulated_spenders(
        truth: &GammaGammaParameters,
        count: usize,
        seed: u64,
    ) -> Vec<RepeatSummary> {
        let mut random = SplitMix64::new(seed);
        (0..count)
            .map(|_| {
                let repeats = 1 + (random.uniform() * 6.0) as u32;
                let rate = random.gamma(truth.q, 1.0 / truth.gamma);
                let total: i64 = (0..repeats)
                    .map(|_| (random.gamma(truth.p, 1.0 / rate).round() as i64).max(1))
                    .sum();
                summary(repeats, total)
            })
            .collect()
    }

    #[test]
    fn the_profile_fit_is_the_direct_fit() {
        // Given populations small enough to fit directly, from the CDNOW
        // parameters and from a flatter spend distribution
        let flatter = GammaGammaParameters {
            p: 2.0,
            q: 5.0,
            gamma: 3_000.0,
        };
        for (truth, seed) in [(CDNOW_SPEND, 7), (flatter, 11)] {
            let customers = simulated_spenders(&truth, 3_000, seed);
            // When fitted by the profile likelihood and directly
            let profile = fit_gamma_gamma(&customers).expect("fit").parameters;
            let direct = direct_fit(&customers);
            // Then both find the same parameters to 4 significant digits
            let same =
                |left: f64, right: f64| (left - right).abs() <= 1e-4 * left.abs().max(right.abs());
            assert!(
                same(profile.p, direct.p)
                    && same(profile.q, direct.q)
                    && same(profile.gamma, direct.gamma),
                "profile {profile:?}, direct {direct:?}"
            );
        }
    }

    #[test]
    fn a_large_population_is_fitted_whole_on_two_threads_as_on_one() {
        // Given more buyers than one thread sums
        let customers = simulated_spenders(&CDNOW_SPEND, PARALLEL_BUYERS + 5_000, 3);
        let spends: Vec<(f64, f64)> = {
            let mut spends: Vec<(f64, f64)> = customers.iter().filter_map(usable_spend).collect();
            spends
                .sort_by(|left, right| left.0.total_cmp(&right.0).then(left.1.total_cmp(&right.1)));
            spends
        };
        let groups = SpendGroups::new(&spends, 1_000.0);
        // When the per-group sums are taken on two threads
        let parallel = groups.ln_sums(2.5);
        // Then they are the sums buyer by buyer
        for (group, sum) in parallel.iter().enumerate() {
            let repeats = groups.repeats[group];
            let direct: f64 = spends
                .iter()
                .filter(|(x, _)| *x == repeats)
                .map(|(x, mean)| (2.5 + x * mean / 1_000.0).ln())
                .sum();
            assert!(
                (sum - direct).abs() <= 1e-9 * direct.abs(),
                "group {group}: {sum} vs {direct}"
            );
        }
        // And the fit uses every buyer
        let fit = fit_gamma_gamma(&customers).expect("fit");
        assert_eq!(fit.customers, spends.len());
    }
}
