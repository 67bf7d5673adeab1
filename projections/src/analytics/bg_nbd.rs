//! The BG/NBD model of Fader, Hardie & Lee (2005), "Counting your customers
//! the easy way": fits the population's purchase and drop-out rates, then
//! gives each customer P(alive) and their expected purchases ahead.
//!
//! Time is in weeks (days / 7) as in the paper, so fitted parameters can be
//! compared with published ones; inputs and horizons stay in whole days.
//! The parameter names r, α, a, b are the paper's, kept so every formula can
//! be checked against it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::numerics::{Minimum, ln_gamma, log_add_exp, minimise_from_starts, polish};
use super::occasions::RepeatSummary;
use super::{Error, Result};

pub(crate) const DAYS_PER_WEEK: f64 = 7.0;
/// Fitting works on ln-parameters; beyond ±15 (a factor of ~3·10⁶) the
/// likelihood is flat and the optimiser would only wander.
const LOG_PARAMETER_LIMIT: f64 = 15.0;

pub(crate) fn weeks(days: i64) -> f64 {
    days as f64 / DAYS_PER_WEEK
}

/// Transactions while alive ~ Poisson(λ) with λ ~ Gamma(r, α) (α a rate, per
/// week); after each repeat purchase a customer drops out with probability
/// p ~ Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BgNbdParameters {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BgNbdFit {
    pub parameters: BgNbdParameters,
    /// Total log-likelihood of the fitted customers at `parameters`.
    pub log_likelihood: f64,
    pub customers: usize,
}

/// Restricts a fit to customers whose first occasion falls in these days
/// (both inclusive), e.g. one acquisition quarter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cohort {
    pub first_day_from: i64,
    pub first_day_to: i64,
}

impl BgNbdParameters {
    /// ln of the customer's likelihood, Fader et al. (2005) eq. 6, written as
    /// A₁ + A₂ + ln(e^A₃ + δ(x>0)·e^A₄) so that large x or T cannot overflow.
    pub fn log_likelihood(&self, customer: &RepeatSummary) -> f64 {
        let repeats = f64::from(customer.repeat_occasions);
        let per_repeat_count = self.terms_for_repeats(repeats);
        per_repeat_count
            + self.recency_terms(
                repeats,
                weeks(customer.first_to_last_days),
                weeks(customer.first_to_as_of_days),
            )
    }

    /// A₁ + A₂: the part that depends on x only.
    fn terms_for_repeats(&self, repeats: f64) -> f64 {
        let BgNbdParameters { r, alpha, a, b } = *self;
        let a1 = ln_gamma(r + repeats) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_gamma(a + b) + ln_gamma(b + repeats) - ln_gamma(b) - ln_gamma(a + b + repeats);
        a1 + a2
    }

    /// ln(e^A₃ + δ(x>0)·e^A₄).
    fn recency_terms(&self, repeats: f64, first_to_last_weeks: f64, age_weeks: f64) -> f64 {
        let BgNbdParameters { r, alpha, a, b } = *self;
        RecencyLogs {
            r_plus_repeats: r + repeats,
            drop_out_odds: a.ln() - (b + repeats - 1.0).ln(),
            ln_alpha_plus_last: (alpha + first_to_last_weeks).ln(),
            ln_alpha_plus_age: (alpha + age_weeks).ln(),
        }
        .terms(repeats)
    }

    /// P(alive at `as_of` | x, t_x, T), eq. 11. A customer with no repeat
    /// purchase cannot have dropped out yet under BG/NBD, so this is 1 for
    /// them; the churn rules judge one-time buyers another way.
    pub fn probability_alive(&self, customer: &RepeatSummary) -> f64 {
        if customer.repeat_occasions == 0 {
            return 1.0;
        }
        let BgNbdParameters { r, alpha, a, b } = *self;
        let repeats = f64::from(customer.repeat_occasions);
        let age_weeks = weeks(customer.first_to_as_of_days);
        let first_to_last_weeks = weeks(customer.first_to_last_days);
        // P = 1 / (1 + a/(b+x−1) · ((α+T)/(α+t_x))^(r+x)), taken in logs.
        let log_odds_dead = a.ln() - (b + repeats - 1.0).ln()
            + (r + repeats) * ((alpha + age_weeks).ln() - (alpha + first_to_last_weeks).ln());
        logistic(-log_odds_dead)
    }

    /// Expected occasions in the `horizon_days` after `as_of` (eq. 10).
    pub fn expected_purchases(&self, customer: &RepeatSummary, horizon_days: i64) -> f64 {
        self.probability_alive(customer)
            * self.expected_purchases_if_alive(
                customer.repeat_occasions,
                customer.first_to_as_of_days,
                &[horizon_days],
            )[0]
    }

