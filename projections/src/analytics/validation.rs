//! Out-of-sample checks of the models, as Fader, Hardie & Lee (2005) check
//! BG/NBD on CDNOW: fit on a calibration period, predict what each buyer of
//! that period does in the holdout that follows, and set the predictions
//! beside what they did — per number of calibration repeat purchases (the
//! paper's conditional-expectations figure), week by week over the holdout
//! (its tracking plot), and person by person as a mean absolute error. The
//! Gamma-Gamma model gets the same treatment for the value of a purchase.

use std::collections::HashMap;

use serde::Serialize;

use super::bg_nbd::{BgNbdFit, fit_bg_nbd};
use super::config::AnalyticsConfig;
use super::gamma_gamma::{GammaGammaFit, fit_gamma_gamma};
use super::occasions::{PurchaseOccasion, RepeatSummary, purchase_occasions, repeat_summary};
use super::scoring::CustomerFacts;
use super::{Error, Result};
use crate::time::format_day;

/// Calibration repeat counts are grouped 0, 1, …, `LAST_GROUP − 1` and
/// `LAST_GROUP`-or-more, as in the paper's figure.
pub const LAST_GROUP: u32 = 7;

/// One buyer of the calibration period.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Holdout {
    /// Their history at the end of the calibration period.
    pub calibration: RepeatSummary,
    /// Their occasions in the holdout (after the calibration's last day,
    /// up to the holdout's last), in the reporting currency.
    pub occasions: Vec<PurchaseOccasion>,
}

impl Holdout {
    /// `facts` split at `calibration_end`: their history as it stood then
    /// (orders, cancellations and refunds up to that day), and their
    /// occasions after it up to `holdout_end` as they stood at
    /// `holdout_end`. `None` for someone who had not bought by
    /// `calibration_end`: the models predict buyers only.
    pub fn of(
        facts: &CustomerFacts,
        calibration_end: i64,
        holdout_end: i64,
        config: &AnalyticsConfig,
    ) -> Option<Holdout> {
        let currency = &config.reporting_currency;
        let before = purchase_occasions(&facts.orders_at(calibration_end), currency);
        let calibration = repeat_summary(&before.reporting, calibration_end)?;
        let mut occasions = purchase_occasions(&facts.orders_at(holdout_end), currency).reporting;
        occasions.retain(|occasion| occasion.day > calibration_end);
        Some(Holdout {
            calibration,
            occasions,
        })
    }
}

/// Predicted beside actual for the buyers of one calibration repeat count.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GroupComparison {
    /// Calibration repeat purchases: "0" … "6", then "7+".
    pub repeats: String,
    pub customers: u64,
    pub predicted_mean: f64,
    pub actual_mean: f64,
}

/// Repeat purchases in one week of the holdout, over every calibration
/// buyer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WeekComparison {
    /// 1 for the week after the calibration's last day.
    pub week: u32,
    /// The week's first and last day (`YYYY-MM-DD`); the last week may be
    /// shorter than seven days.
    pub from: String,
    pub to: String,
    pub predicted: f64,
    pub actual: u64,
    pub predicted_cumulative: f64,
    pub actual_cumulative: u64,
}

/// BG/NBD's predictions of holdout repeat purchases against the truth.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PurchaseValidation {
    /// The fit on the calibration period.
    pub fit: BgNbdFit,
    /// Calibration buyers, every one of them predicted.
    pub customers: u64,
    pub predicted_total: f64,
    pub actual_total: u64,
    /// Mean over buyers of |predicted − actual| holdout purchases.
    pub mean_absolute_error: f64,
    pub by_repeats: Vec<GroupComparison>,
    pub weekly: Vec<WeekComparison>,
}

/// Gamma-Gamma's expected value of a purchase against the mean value of
/// the holdout purchases, over the buyers who bought in the holdout.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SpendValidation {
    /// The fit on the calibration period.
    pub fit: GammaGammaFit,
    /// Calibration buyers with a holdout purchase (the others have no
    /// value to compare with).
    pub customers: u64,
    /// Means over those buyers, in reporting-currency minor units.
    pub predicted_mean_minor: f64,
    pub actual_mean_minor: f64,
    pub mean_absolute_error_minor: f64,
    /// As above, grouped by calibration repeat purchases; means in minor
    /// units.
    pub by_repeats: Vec<GroupComparison>,
}

