//! Lifecycle stage: where a customer stands in their relationship with the
//! business, from prospect to churned (and back).

use serde::{Deserialize, Serialize};

use super::config::LifecycleConfig;
use super::occasions::PurchaseOccasion;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleStage {
    /// Has interacted but never ordered.
    Prospect,
    FirstTime,
    Repeat,
    Loyal,
    AtRisk,
    Churned,
    WonBack,
}

impl LifecycleStage {
    pub const ALL: [LifecycleStage; 7] = [
        LifecycleStage::Prospect,
        LifecycleStage::FirstTime,
        LifecycleStage::Repeat,
        LifecycleStage::Loyal,
        LifecycleStage::AtRisk,
        LifecycleStage::Churned,
        LifecycleStage::WonBack,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            LifecycleStage::Prospect => "prospect",
            LifecycleStage::FirstTime => "first_time",
            LifecycleStage::Repeat => "repeat",
            LifecycleStage::Loyal => "loyal",
            LifecycleStage::AtRisk => "at_risk",
            LifecycleStage::Churned => "churned",
            LifecycleStage::WonBack => "won_back",
        }
    }
}

/// What the stage is decided from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifecycleInput<'a> {
    /// Any recorded interaction (visit, ticket, survey, ...).
    pub has_interactions: bool,
    /// Reporting-currency occasions, as from
    /// [`super::occasions::purchase_occasions`]; those after `as_of` are ignored.
    pub occasions: &'a [PurchaseOccasion],
    /// From BG/NBD; `None` when no model has been fitted yet.
    pub p_alive: Option<f64>,
    /// From [`super::churn::churn_flag`].
    pub at_risk: bool,
}