    /// P(X(t) = x): the chance that a customer drawn from the population
    /// makes exactly `repeats` repeat purchases in the `age_days` after
    /// their first (Fader et al. 2005, eq. 8). Summed over customers, it
    /// gives the model's side of the paper's calibration plot.
    pub fn probability_of_repeats(&self, repeats: u32, age_days: i64) -> f64 {
        let BgNbdParameters { r, alpha, a, b } = *self;
        let t = weeks(age_days.max(0));
        if t == 0.0 {
            return if repeats == 0 { 1.0 } else { 0.0 };
        }
        let x = f64::from(repeats);
        let ln_beta = |p: f64, q: f64| ln_gamma(p) + ln_gamma(q) - ln_gamma(p + q);
        let ln_stay = (alpha / (alpha + t)).ln();
        let ln_rate = (t / (alpha + t)).ln();
        // ln of Γ(r+j) / (Γ(r) j!) · (α/(α+t))^r · (t/(α+t))^j
        let ln_poisson_gamma =
            |j: f64| ln_gamma(r + j) - ln_gamma(r) - ln_gamma(j + 1.0) + r * ln_stay + j * ln_rate;
        let alive_all_along = (ln_beta(a, b + x) - ln_beta(a, b) + ln_poisson_gamma(x)).exp();
        if repeats == 0 {
            return alive_all_along;
        }
        let fewer: f64 = (0..repeats)
            .map(|j| ln_poisson_gamma(f64::from(j)).exp())
            .sum();
        let dropped_after_last =
            (ln_beta(a + 1.0, b + x - 1.0) - ln_beta(a, b)).exp() * (1.0 - fewer).max(0.0);
        alive_all_along + dropped_after_last
    }

    /// Eq. 10 without the P(alive) factor, for each of `horizons_days`: what
    /// a customer with `repeats` repeat occasions whose first occasion was
    /// `age_days` before `as_of` is expected to buy if still alive. It does
    /// not depend on the day of their last occasion, so customers sharing
    /// (x, T) share it, and one call for many horizons computes what they
    /// have in common once.
    pub fn expected_purchases_if_alive(
        &self,
        repeats: u32,
        age_days: i64,
        horizons_days: &[i64],
    ) -> Vec<f64> {
        let repeats = f64::from(repeats);
        let age_weeks = weeks(age_days);
        if self.a > CONCENTRATED_BETA && self.b > CONCENTRATED_BETA {
            return self.expected_purchases_if_alive_by_quadrature(
                repeats,
                age_weeks,
                horizons_days,
            );
        }
        horizons_days
            .iter()
            .map(|&horizon_days| {
                if horizon_days <= 0 {
                    0.0
                } else {
                    self.expected_purchases_if_alive_by_series(
                        repeats,
                        age_weeks,
                        weeks(horizon_days),
                    )
                }
            })
            .collect()
    }

    /// The same expectation as an integral over the drop-out probability.
    /// Alive after x repeats, p ~ Beta(a, b+x) and λ ~ Gamma(r+x, α+T);
    /// an alive customer makes (1 − e^(−λpt))/p purchases in t on average,
    /// and E_λ[e^(−λpt)] = ((α+T)/(α+T+pt))^(r+x). So
    ///   E = ∫ (1 − ((α+T)/(α+T+pt))^(r+x)) / p · Beta(p; a, b+x) dp.
    /// Used when a and b are both large: Beta is then narrow and close to a
    /// normal shape, so the trapezoidal rule over ±12 standard deviations
    /// converges exponentially fast in the number of points, while the
    /// series' terms would grow like e^(ab/(a+b)) and overflow. The points
    /// and their Beta weights are shared by all horizons.
    fn expected_purchases_if_alive_by_quadrature(
        &self,
        repeats: f64,
        age_weeks: f64,
        horizons_days: &[i64],
    ) -> Vec<f64> {
        let BgNbdParameters { r, alpha, a, b } = *self;
        let (shape_a, shape_b) = (a, b + repeats);
        let total = shape_a + shape_b;
        let mean = shape_a / total;
        let spread = (shape_a * shape_b / (total * total * (total + 1.0))).sqrt();
        let low = (mean - 12.0 * spread).max(f64::MIN_POSITIVE);
        let high = (mean + 12.0 * spread).min(1.0);
        let log_density = |p: f64| (shape_a - 1.0) * p.ln() + (shape_b - 1.0) * (-p).ln_1p();
        let peak = log_density(mean);
        let step = (high - low) / QUADRATURE_INTERVALS as f64;
        let mut points = [(0.0, 0.0); QUADRATURE_INTERVALS + 1];
        let mut weights = 0.0;
        for (index, point) in points.iter_mut().enumerate() {
            let trapezoid = if index == 0 || index == QUADRATURE_INTERVALS {
                0.5
            } else {
                1.0
            };
            let p = low + step * index as f64;
            let weight = trapezoid * (log_density(p) - peak).exp();
            *point = (p, weight);
            weights += weight;
        }
        horizons_days
            .iter()
            .map(|&horizon_days| {
                if horizon_days <= 0 {
                    return 0.0;
                }
                let scaled_horizon = weeks(horizon_days) / (alpha + age_weeks);
                let weighted: f64 = points
                    .iter()
                    .map(|&(p, weight)| {
                        let expected_given =
                            -(-(r + repeats) * (p * scaled_horizon).ln_1p()).exp_m1() / p;
                        weight * expected_given
                    })
                    .sum();
                weighted / weights
            })
            .collect()
    }