/// Both models' validation over one calibration and holdout. A model that
/// cannot be fitted on the calibration period keeps the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub calibration_end: i64,
    pub holdout_end: i64,
    pub purchases: Result<PurchaseValidation, String>,
    pub spend: Result<SpendValidation, String>,
}

/// Validates both models on `buyers` (see [`Holdout::of`]).
pub fn validate(buyers: &[Holdout], calibration_end: i64, holdout_end: i64) -> Validation {
    Validation {
        calibration_end,
        holdout_end,
        purchases: validate_purchases(buyers, calibration_end, holdout_end - calibration_end)
            .map_err(|error| error.to_string()),
        spend: validate_spend(buyers).map_err(|error| error.to_string()),
    }
}

fn group_of(repeats: u32) -> usize {
    repeats.min(LAST_GROUP) as usize
}

fn group_name(group: usize) -> String {
    if group as u32 == LAST_GROUP {
        format!("{LAST_GROUP}+")
    } else {
        group.to_string()
    }
}

/// Sums of predicted and actual per repeat group.
#[derive(Default, Clone, Copy)]
struct GroupSums {
    customers: u64,
    predicted: f64,
    actual: f64,
}

fn comparisons(sums: &[GroupSums]) -> Vec<GroupComparison> {
    sums.iter()
        .enumerate()
        .filter(|(_, sums)| sums.customers > 0)
        .map(|(group, sums)| GroupComparison {
            repeats: group_name(group),
            customers: sums.customers,
            predicted_mean: sums.predicted / sums.customers as f64,
            actual_mean: sums.actual / sums.customers as f64,
        })
        .collect()
}

/// Fits BG/NBD on `buyers`' calibration histories and compares its
/// predictions for the `holdout_days` that follow `calibration_end` with
/// the buyers' holdout occasions.
pub fn validate_purchases(
    buyers: &[Holdout],
    calibration_end: i64,
    holdout_days: i64,
) -> Result<PurchaseValidation> {
    if holdout_days < 1 {
        return Err(Error::InvalidConfig {
            key: "holdout".into(),
            rule: "must last at least one day".into(),
        });
    }
    let calibrations: Vec<RepeatSummary> = buyers
        .iter()
        .map(|buyer| buyer.calibration.clone())
        .collect();
    let fit = fit_bg_nbd(&calibrations, None)?;
    let parameters = fit.parameters;
    let weeks = (holdout_days + 6) / 7;
    let week_ends: Vec<i64> = (1..=weeks)
        .map(|week| (week * 7).min(holdout_days))
        .collect();
    // The expectation if alive depends on (x, T) only: shared by everyone
    // with the same pair.
    let mut if_alive: HashMap<(u32, i64), Vec<f64>> = HashMap::new();
    let mut predicted_weekly = vec![0.0; week_ends.len()];
    let mut actual_weekly = vec![0_u64; week_ends.len()];
    let mut groups = vec![GroupSums::default(); LAST_GROUP as usize + 1];
    let mut absolute_error = 0.0;
    for buyer in buyers {
        let summary = &buyer.calibration;
        let cumulative = if_alive
            .entry((summary.repeat_occasions, summary.first_to_as_of_days))
            .or_insert_with(|| {
                parameters.expected_purchases_if_alive(
                    summary.repeat_occasions,
                    summary.first_to_as_of_days,
                    &week_ends,
                )
            });
        let alive = parameters.probability_alive(summary);
        let mut before = 0.0;
        for (week, expected) in cumulative.iter().enumerate() {
            predicted_weekly[week] += alive * (expected - before);
            before = *expected;
        }
        let predicted = alive * before;
        let mut actual = 0_u64;
        for occasion in &buyer.occasions {
            let after = occasion.day - calibration_end;
            if (1..=holdout_days).contains(&after) {
                actual += 1;
                actual_weekly[((after - 1) / 7) as usize] += 1;
            }
        }
        let group = &mut groups[group_of(summary.repeat_occasions)];
        group.customers += 1;
        group.predicted += predicted;
        group.actual += actual as f64;
        absolute_error += (predicted - actual as f64).abs();
    }
    let mut weekly = Vec::with_capacity(week_ends.len());
    let (mut predicted_cumulative, mut actual_cumulative) = (0.0, 0);
    let mut first = calibration_end + 1;
    for (index, end) in week_ends.iter().enumerate() {
        predicted_cumulative += predicted_weekly[index];
        actual_cumulative += actual_weekly[index];
        weekly.push(WeekComparison {
            week: index as u32 + 1,
            from: format_day(first),
            to: format_day(calibration_end + end),
            predicted: predicted_weekly[index],
            actual: actual_weekly[index],
            predicted_cumulative,
            actual_cumulative,
        });
        first = calibration_end + end + 1;
    }
    let customers = buyers.len() as u64;
    Ok(PurchaseValidation {
        fit,
        customers,
        predicted_total: predicted_cumulative,
        actual_total: actual_cumulative,
        mean_absolute_error: absolute_error / customers.max(1) as f64,
        by_repeats: comparisons(&groups),
        weekly,
    })
}