/// The stage at `as_of`; `None` for someone with neither orders nor
/// interactions (nothing is known about them).
///
/// The first rule that holds wins, in this order:
/// 1. no occasion → `prospect` (if they interacted at all);
/// 2. `won_back`: within `won_back_days` of an occasion that came more than
///    `churned_after_days_without_occasion` after the one before it. It comes
///    first so that a returning customer keeps the label for the whole
///    period, whatever the models make of their short new history;
/// 3. `churned`: P(alive) < `churned_p_alive_below`, or no occasion in the
///    last `churned_after_days_without_occasion` days;
/// 4. `at_risk`: the churn flag is raised;
/// 5. `loyal`: at least `loyal_min_occasions` occasions in the
///    `loyal_window_days` ending on `as_of`;
/// 6. `repeat`: more than one occasion ever;
/// 7. `first_time`.
pub fn lifecycle_stage(
    input: &LifecycleInput<'_>,
    as_of: i64,
    config: &LifecycleConfig,
) -> Option<LifecycleStage> {
    let mut days: Vec<i64> = input
        .occasions
        .iter()
        .map(|occasion| occasion.day)
        .filter(|day| *day <= as_of)
        .collect();
    days.sort_unstable();
    days.dedup();
    let Some(last_day) = days.last().copied() else {
        return input.has_interactions.then_some(LifecycleStage::Prospect);
    };

    let churn_horizon = config.churned_after_days_without_occasion;
    let latest_return = days
        .windows(2)
        .rev()
        .find(|pair| pair[1] - pair[0] > churn_horizon)
        .map(|pair| pair[1]);
    if latest_return.is_some_and(|returned| as_of - returned < config.won_back_days) {
        return Some(LifecycleStage::WonBack);
    }
    let p_alive_says_churned = input
        .p_alive
        .is_some_and(|p_alive| p_alive < config.churned_p_alive_below);
    if p_alive_says_churned || as_of - last_day >= churn_horizon {
        return Some(LifecycleStage::Churned);
    }
    if input.at_risk {
        return Some(LifecycleStage::AtRisk);
    }
    let in_loyal_window = days
        .iter()
        .filter(|day| **day > as_of - config.loyal_window_days)
        .count();
    if in_loyal_window >= config.loyal_min_occasions as usize {
        return Some(LifecycleStage::Loyal);
    }
    if days.len() > 1 {
        return Some(LifecycleStage::Repeat);
    }
    Some(LifecycleStage::FirstTime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occasions(days: &[i64]) -> Vec<PurchaseOccasion> {
        days.iter()
            .map(|day| PurchaseOccasion {
                day: *day,
                net_minor: 1_000,
                orders: 1,
            })
            .collect()
    }

    fn stage(
        days: &[i64],
        p_alive: Option<f64>,
        at_risk: bool,
        as_of: i64,
    ) -> Option<LifecycleStage> {
        let occasions = occasions(days);
        let input = LifecycleInput {
            has_interactions: true,
            occasions: &occasions,
            p_alive,
            at_risk,
        };
        lifecycle_stage(&input, as_of, &LifecycleConfig::default())
    }

    #[test]
    fn without_orders_only_interactions_make_a_prospect() {
        assert_eq!(stage(&[], None, false, 100), Some(LifecycleStage::Prospect));
        let input = LifecycleInput {
            has_interactions: false,
            occasions: &[],
            p_alive: None,
            at_risk: false,
        };
        assert_eq!(
            lifecycle_stage(&input, 100, &LifecycleConfig::default()),
            None
        );
        // Orders after as_of do not count yet
        assert_eq!(
            stage(&[150], None, false, 100),
            Some(LifecycleStage::Prospect)
        );
    }

    #[test]
    fn buyers_progress_from_first_time_to_loyal() {
        assert_eq!(
            stage(&[90], Some(1.0), false, 100),
            Some(LifecycleStage::FirstTime)
        );
        assert_eq!(
            stage(&[50, 90], Some(0.9), false, 100),
            Some(LifecycleStage::Repeat)
        );
        assert_eq!(
            stage(&[20, 50, 70, 90], Some(0.9), false, 100),
            Some(LifecycleStage::Loyal)
        );
        // Four occasions, but one falls outside the 365-day window
        assert_eq!(
            stage(&[-300, 50, 70, 90], Some(0.9), false, 100),
            Some(LifecycleStage::Repeat)
        );
    }

    #[test]
    fn risk_beats_loyalty_and_churn_beats_risk() {
        assert_eq!(
            stage(&[20, 50, 70, 90], Some(0.4), true, 100),
            Some(LifecycleStage::AtRisk)
        );
        assert_eq!(
            stage(&[20, 50, 70, 90], Some(0.05), true, 100),
            Some(LifecycleStage::Churned)
        );
        // A year without an occasion is churned whatever P(alive) says
        assert_eq!(
            stage(&[0], Some(1.0), false, 365),
            Some(LifecycleStage::Churned)
        );
        assert_eq!(
            stage(&[0], Some(1.0), false, 364),
            Some(LifecycleStage::FirstTime)
        );
    }

    #[test]
    fn a_return_after_churn_is_won_back_for_ninety_days() {
        // Given a customer silent for 400 days who ordered again on day 500
        let days = [100, 500];
        // Then they are won back from that day through day 589
        assert_eq!(
            stage(&days, Some(0.9), false, 500),
            Some(LifecycleStage::WonBack)
        );
        assert_eq!(
            stage(&days, Some(0.9), true, 589),
            Some(LifecycleStage::WonBack)
        );
        // Even if they buy again in the meantime
        assert_eq!(
            stage(&[100, 500, 520], Some(0.9), false, 560),
            Some(LifecycleStage::WonBack)
        );
        // And afterwards follow the usual rules
        assert_eq!(
            stage(&days, Some(0.9), false, 590),
            Some(LifecycleStage::Repeat)
        );
        // A gap of exactly the churn horizon is not a win-back
        assert_eq!(
            stage(&[100, 465], Some(0.9), false, 470),
            Some(LifecycleStage::Repeat)
        );
    }
}
