//! Churn-risk flags, each with its reason in words and numbers.
//!
//! Repeat buyers are judged by BG/NBD's P(alive). That model cannot call a
//! one-time buyer dead (drop-out only happens after a repeat purchase), so
//! one-time buyers get a rule of their own: at risk once they have gone
//! longer without a second purchase than most repeat buyers ever took.

use serde::{Deserialize, Serialize};

use super::config::ChurnConfig;
use super::occasions::RepeatSummary;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChurnFlag {
    pub at_risk: bool,
    /// Why, for people: e.g. "P(alive) 0.31 < 0.50".
    pub reason: String,
}

/// The day count by which `percentile` of repeat buyers had made their
/// second purchase (nearest-rank: the smallest gap g with at least that share
/// of gaps ≤ g). `None` without repeat buyers.
///
/// Only second purchases made by `as_of` are seen, so recently acquired
/// customers who will come back later pull this down a little; the rule errs
/// towards flagging early rather than late.
pub fn second_occasion_gap_percentile<'a>(
    customers: impl IntoIterator<Item = &'a RepeatSummary>,
    percentile: f64,
) -> Option<i64> {
    let mut gaps: Vec<i64> = customers
        .into_iter()
        .filter_map(|customer| customer.first_to_second_days)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    let rank = (percentile * gaps.len() as f64 - 1e-9).ceil().max(1.0) as usize;
    Some(gaps[rank.min(gaps.len()) - 1])
}

fn format_percent(share: f64) -> String {
    let percent = share * 100.0;
    if (percent - percent.round()).abs() < 1e-9 {
        format!("{percent:.0} %")
    } else {
        format!("{percent:.1} %")
    }
}

/// Flags one customer at `as_of` (the day their summary was taken).
///
/// * Repeat buyers: at risk when `p_alive` < `config.p_alive_below`.
/// * One-time buyers: at risk when the days since their only purchase exceed
///   `one_time_buyer_horizon_days` (from [`second_occasion_gap_percentile`]);
///   on the very day they reach it they still have time. Without any repeat
///   buyers to compare with they are not flagged.
pub fn churn_flag(
    customer: &RepeatSummary,
    p_alive: f64,
    one_time_buyer_horizon_days: Option<i64>,
    config: &ChurnConfig,
) -> ChurnFlag {
    if customer.repeat_occasions > 0 {
        let at_risk = p_alive < config.p_alive_below;
        let comparison = if at_risk { "<" } else { "≥" };
        return ChurnFlag {
            at_risk,
            reason: format!(
                "P(alive) {p_alive:.2} {comparison} {:.2}",
                config.p_alive_below
            ),
        };
    }
    let days_since = customer.first_to_as_of_days;
    match one_time_buyer_horizon_days {
        Some(horizon) => ChurnFlag {
            at_risk: days_since > horizon,
            reason: format!(
                "one purchase {days_since} days ago; {} of repeat buyers bought again within {horizon} days",
                format_percent(config.one_time_buyer_percentile)
            ),
        },
        None => ChurnFlag {
            at_risk: false,
            reason: format!(
                "one purchase {days_since} days ago; no repeat buyers yet to compare with"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_time_buyer(days_ago: i64) -> RepeatSummary {
        RepeatSummary {
            first_occasion_day: 1_000 - days_ago,
            repeat_occasions: 0,
            first_to_last_days: 0,
            first_to_as_of_days: days_ago,
            repeat_net_minor: 0,
            first_to_second_days: None,
        }
    }

    fn repeat_buyer(first_to_second_days: i64) -> RepeatSummary {
        RepeatSummary {
            repeat_occasions: 1,
            first_to_last_days: first_to_second_days,
            first_to_second_days: Some(first_to_second_days),
            ..one_time_buyer(400)
        }
    }

    #[test]
    fn percentile_is_the_nearest_rank() {
        // Given ten repeat buyers who came back after 10, 20, ..., 100 days
        let customers: Vec<RepeatSummary> =
            (1..=10).map(|tenth| repeat_buyer(10 * tenth)).collect();
        // Then 80 % had come back within 80 days, and one-time buyers are ignored
        let one_timer = one_time_buyer(5);
        let with_one_timer = customers.iter().chain(std::iter::once(&one_timer));
        assert_eq!(
            second_occasion_gap_percentile(with_one_timer, 0.8),
            Some(80)
        );
        assert_eq!(second_occasion_gap_percentile(&customers, 0.85), Some(90));
        assert_eq!(second_occasion_gap_percentile(&customers, 1.0), Some(100));
        assert_eq!(
            second_occasion_gap_percentile(&[one_time_buyer(5)], 0.8),
            None
        );
    }

    #[test]
    fn repeat_buyers_are_judged_by_p_alive() {
        let config = ChurnConfig::default();
        let flag = churn_flag(&repeat_buyer(30), 0.31, Some(95), &config);
        assert_eq!(
            flag,
            ChurnFlag {
                at_risk: true,
                reason: "P(alive) 0.31 < 0.50".into()
            }
        );
        let flag = churn_flag(&repeat_buyer(30), 0.5, Some(95), &config);
        assert!(!flag.at_risk);
        assert_eq!(flag.reason, "P(alive) 0.50 ≥ 0.50");
    }

    #[test]
    fn one_time_buyers_are_at_risk_after_most_repeat_buyers_had_returned() {
        let config = ChurnConfig::default();
        // Given 80 % of repeat buyers returned within 95 days
        // When a one-time buyer's purchase was 200 days ago, they are at risk
        let flag = churn_flag(&one_time_buyer(200), 1.0, Some(95), &config);
        assert_eq!(
            flag,
            ChurnFlag {
                at_risk: true,
                reason:
                    "one purchase 200 days ago; 80 % of repeat buyers bought again within 95 days"
                        .into()
            }
        );
        // But on day 95 itself they still have time
        assert!(!churn_flag(&one_time_buyer(95), 1.0, Some(95), &config).at_risk);
        // And with nobody to compare with, nobody is flagged
        let flag = churn_flag(&one_time_buyer(900), 1.0, None, &config);
        assert!(!flag.at_risk);
        assert_eq!(
            flag.reason,
            "one purchase 900 days ago; no repeat buyers yet to compare with"
        );
    }
}