    /// The closed form by Gauss's hypergeometric series.
    ///
    /// z is always below 1, so the series of
    /// (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) · ₂F₁(r+x, b+x; a+b+x−1; z)]
    /// with z = t/(α+T+t) converges, but for a
    /// heavy buyer (large x) near z = 1 its terms first grow like kˣ and
    /// overflow long before they shrink. Euler's transformation
    /// ₂F₁(A,B;C;z) = (1−z)^(C−A−B) ₂F₁(C−A, C−B; C; z) gives parameters
    /// that no longer grow with x, and the power of (1−z) cancels against
    /// the leading factor, leaving
    ///   (a+b+x−1)/(a−1) · [1 − (1−z)^(a−1) · ₂F₁(a+b−1−r, a−1; a+b+x−1; z)].
    /// With ε = a−1 and ₂F₁(·, ε; ·; z) = 1 + ε·S this is
    ///   −C·expm1(ε·ln(1−z))/ε − (1−z)^ε · C·S,  C = a+b+x−1,
    /// which stays finite as a → 1 (where the paper's form divides 0 by 0)
    /// and as a+b+x−1 → 0. C·S is summed term by term below.
    fn expected_purchases_if_alive_by_series(
        &self,
        repeats: f64,
        age_weeks: f64,
        horizon_weeks: f64,
    ) -> f64 {
        let BgNbdParameters { r, alpha, a, b } = *self;
        let epsilon = a - 1.0;
        let c = a + b + repeats - 1.0;
        let upper = b + epsilon - r;
        let z = horizon_weeks / (alpha + age_weeks + horizon_weeks);
        let log_one_minus_z = (alpha + age_weeks).ln() - (alpha + age_weeks + horizon_weeks).ln();

        // C·S = Σ_{k≥1} u_k, u_1 = A·z, u_{k+1} = u_k·(A+k)(ε+k)/((C+k)(k+1))·z.
        let mut term = upper * z;
        let mut sum = term;
        for k in 1..MAX_SERIES_TERMS {
            let k = k as f64;
            let ratio = (upper + k) * (epsilon + k) / ((c + k) * (k + 1.0)) * z;
            term *= ratio;
            sum += term;
            if ratio.abs() < 1.0 && term.abs() <= SERIES_TOLERANCE * sum.abs() {
                break;
            }
        }

        let leading = if epsilon == 0.0 {
            -c * log_one_minus_z
        } else {
            -c * (epsilon * log_one_minus_z).exp_m1() / epsilon
        };
        leading - (epsilon * log_one_minus_z).exp() * sum
    }
}

/// The series converges geometrically with ratio z < 1; this bounds the work
/// when z is within 1e-5 of 1 (horizons vastly longer than anyone's history).
const MAX_SERIES_TERMS: usize = 1_000_000;
/// Above this, for both a and b, expected purchases are integrated instead
/// of summed (see `expected_purchases_if_alive_by_quadrature`).
const CONCENTRATED_BETA: f64 = 30.0;
/// Points of the trapezoidal rule, 0.375 standard deviations apart.
const QUADRATURE_INTERVALS: usize = 64;
const SERIES_TOLERANCE: f64 = 1e-17;

fn logistic(log_odds: f64) -> f64 {
    if log_odds >= 0.0 {
        1.0 / (1.0 + (-log_odds).exp())
    } else {
        let odds = log_odds.exp();
        odds / (1.0 + odds)
    }
}

/// The logarithms A₃ and A₄ are made of, so that callers can compute each
/// once per distinct x or day rather than once per customer.
struct RecencyLogs {
    r_plus_repeats: f64,
    /// ln a − ln(b + x − 1), the odds of having dropped out after the last
    /// repeat; unused when x = 0.
    drop_out_odds: f64,
    ln_alpha_plus_last: f64,
    ln_alpha_plus_age: f64,
}

impl RecencyLogs {
    /// ln(e^A₃ + δ(x>0)·e^A₄).
    fn terms(&self, repeats: f64) -> f64 {
        let a3 = -self.r_plus_repeats * self.ln_alpha_plus_age;
        if repeats == 0.0 {
            return a3;
        }
        let a4 = self.drop_out_odds - self.r_plus_repeats * self.ln_alpha_plus_last;
        log_add_exp(a3, a4)
    }
}

/// Customers with the same (x, t_x, T) in days contribute identical terms;
/// grouping them makes each likelihood evaluation proportional to the number
/// of distinct histories rather than customers. Days are kept as indexes
/// into one table of distinct day counts, so each evaluation takes
/// ln(α + t) once per distinct day, not once per history.
struct GroupedHistories {
    /// Sorted by x.
    rows: Vec<HistoryGroup>,
    /// Every distinct t_x and T, in weeks, ascending.
    weeks: Vec<f64>,
    customers: f64,
}

#[derive(Clone)]
struct HistoryGroup {
    repeats: f64,
    /// Indexes into [`GroupedHistories::weeks`].
    first_to_last: usize,
    age: usize,
    count: f64,
}

/// What BG/NBD's fit needs of a population: how many customers share each
/// history (x, t_x, T in days). The statistics of parts of a population
/// merge into those of the whole (counts add), and the fit depends on them
/// alone, in key order: a population spread over several processes is
/// fitted exactly as if it were in one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgNbdStatistics {
    counts: BTreeMap<(u32, i64, i64), u64>,
}

impl BgNbdStatistics {
    pub fn of<'a>(customers: impl IntoIterator<Item = &'a RepeatSummary>) -> Self {
        let mut statistics = BgNbdStatistics::default();
        for customer in customers {
            *statistics
                .counts
                .entry((
                    customer.repeat_occasions,
                    customer.first_to_last_days,
                    customer.first_to_as_of_days,
                ))
                .or_default() += 1;
        }
        statistics
    }

    /// Adds the customers of `other` (another part of the population).
    pub fn merge(&mut self, other: &BgNbdStatistics) {
        for (history, count) in &other.counts {
            *self.counts.entry(*history).or_default() += count;
        }
    }

    pub fn customers(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The maximum-likelihood fit over these customers (see [`fit_bg_nbd`]).
    pub fn fit(&self) -> Result<BgNbdFit> {
        let customers = self.customers();
        let repeat_buyers: u64 = self
            .counts
            .iter()
            .filter(|((repeats, _, _), _)| *repeats > 0)
            .map(|(_, count)| count)
            .sum();
        if customers < 2 || repeat_buyers == 0 {
            return Err(Error::NotEnoughData {
                model: "BG/NBD",
                reason: format!(
                    "{customers} customers of whom {repeat_buyers} bought more than once; need at least 2 customers and 1 repeat buyer"
                ),
            });
        }
        fit_grouped(&group_histories(&self.counts), customers as usize)
    }
}