/// Fits Gamma-Gamma on `buyers`' calibration histories and compares each
/// holdout buyer's expected purchase value with the mean net value of their
/// holdout occasions.
pub fn validate_spend(buyers: &[Holdout]) -> Result<SpendValidation> {
    let calibrations: Vec<RepeatSummary> = buyers
        .iter()
        .map(|buyer| buyer.calibration.clone())
        .collect();
    let fit = fit_gamma_gamma(&calibrations)?;
    let mut groups = vec![GroupSums::default(); LAST_GROUP as usize + 1];
    let (mut customers, mut predicted_sum, mut actual_sum, mut absolute_error) = (0, 0.0, 0.0, 0.0);
    for buyer in buyers.iter().filter(|buyer| !buyer.occasions.is_empty()) {
        let Some(predicted) = fit
            .parameters
            .expected_order_value_minor(&buyer.calibration)
        else {
            continue;
        };
        let actual = buyer
            .occasions
            .iter()
            .map(|occasion| occasion.net_minor as f64)
            .sum::<f64>()
            / buyer.occasions.len() as f64;
        let group = &mut groups[group_of(buyer.calibration.repeat_occasions)];
        group.customers += 1;
        group.predicted += predicted;
        group.actual += actual;
        customers += 1;
        predicted_sum += predicted;
        actual_sum += actual;
        absolute_error += (predicted - actual).abs();
    }
    if customers == 0 {
        return Err(Error::NotEnoughData {
            model: "Gamma-Gamma",
            reason: "no calibration buyer bought in the holdout, so there is nothing to compare"
                .into(),
        });
    }
    let count = customers as f64;
    Ok(SpendValidation {
        fit,
        customers,
        predicted_mean_minor: predicted_sum / count,
        actual_mean_minor: actual_sum / count,
        mean_absolute_error_minor: absolute_error / count,
        by_repeats: comparisons(&groups),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::bg_nbd::BgNbdParameters;
    use crate::analytics::occasions::repeat_summary;
    use crate::analytics::scoring::OrderHistory;
    use crate::analytics::simulation::{SplitMix64, simulate_bg_nbd_customer};

    fn occasion(day: i64, net_minor: i64) -> PurchaseOccasion {
        PurchaseOccasion {
            day,
            net_minor,
            orders: 1,
        }
    }

    /// Buyers simulated from `truth`, acquired over 12 weeks, calibrated to
    /// week 39 and followed for `holdout_days` more, as in the paper.
    fn simulated(truth: &BgNbdParameters, count: usize, holdout_days: i64) -> Vec<Holdout> {
        let mut random = SplitMix64::new(2005);
        let calibration_end = 272;
        (0..count)
            .map(|_| {
                let first_day = (random.uniform() * 84.0) as i64;
                let mut occasions = simulate_bg_nbd_customer(
                    &mut random,
                    truth,
                    first_day,
                    calibration_end + holdout_days,
                );
                let holdout = occasions.split_off(
                    occasions
                        .iter()
                        .position(|occasion| occasion.day > calibration_end)
                        .unwrap_or(occasions.len()),
                );
                Holdout {
                    calibration: repeat_summary(&occasions, calibration_end).expect("first"),
                    occasions: holdout,
                }
            })
            .collect()
    }

    #[test]
    fn a_simulated_population_is_predicted_within_statistical_tolerance() {
        // Given 20 000 buyers simulated from the CDNOW parameters and a
        // 39-week holdout
        let truth = BgNbdParameters {
            r: 0.24,
            alpha: 4.41,
            a: 0.79,
            b: 2.43,
        };
        let holdout_days = 273;
        let buyers = simulated(&truth, 20_000, holdout_days);
        // When validated
        let validation = validate_purchases(&buyers, 272, holdout_days).expect("fit");
        // Then every buyer is predicted, and the totals agree: the actual
        // total is a sum of 20 000 independent counts, whose standard
        // deviation is about √(Σ variance) ≈ 2.5 % of it here; 6 % is more
        // than two of them
        assert_eq!(validation.customers, 20_000);
        let actual = validation.actual_total as f64;
        let relative = (validation.predicted_total - actual).abs() / actual;
        assert!(relative < 0.06, "{validation:?}");
        // And so do the groups with a few hundred buyers or more (each mean
        // within 5 standard errors of a Poisson-like count)
        for group in &validation.by_repeats {
            if group.customers < 300 {
                continue;
            }
            let error = ((group.actual_mean.max(0.05) * 3.0) / group.customers as f64).sqrt();
            assert!(
                (group.predicted_mean - group.actual_mean).abs() < 5.0 * error,
                "{group:?} (standard error {error})"
            );
        }
        // And the weeks cover the holdout and add up to the totals
        assert_eq!(validation.weekly.len(), 39);
        assert_eq!(validation.weekly[0].from, format_day(273));
        assert_eq!(validation.weekly[38].to, format_day(545));
        let weekly_actual: u64 = validation.weekly.iter().map(|week| week.actual).sum();
        assert_eq!(weekly_actual, validation.actual_total);
        let weekly_predicted: f64 = validation.weekly.iter().map(|week| week.predicted).sum();
        assert!((weekly_predicted - validation.predicted_total).abs() < 1e-6);
        // And buyers with more calibration purchases are predicted to buy
        // more, as they did
        let means: Vec<f64> = validation
            .by_repeats
            .iter()
            .map(|group| group.predicted_mean)
            .collect();
        assert!(means.windows(2).all(|pair| pair[0] < pair[1]), "{means:?}");
    }

    #[test]
    fn holdout_purchases_are_counted_in_their_weeks_and_groups() {
        // Given a calibration ending on day 100, a 10-day holdout (weeks of
        // 7 and 3 days) and three buyers: one who bought on day 101 and on
        // day 110, one with 8 calibration repeats who bought on day 108,
        // and a one-time buyer who did not come back; plus enough others
        // for a fit
        let mut buyers = vec![
            Holdout {
                calibration: repeat_summary(&[occasion(10, 500), occasion(50, 700)], 100)
                    .expect("first"),
                occasions: vec![occasion(101, 800), occasion(110, 400)],
            },
            Holdout {
                calibration: repeat_summary(
                    &(0..9)
                        .map(|k| occasion(10 + 9 * k, 300))
                        .collect::<Vec<_>>(),
                    100,
                )
                .expect("first"),
                occasions: vec![occasion(108, 900)],
            },
            Holdout {
                calibration: repeat_summary(&[occasion(20, 100)], 100).expect("first"),
                occasions: vec![],
            },
        ];
        for k in 0..40 {
            let mut history = vec![occasion(k, 1_000)];
            if k % 3 == 0 {
                history.push(occasion(k + 30, 1_200 + 10 * k));
            }
            buyers.push(Holdout {
                calibration: repeat_summary(&history, 100).expect("first"),
                occasions: vec![],
            });
        }
        // When validated
        let purchases = validate_purchases(&buyers, 100, 10).expect("fit");
        // Then the weeks hold the purchases of their days
        let weeks: Vec<(String, String, u64)> = purchases
            .weekly
            .iter()
            .map(|week| (week.from.clone(), week.to.clone(), week.actual))
            .collect();
        assert_eq!(
            weeks,
            [
                (format_day(101), format_day(107), 1),
                (format_day(108), format_day(110), 2)
            ]
        );
        assert_eq!(purchases.actual_total, 3);
        assert_eq!(purchases.customers, 43);
        // And the eight-repeat buyer is in "7+", with one purchase
        let last = purchases.by_repeats.last().expect("groups");
        assert_eq!((last.repeats.as_str(), last.customers), ("7+", 1));
        assert_eq!(last.actual_mean, 1.0);
        // And the spend is compared over the two holdout buyers only, each
        // with the mean of their holdout occasions
        let spend = validate_spend(&buyers).expect("fit");
        assert_eq!(spend.customers, 2);
        assert!((spend.actual_mean_minor - (600.0 + 900.0) / 2.0).abs() < 1e-9);
        let expected: f64 = buyers[..2]
            .iter()
            .map(|buyer| {
                spend
                    .fit
                    .parameters
                    .expected_order_value_minor(&buyer.calibration)
                    .expect("value")
            })
            .sum::<f64>()
            / 2.0;
        assert!((spend.predicted_mean_minor - expected).abs() < 1e-9);
    }

    #[test]
    fn a_history_is_split_as_it_stood_on_each_side() {
        // Given orders on days 10 and 50 (cancelled on day 90, after the
        // calibration's end of day 80), one on day 105 refunded by 200 on
        // day 120, one on day 130 (after the holdout) and one in euros
        let order = |id: &str, day: i64, currency: &str, cancelled_day, refunds| OrderHistory {
            order_id: id.into(),
            placed_day: day,
            placed_at_ms: day * 86_400_000,
            currency: currency.into(),
            total_minor: 1_000,
            cancelled_day,
            refunds,
        };
        let facts = CustomerFacts {
            orders: vec![
                order("o1", 10, "USD", None, vec![]),
                order("o2", 50, "USD", Some(90), vec![]),
                order("o3", 105, "USD", None, vec![(120, 200)]),
                order("o4", 130, "USD", None, vec![]),
                order("o5", 110, "EUR", None, vec![]),
            ],
            first_seen_day: Some(10),
            ..CustomerFacts::default()
        };
        let config = AnalyticsConfig::default();
        // When split at day 80 with a holdout to day 125
        let holdout = Holdout::of(&facts, 80, 125, &config).expect("a buyer by day 80");
        // Then the calibration sees both early orders, the cancellation
        // not having happened yet
        assert_eq!(holdout.calibration.repeat_occasions, 1);
        assert_eq!(holdout.calibration.repeat_net_minor, 1_000);
        assert_eq!(holdout.calibration.first_to_as_of_days, 70);
        // And the holdout holds day 105 net of its refund, and nothing in
        // another currency or after its end
        let occasions: Vec<(i64, i64)> = holdout
            .occasions
            .iter()
            .map(|occasion| (occasion.day, occasion.net_minor))
            .collect();
        assert_eq!(occasions, [(105, 800)]);
        // And someone who had not bought by the calibration's end is left out
        assert!(Holdout::of(&facts, 9, 125, &config).is_none());
    }

    #[test]
    fn an_empty_holdout_is_refused() {
        let buyers = simulated(
            &BgNbdParameters {
                r: 0.24,
                alpha: 4.41,
                a: 0.79,
                b: 2.43,
            },
            200,
            0,
        );
        assert!(matches!(
            validate_purchases(&buyers, 272, 0),
            Err(Error::InvalidConfig { .. })
        ));
        // And spend without a single holdout buyer has nothing to compare
        assert!(matches!(
            validate_spend(&buyers),
            Err(Error::NotEnoughData { .. }) | Err(Error::FitFailed { .. })
        ));
    }
}