fn group_histories(counts: &BTreeMap<(u32, i64, i64), u64>) -> GroupedHistories {
    let mut days: Vec<i64> = counts
        .keys()
        .flat_map(|&(_, first_to_last, age)| [first_to_last, age])
        .collect();
    days.sort_unstable();
    days.dedup();
    let index_of = |day: i64| days.binary_search(&day).expect("every day is in the table");
    let rows: Vec<HistoryGroup> = counts
        .iter()
        .map(|(&(repeats, first_to_last, age), &count)| HistoryGroup {
            repeats: f64::from(repeats),
            first_to_last: index_of(first_to_last),
            age: index_of(age),
            count: count as f64,
        })
        .collect();
    let customers = rows.iter().map(|row| row.count).sum();
    GroupedHistories {
        rows,
        weeks: days.into_iter().map(weeks).collect(),
        customers,
    }
}

/// Distinct histories above which a likelihood evaluation is split over
/// two threads: below it, starting them costs more than it saves.
const PARALLEL_ROWS: usize = 20_000;

/// Distinct histories above which the fit first finds its way on a thinned
/// copy of them (every k-th, with its count), then polishes that optimum
/// on them all: the multi-start search needs over a thousand evaluations,
/// the polish a few hundred.
const PREFIT_ROWS: usize = 20_000;

impl GroupedHistories {
    /// Every `stride`-th row, with its count: the same spread of histories,
    /// fewer rows. Rows are in (x, t_x, T) order, so this depends on the
    /// histories only, never on the order customers came in.
    fn thinned(&self, stride: usize) -> GroupedHistories {
        let rows: Vec<HistoryGroup> = self.rows.iter().step_by(stride.max(1)).cloned().collect();
        let customers = rows.iter().map(|row| row.count).sum();
        GroupedHistories {
            rows,
            weeks: self.weeks.clone(),
            customers,
        }
    }
}

fn total_log_likelihood(parameters: &BgNbdParameters, histories: &GroupedHistories) -> f64 {
    let ln_alpha_plus: Vec<f64> = histories
        .weeks
        .iter()
        .map(|weeks| (parameters.alpha + weeks).ln())
        .collect();
    let rows = &histories.rows;
    if rows.len() < PARALLEL_ROWS {
        return rows_log_likelihood(parameters, rows, &ln_alpha_plus);
    }
    // Two halves summed apart and added in a fixed order: the same total
    // every time, whatever the threads' timing.
    let (first, second) = rows.split_at(rows.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| rows_log_likelihood(parameters, second, &ln_alpha_plus));
        let mine = rows_log_likelihood(parameters, first, &ln_alpha_plus);
        mine + other.join().expect("a likelihood thread")
    })
}

fn rows_log_likelihood(
    parameters: &BgNbdParameters,
    rows: &[HistoryGroup],
    ln_alpha_plus: &[f64],
) -> f64 {
    let BgNbdParameters { r, a, b, .. } = *parameters;
    let ln_a = a.ln();
    let mut total = 0.0;
    // Rows are sorted by x: (x, A₁ + A₂, ln a − ln(b + x − 1)).
    let mut per_repeats: Option<(f64, f64, f64)> = None;
    for row in rows {
        let (_, repeat_terms, drop_out_odds) = match per_repeats {
            Some(known) if known.0 == row.repeats => known,
            _ => {
                let known = (
                    row.repeats,
                    parameters.terms_for_repeats(row.repeats),
                    ln_a - (b + row.repeats - 1.0).ln(),
                );
                per_repeats = Some(known);
                known
            }
        };
        let recency = RecencyLogs {
            r_plus_repeats: r + row.repeats,
            drop_out_odds,
            ln_alpha_plus_last: ln_alpha_plus[row.first_to_last],
            ln_alpha_plus_age: ln_alpha_plus[row.age],
        };
        total += row.count * (repeat_terms + recency.terms(row.repeats));
    }
    total
}

fn from_log_parameters(log_parameters: &[f64]) -> BgNbdParameters {
    BgNbdParameters {
        r: log_parameters[0].exp(),
        alpha: log_parameters[1].exp(),
        a: log_parameters[2].exp(),
        b: log_parameters[3].exp(),
    }
}

/// The maximum of the likelihood of `histories` over ln-parameters: from
/// `starts` directly, or, past `prefit_rows` distinct histories, from the
/// optimum of a thinned copy polished on them all.
/// The fit's objective: the mean negative log-likelihood at ln-parameters
/// (the mean keeps the optimiser's tolerances independent of N).
fn objective_of(histories: &GroupedHistories) -> impl Fn(&[f64]) -> f64 + '_ {
    move |log_parameters: &[f64]| -> f64 {
        if log_parameters
            .iter()
            .any(|value| value.abs() > LOG_PARAMETER_LIMIT)
        {
            return f64::NAN;
        }
        let parameters = from_log_parameters(log_parameters);
        -total_log_likelihood(&parameters, histories) / histories.customers
    }
}

fn minimise_grouped(
    histories: &GroupedHistories,
    starts: &[Vec<f64>],
    prefit_rows: usize,
) -> Option<Minimum> {
    if histories.rows.len() <= prefit_rows {
        return minimise_from_starts(&objective_of(histories), starts);
    }
    let thinned = histories.thinned(histories.rows.len().div_ceil(prefit_rows));
    let found = minimise_from_starts(&objective_of(&thinned), starts)?;
    polish(&objective_of(histories), &found.point)
}

/// Maximum-likelihood fit over every customer with at least one occasion (or
/// only `cohort`), by Nelder–Mead on ln-parameters from four deterministic
/// starts scaled to the data's purchase rate; the best end point wins.
pub fn fit_bg_nbd(customers: &[RepeatSummary], cohort: Option<Cohort>) -> Result<BgNbdFit> {
    let in_cohort = |customer: &&RepeatSummary| {
        cohort.is_none_or(|cohort| {
            (cohort.first_day_from..=cohort.first_day_to).contains(&customer.first_occasion_day)
        })
    };
    BgNbdStatistics::of(customers.iter().filter(in_cohort)).fit()
}

/// The fit over grouped histories of `customers` customers.
fn fit_grouped(histories: &GroupedHistories, customers: usize) -> Result<BgNbdFit> {
    let mean_repeats = histories
        .rows
        .iter()
        .map(|row| row.repeats * row.count)
        .sum::<f64>()
        / histories.customers;
    let mean_age_weeks = histories
        .rows
        .iter()
        .map(|row| histories.weeks[row.age] * row.count)
        .sum::<f64>()
        / histories.customers;
    // λ has mean r/α; starting α at r / (observed rate) puts every start at
    // the right purchase rate whatever the business's rhythm.
    let observed_rate = (mean_repeats / mean_age_weeks.max(1.0)).max(1e-3);
    let start = |r: f64, a: f64, b: f64| vec![r.ln(), (r / observed_rate).ln(), a.ln(), b.ln()];
    let starts = [
        start(1.0, 1.0, 1.0),
        start(0.5, 1.0, 3.0),
        start(0.25, 0.5, 2.0),
        start(2.0, 2.0, 8.0),
    ];

    let minimum = minimise_grouped(histories, &starts, PREFIT_ROWS).ok_or(Error::FitFailed {
        model: "BG/NBD",
        reason: "the likelihood is not finite at any starting point".into(),
    })?;
    let parameters = from_log_parameters(&minimum.point);
    Ok(BgNbdFit {
        parameters,
        log_likelihood: total_log_likelihood(&parameters, histories),
        customers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_population_fitted_in_parts_is_fitted_exactly_as_a_whole() {
        // Given 3 000 simulated customers spread over three parts at random
        let truth = BgNbdParameters {
            r: 0.24,
            alpha: 4.41,
            a: 0.79,
            b: 2.43,
        };
        let mut random = SplitMix64::new(23);
        let as_of = 273;
        let customers: Vec<(u64, RepeatSummary)> = (0..3_000)
            .map(|_| {
                let first_day = (random.uniform() * 84.0) as i64;
                let occasions = simulate_bg_nbd_customer(&mut random, &truth, first_day, as_of);
                let part = random.next_u64() % 3;
                (
                    part,
                    repeat_summary(&occasions, as_of).expect("first purchase"),
                )
            })
            .collect();
        // When each part's statistics are merged (in an order of parts
        // other than the customers')
        let mut merged = BgNbdStatistics::default();
        for part in [2, 0, 1] {
            let mine = customers
                .iter()
                .filter(|(owner, _)| *owner == part)
                .map(|(_, customer)| customer);
            merged.merge(&BgNbdStatistics::of(mine));
        }
        // Then the statistics and the fit are the whole population's, to the bit
        let whole: Vec<RepeatSummary> = customers
            .iter()
            .map(|(_, customer)| customer.clone())
            .collect();
        assert_eq!(merged, BgNbdStatistics::of(&whole));
        assert_eq!(merged.customers(), 3_000);
        assert_eq!(
            merged.fit().expect("fit"),
            fit_bg_nbd(&whole, None).expect("fit")
        );
    }

    #[test]
    fn probability_of_repeats_is_a_distribution() {
        // Given the paper's CDNOW fit
        let parameters = BgNbdParameters {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        };
        for age_days in [0, 7, 100, 273] {
            // When every count up to far beyond the data is summed
            let total: f64 = (0..400)
                .map(|repeats| parameters.probability_of_repeats(repeats, age_days))
                .sum();
            // Then it is one, and no repeat at all is (α/(α+t))^r
            assert!((total - 1.0).abs() < 1e-9, "{age_days} days: {total}");
            let t = weeks(age_days);
            let none = (parameters.alpha / (parameters.alpha + t)).powf(parameters.r);
            assert!((parameters.probability_of_repeats(0, age_days) - none).abs() < 1e-12);
        }
    }

    #[test]
    fn quadrature_and_series_agree_and_quadrature_survives_a_narrow_beta() {
        // Given parameters where both evaluations work
        let moderate = BgNbdParameters {
            r: 0.8,
            alpha: 5.0,
            a: 31.0,
            b: 45.0,
        };
        for (repeats, age_days, horizon_days) in [(0, 70, 91), (3, 280, 91), (12, 560, 364)] {
            let series = moderate.expected_purchases_if_alive_by_series(
                f64::from(repeats),
                weeks(age_days),
                weeks(horizon_days),
            );
            let integral = moderate.expected_purchases_if_alive_by_quadrature(
                f64::from(repeats),
                weeks(age_days),
                &[horizon_days],
            )[0];
            assert!(
                (series - integral).abs() <= 1e-7 * series.abs(),
                "x={repeats}: series {series} vs integral {integral}"
            );
        }
        // When a and b run to millions (a fit on tiny data does that)
        let narrow = BgNbdParameters {
            r: 1.45,
            alpha: 8.8,
            a: 1.95e6,
            b: 2.78e6,
        };
        let expected = narrow.expected_purchases_if_alive(3, 210, &[90])[0];
        // Then the answer is finite and near the point-mass limit p = a/(a+b)
        let p = 1.95 / (1.95 + 2.78);
        let limit = (1.0 - (38.8_f64 / (38.8 + p * 90.0 / 7.0)).powf(4.45)) / p;
        assert!(
            (expected - limit).abs() < 1e-4 * limit,
            "{expected} vs {limit}"
        );
    }

    #[test]
    fn many_horizons_at_once_equal_one_at_a_time() {
        // Given one customer and both ways of evaluating eq. 10
        let horizons = [0, 1, 30, 90, 365, 3_650];
        for parameters in [
            CDNOW,
            BgNbdParameters {
                r: 1.45,
                alpha: 8.8,
                a: 40.0,
                b: 95.0,
            },
        ] {
            // When the horizons are asked for together
            let together = parameters.expected_purchases_if_alive(4, 300, &horizons);
            // Then each equals the horizon asked for alone
            for (&horizon, together) in horizons.iter().zip(together) {
                let alone = parameters.expected_purchases_if_alive(4, 300, &[horizon])[0];
                assert_eq!(together, alone, "horizon {horizon}");
            }
        }
    }
    use crate::analytics::occasions::repeat_summary;
    use crate::analytics::simulation::{SplitMix64, simulate_bg_nbd_customer};

    /// The CDNOW fit reported by Fader, Hardie & Lee (2005), to the precision
    /// of Hardie's spreadsheet.
    const CDNOW: BgNbdParameters = BgNbdParameters {
        r: 0.2426,
        alpha: 4.4136,
        a: 0.7930,
        b: 2.4258,
    };

    fn summary(repeats: u32, first_to_last_days: i64, age_days: i64) -> RepeatSummary {
        RepeatSummary {
            first_occasion_day: 0,
            repeat_occasions: repeats,
            first_to_last_days,
            first_to_as_of_days: age_days,
            repeat_net_minor: 0,
            first_to_second_days: None,
        }
    }

    #[test]
    fn likelihood_of_simple_histories_matches_the_hand_formula() {
        let parameters = BgNbdParameters {
            r: 0.5,
            alpha: 3.0,
            a: 0.8,
            b: 2.5,
        };
        // Given a one-time buyer first seen 14 days (2 weeks) ago
        // Then L = (α/(α+T))^r, the chance of no purchase in T weeks
        let expected = (3.0_f64 / 5.0).powf(0.5).ln();
        assert!((parameters.log_likelihood(&summary(0, 0, 14)) - expected).abs() < 1e-12);

        // Given one repeat at week 1 of 2: L = r·α^r·[b/(a+b)·(α+T)^−(r+1) + a/(a+b)·(α+t_x)^−(r+1)]
        let expected = (0.5
            * 3.0_f64.powf(0.5)
            * (2.5 / 3.3 * 5.0_f64.powf(-1.5) + 0.8 / 3.3 * 4.0_f64.powf(-1.5)))
        .ln();
        assert!((parameters.log_likelihood(&summary(1, 7, 14)) - expected).abs() < 1e-12);
    }

    #[test]
    fn grouped_likelihood_equals_the_sum_over_customers() {
        // Given customers, some with identical histories and shared days
        let customers = [
            summary(0, 0, 14),
            summary(0, 0, 14),
            summary(0, 0, 90),
            summary(1, 7, 14),
            summary(1, 14, 90),
            summary(3, 60, 90),
            summary(3, 60, 90),
            summary(12, 300, 365),
        ];
        // When the likelihood is taken over the grouped histories
        let grouped = total_log_likelihood(
            &CDNOW,
            &group_histories(&BgNbdStatistics::of(&customers).counts),
        );
        // Then it is the sum of every customer's own
        let one_by_one: f64 = customers
            .iter()
            .map(|customer| CDNOW.log_likelihood(customer))
            .sum();
        assert!(
            (grouped - one_by_one).abs() < 1e-9 * one_by_one.abs(),
            "{grouped} vs {one_by_one}"
        );
    }

    #[test]
    fn one_time_buyers_are_always_alive_and_long_silence_lowers_p_alive() {
        assert_eq!(CDNOW.probability_alive(&summary(0, 0, 270)), 1.0);
        // Given two customers with 4 repeats, one buying last week, one silent for 30 weeks
        let recent = CDNOW.probability_alive(&summary(4, 266, 273));
        let silent = CDNOW.probability_alive(&summary(4, 63, 273));
        // Then the silent one is far less likely to be alive
        assert!(recent > 0.8 && silent < 0.1, "{recent} {silent}");
    }

    #[test]
    fn expected_purchases_match_hardies_cdnow_spreadsheet() {
        // The figures lifetimes also tests against: unconditional E[X(t)] for
        // a customer at their first purchase, and E[Y(39) | x=2, t_x=30.43,
        // T=38.86] = 1.226. Our inputs are whole days, so t_x and T are
        // rounded to 213 and 272 days (30.43 and 38.86 weeks); the published
        // figures have 3–4 decimals, hence the 1e-3 tolerance.
        let newcomer = summary(0, 0, 0);
        for (days, expected) in [
            (1, 0.0078),
            (7, 0.0532),
            (21, 0.1506),
            (223, 1.0405),
            (224, 1.0437),
            (546, 1.8576),
        ] {
            let actual = CDNOW.expected_purchases(&newcomer, days);
            assert!(
                (actual - expected).abs() < 1e-3,
                "t={days} days: {actual} vs {expected}"
            );
        }
        let actual = CDNOW.expected_purchases(&summary(2, 213, 272), 273);
        assert!((actual - 1.226).abs() < 2e-3, "{actual}");
    }

    /// The paper's form of eq. 10 with a plain ₂F₁ series, usable where it
    /// converges quickly; the production code must agree with it.
    fn expected_purchases_by_the_paper(
        parameters: &BgNbdParameters,
        customer: &RepeatSummary,
        horizon_days: i64,
    ) -> f64 {
        let BgNbdParameters { r, alpha, a, b } = *parameters;
        let x = f64::from(customer.repeat_occasions);
        let (t_x, big_t, t) = (
            weeks(customer.first_to_last_days),
            weeks(customer.first_to_as_of_days),
            weeks(horizon_days),
        );
        let z = t / (alpha + big_t + t);
        let (upper_1, upper_2, lower) = (r + x, b + x, a + b + x - 1.0);
        let mut term = 1.0;
        let mut hypergeometric = 1.0;
        for k in 0..10_000 {
            let k = k as f64;
            term *= (upper_1 + k) * (upper_2 + k) / ((lower + k) * (k + 1.0)) * z;
            hypergeometric += term;
        }
        let numerator = (a + b + x - 1.0) / (a - 1.0)
            * (1.0 - ((alpha + big_t) / (alpha + big_t + t)).powf(r + x) * hypergeometric);
        let denominator = if x > 0.0 {
            1.0 + a / (b + x - 1.0) * ((alpha + big_t) / (alpha + t_x)).powf(r + x)
        } else {
            1.0
        };
        numerator / denominator
    }

    #[test]
    fn euler_form_agrees_with_the_papers_series() {
        let parameters = [
            CDNOW,
            BgNbdParameters {
                r: 1.3,
                alpha: 20.0,
                a: 2.5,
                b: 0.7,
            },
            BgNbdParameters {
                r: 0.6,
                alpha: 2.0,
                a: 1.001,
                b: 4.0,
            },
        ];
        for parameters in parameters {
            for (repeats, first_to_last, age, horizon) in [
                (0, 0, 100, 90),
                (1, 30, 200, 90),
                (5, 150, 160, 365),
                (12, 300, 320, 30),
            ] {
                let customer = summary(repeats, first_to_last, age);
                let ours = parameters.expected_purchases(&customer, horizon);
                let paper = expected_purchases_by_the_paper(&parameters, &customer, horizon);
                assert!(
                    (ours - paper).abs() <= 1e-6 * (1.0 + paper.abs()),
                    "{parameters:?} x={repeats}: {ours} vs {paper}"
                );
            }
        }
    }

    #[test]
    fn a_equal_to_one_is_the_limit_of_its_neighbours() {
        // The paper's form divides by a−1; ours must be continuous through a = 1.
        let at = |a: f64| {
            BgNbdParameters {
                r: 0.6,
                alpha: 2.0,
                a,
                b: 4.0,
            }
            .expected_purchases(&summary(3, 80, 120), 90)
        };
        let (below, exactly, above) = (at(1.0 - 1e-7), at(1.0), at(1.0 + 1e-7));
        assert!(exactly.is_finite());
        assert!(
            (below - exactly).abs() < 1e-6 && (above - exactly).abs() < 1e-6,
            "{below} {exactly} {above}"
        );
    }

    #[test]
    fn heavy_buyers_with_long_horizons_stay_finite() {
        // Given a customer with 200 repeats and a horizon far beyond their history
        let parameters = BgNbdParameters {
            r: 2.0,
            alpha: 0.05,
            a: 0.3,
            b: 5.0,
        };
        let customer = summary(200, 700, 700);
        // When predicting 10 years ahead
        let expected = parameters.expected_purchases(&customer, 3_650);
        // Then the answer is finite, positive and bounded by the alive rate
        assert!(expected.is_finite() && expected > 0.0, "{expected}");
        assert!(
            expected < 3_650.0 / 7.0 * (2.0 + 200.0) / (0.05 + 100.0) * 1.01,
            "{expected}"
        );
    }

    #[test]
    fn too_little_data_is_an_error_not_a_guess() {
        let error =
            fit_bg_nbd(&[summary(0, 0, 10), summary(0, 0, 20)], None).expect_err("no repeats");
        assert!(matches!(
            error,
            Error::NotEnoughData {
                model: "BG/NBD",
                ..
            }
        ));
    }

    #[test]
    fn fit_recovers_the_cdnow_parameters_from_simulated_customers() {
        // Given 5 000 customers simulated from the CDNOW parameters, acquired
        // uniformly over 12 weeks and observed until week 39 (T of 27–39
        // weeks, as in the paper's calibration period)
        let truth = BgNbdParameters {
            r: 0.24,
            alpha: 4.41,
            a: 0.79,
            b: 2.43,
        };
        let mut random = SplitMix64::new(2005);
        let as_of = 273;
        let customers: Vec<RepeatSummary> = (0..5_000)
            .map(|_| {
                let first_day = (random.uniform() * 84.0) as i64;
                let occasions = simulate_bg_nbd_customer(&mut random, &truth, first_day, as_of);
                repeat_summary(&occasions, as_of).expect("first purchase")
            })
            .collect();
        // When fitted
        let fit = fit_bg_nbd(&customers, None).expect("fit");
        let fitted = fit.parameters;
        // Then the optimiser found at least the likelihood of the truth ...
        let at_truth: f64 = customers
            .iter()
            .map(|customer| truth.log_likelihood(customer))
            .sum();
        assert!(
            fit.log_likelihood >= at_truth - 1e-6,
            "{fit:?} vs truth {at_truth}"
        );
        assert_eq!(fit.customers, 5_000);
        // ... and each parameter is within about three standard errors. The
        // paper's standard errors for N = 2 357 (r ±0.013, α ±0.38, a ±0.19,
        // b ±0.71) scaled by √(2357/5000) give r ±0.03, α ±0.8, a ±0.4,
        // b ±1.5; a and b are the weakly identified pair.
        assert!((fitted.r - truth.r).abs() < 0.03, "{fitted:?}");
        assert!((fitted.alpha - truth.alpha).abs() < 0.8, "{fitted:?}");
        assert!((fitted.a - truth.a).abs() < 0.4, "{fitted:?}");
        assert!((fitted.b - truth.b).abs() < 1.5, "{fitted:?}");

        // And a cohort fit only sees the customers acquired in its days
        let cohort = Cohort {
            first_day_from: 0,
            first_day_to: 27,
        };
        let cohort_fit = fit_bg_nbd(&customers, Some(cohort)).expect("cohort fit");
        let in_cohort = customers
            .iter()
            .filter(|customer| customer.first_occasion_day <= 27)
            .count();
        assert_eq!(cohort_fit.customers, in_cohort);
    }

    /// Simulated customers over a longer window (acquired over 52 weeks,
    /// observed to week 104), so histories spread over many distinct rows.
    fn spread_population(count: usize, seed: u64) -> Vec<RepeatSummary> {
        let truth = BgNbdParameters {
            r: 0.6,
            alpha: 6.0,
            a: 0.8,
            b: 2.5,
        };
        let mut random = SplitMix64::new(seed);
        let as_of = 728;
        (0..count)
            .map(|_| {
                let first_day = (random.uniform() * 364.0) as i64;
                let occasions = simulate_bg_nbd_customer(&mut random, &truth, first_day, as_of);
                repeat_summary(&occasions, as_of).expect("first purchase")
            })
            .collect()
    }

    fn same_to(digits: i32, left: f64, right: f64) -> bool {
        (left - right).abs() <= 10_f64.powi(-digits) * left.abs().max(right.abs())
    }

    /// Fails unless every parameter of the two fits agrees to 4
    /// significant digits.
    fn assert_same_fit(left: &BgNbdParameters, right: &BgNbdParameters) {
        for (name, one, other) in [
            ("r", left.r, right.r),
            ("alpha", left.alpha, right.alpha),
            ("a", left.a, right.a),
            ("b", left.b, right.b),
        ] {
            assert!(same_to(4, one, other), "{name}: {one} vs {other}");
        }
    }

    #[test]
    fn the_grouped_fit_is_the_direct_fit_and_reports_everyone_s_likelihood() {
        // Given a population whose histories are mostly distinct
        let customers = spread_population(3_000, 7);
        // When fitted grouped, and directly: one term per customer, summed
        // with the per-customer likelihood, from the same starts
        let fit = fit_bg_nbd(&customers, None).expect("fit");
        let direct = |log_parameters: &[f64]| -> f64 {
            if log_parameters
                .iter()
                .any(|value| value.abs() > LOG_PARAMETER_LIMIT)
            {
                return f64::NAN;
            }
            let parameters = from_log_parameters(log_parameters);
            -customers
                .iter()
                .map(|customer| parameters.log_likelihood(customer))
                .sum::<f64>()
                / customers.len() as f64
        };
        let histories = group_histories(&BgNbdStatistics::of(&customers).counts);
        let starts = vec![vec![0.0, 1.0, 0.0, 0.0], vec![-0.7, 1.5, 0.0, 1.1]];
        let directly = minimise_from_starts(&direct, &starts).expect("a direct fit");
        let grouped = minimise_grouped(&histories, &starts, usize::MAX).expect("a grouped fit");
        // Then the parameters agree to 4 significant digits
        assert_same_fit(
            &from_log_parameters(&directly.point),
            &from_log_parameters(&grouped.point),
        );
        // And the reported log-likelihood is the whole population's
        let everyone: f64 = customers
            .iter()
            .map(|customer| fit.parameters.log_likelihood(customer))
            .sum();
        assert!(
            same_to(9, fit.log_likelihood, everyone),
            "{fit:?} vs {everyone}"
        );
        assert_eq!(fit.customers, customers.len());
    }

    #[test]
    fn a_fit_found_on_a_thinned_copy_and_polished_is_the_full_fit() {
        // Given the same population, with the prefit's threshold brought
        // down so that this small population takes the large one's path
        let customers = spread_population(3_000, 11);
        let histories = group_histories(&BgNbdStatistics::of(&customers).counts);
        assert!(
            histories.rows.len() > 1_000,
            "{} rows",
            histories.rows.len()
        );
        let starts = vec![vec![0.0, 1.0, 0.0, 0.0], vec![-0.7, 1.5, 0.0, 1.1]];
        // When fitted from every row, and from a tenth of them then polished
        let full = minimise_grouped(&histories, &starts, usize::MAX).expect("a fit");
        let polished =
            minimise_grouped(&histories, &starts, histories.rows.len() / 10).expect("a fit");
        // Then both reach the same optimum, to 4 significant digits
        assert_same_fit(
            &from_log_parameters(&full.point),
            &from_log_parameters(&polished.point),
        );
    }
}
