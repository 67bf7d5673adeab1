//! Loyalty membership: tier by rolling 12-month net spend, and a points
//! ledger (earned on net spend, spent oldest-first, expiring a year after
//! they were earned) evaluated at `as_of`.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::config::LoyaltyConfig;
use super::occasions::OrderFact;

/// Points spent, as recorded by the loyalty system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Redemption {
    pub day: i64,
    pub points: i64,
    pub event_id: String,
}

/// A redemption that asked for more points than the member had. It is
/// applied in full (the balance goes negative and later earnings pay it back)
/// and reported here, rather than trimmed to fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverRedemption {
    pub event_id: String,
    pub day: i64,
    pub requested_points: i64,
    pub available_points: i64,
    pub shortfall_points: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoyaltyStatus {
    pub tier: String,
    /// The day the member's rolling spend last rose to the tier's threshold
    /// (the qualifying order); `None` for the base tier.
    pub tier_since_day: Option<i64>,
    /// Net spend in the reporting currency over the rolling window.
    pub rolling_net_spend_minor: i64,
    /// May be negative after an over-redemption.
    pub points_balance: i64,
    /// Points that expire within `expiring_soon_days` after `as_of`.
    pub points_expiring_soon: i64,
    pub points_earned: i64,
    pub points_redeemed: i64,
    pub points_expired: i64,
    pub over_redemptions: Vec<OverRedemption>,
    /// Rolling net spend in other currencies, which neither counts towards
    /// the tier nor earns points; shown so it is not silently lost.
    pub other_currency_rolling_spend_minor: BTreeMap<String, i64>,
}

/// Points earned together, consumed and expired as one lot.
struct Lot {
    expires_on: i64,
    remaining: i64,
}

/// The membership at `as_of` (inclusive) from every order and redemption so
/// far. Orders and redemptions after `as_of` are ignored.
///
/// Points: each reporting-currency order earns ⌊net / minor_units_per_point⌋
/// on its placement day. [`OrderFact`] carries no day for cancellations and
/// refunds, so their reversal is applied at placement too: a cancelled order
/// earns nothing and a refunded one earns on its net. A redemption that used
/// points later reversed therefore shows up as an over-redemption, which is
/// what it is. Within a day, lots due to expire go first, then that day's
/// earnings (orders by id), then redemptions (by event id), oldest lots
/// first. Redemptions of zero or fewer points change nothing.
///
/// Tier: the highest whose threshold the net spend of the last
/// `rolling_window_days` reaches. An upgrade therefore takes effect on the
/// order that qualifies, and a downgrade as soon as the rolling spend at
/// `as_of` is below the threshold.
pub fn loyalty_status(
    orders: &[OrderFact],
    redemptions: &[Redemption],
    as_of: i64,
    reporting_currency: &str,
    config: &LoyaltyConfig,
) -> LoyaltyStatus {
    let mut counted_orders: Vec<&OrderFact> = orders
        .iter()
        .filter(|order| order.placed_day <= as_of && order.currency == reporting_currency)
        .collect();
    counted_orders.sort_by(|left, right| {
        (left.placed_day, &left.order_id).cmp(&(right.placed_day, &right.order_id))
    });

    let window_start = as_of - config.rolling_window_days;
    let rolling_net_spend_minor: i64 = counted_orders
        .iter()
        .filter(|order| order.placed_day > window_start)
        .map(|order| order.net_minor())
        .sum();
    let mut other_currency_rolling_spend_minor: BTreeMap<String, i64> = BTreeMap::new();
    for order in orders.iter().filter(|order| {
        order.currency != reporting_currency
            && order.placed_day <= as_of
            && order.placed_day > window_start
    }) {
        *other_currency_rolling_spend_minor
            .entry(order.currency.to_string())
            .or_default() += order.net_minor();
    }

    let tier_index = config
        .tiers
        .iter()
        .rposition(|tier| rolling_net_spend_minor >= tier.min_rolling_spend_minor)
        .unwrap_or(0);
    let tier_since_day = (tier_index > 0)
        .then(|| {
            qualifying_day(
                &counted_orders,
                config.tiers[tier_index].min_rolling_spend_minor,
                as_of,
                config.rolling_window_days,
            )
        })
        .flatten();

    let earnings: Vec<(i64, i64)> = counted_orders
        .iter()
        .map(|order| {
            (
                order.placed_day,
                order.net_minor().max(0) / config.minor_units_per_point,
            )
        })
        .filter(|(_, points)| *points > 0)
        .collect();
    let mut spending: Vec<&Redemption> = redemptions
        .iter()
        .filter(|redemption| redemption.day <= as_of && redemption.points > 0)
        .collect();
    spending.sort_by(|left, right| (left.day, &left.event_id).cmp(&(right.day, &right.event_id)));

    let mut ledger = Ledger::default();
    let mut next_earning = earnings.iter().peekable();
    let mut next_spending = spending.iter().peekable();
    loop {
        let earning_day = next_earning.peek().map(|(day, _)| *day);
        let spending_day = next_spending.peek().map(|redemption| redemption.day);
        let day = match (earning_day, spending_day) {
            (Some(earning), Some(spending)) => earning.min(spending),
            (Some(day), None) | (None, Some(day)) => day,
            (None, None) => break,
        };
        ledger.expire_through(day);
        while let Some((_, points)) = next_earning.next_if(|(earned_on, _)| *earned_on == day) {
            ledger.earn(*points, day + config.points_expire_after_days);
        }
        while let Some(redemption) = next_spending.next_if(|redemption| redemption.day == day) {
            ledger.redeem(redemption);
        }
    }
    ledger.expire_through(as_of);

    let expiring_soon_until = as_of + config.expiring_soon_days;
    LoyaltyStatus {
        tier: config.tiers[tier_index].name.clone(),
        tier_since_day,
        rolling_net_spend_minor,
        points_balance: ledger.balance(),
        points_expiring_soon: ledger
            .lots
            .iter()
            .filter(|lot| lot.expires_on <= expiring_soon_until)
            .map(|lot| lot.remaining)
            .sum(),
        points_earned: ledger.earned,
        points_redeemed: ledger.redeemed,
        points_expired: ledger.expired,
        over_redemptions: ledger.over_redemptions,
        other_currency_rolling_spend_minor,
    }
}

#[derive(Default)]
struct Ledger {
    /// Oldest first; with one expiry period that is also soonest-expiring first.
    lots: VecDeque<Lot>,
    /// Points redeemed beyond the balance, repaid from later earnings.
    owed: i64,
    earned: i64,
    redeemed: i64,
    expired: i64,
    over_redemptions: Vec<OverRedemption>,
}

impl Ledger {
    fn balance(&self) -> i64 {
        self.lots.iter().map(|lot| lot.remaining).sum::<i64>() - self.owed
    }

    fn expire_through(&mut self, day: i64) {
        while let Some(lot) = self.lots.front() {
            if lot.expires_on > day {
                break;
            }
            self.expired += lot.remaining;
            self.lots.pop_front();
        }
    }

    fn earn(&mut self, points: i64, expires_on: i64) {
        self.earned += points;
        let repaid = points.min(self.owed);
        self.owed -= repaid;
        if points > repaid {
            self.lots.push_back(Lot {
                expires_on,
                remaining: points - repaid,
            });
        }
    }

    fn redeem(&mut self, redemption: &Redemption) {
        self.redeemed += redemption.points;
        let available = self.balance().max(0);
        let mut still_needed = redemption.points;
        while still_needed > 0 {
            let Some(lot) = self.lots.front_mut() else {
                break;
            };
            let taken = still_needed.min(lot.remaining);
            lot.remaining -= taken;
            still_needed -= taken;
            if lot.remaining == 0 {
                self.lots.pop_front();
            }
        }
        if still_needed > 0 {
            self.owed += still_needed;
            self.over_redemptions.push(OverRedemption {
                event_id: redemption.event_id.clone(),
                day: redemption.day,
                requested_points: redemption.points,
                available_points: available,
                shortfall_points: still_needed,
            });
        }
    }
}

/// The latest day on which the rolling spend rose from below `threshold` to
/// at least it, looking only at days where the spend changes: an order's
/// placement and the day it leaves the window.
fn qualifying_day(
    orders: &[&OrderFact],
    threshold: i64,
    as_of: i64,
    rolling_window_days: i64,
) -> Option<i64> {
    let mut changes: BTreeMap<i64, i64> = BTreeMap::new();
    for order in orders {
        *changes.entry(order.placed_day).or_default() += order.net_minor();
        *changes
            .entry(order.placed_day + rolling_window_days)
            .or_default() -= order.net_minor();
    }
    let mut spend = 0;
    let mut since = None;
    for (day, change) in changes.range(..=as_of) {
        let was_below = spend < threshold;
        spend += change;
        if spend < threshold {
            since = None;
        } else if was_below {
            since = Some(*day);
        }
    }
    since
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::occasions::tests::order;
    use proptest::prelude::*;

    fn redemption(id: &str, day: i64, points: i64) -> Redemption {
        Redemption {
            day,
            points,
            event_id: id.into(),
        }
    }

    fn status(orders: &[OrderFact], redemptions: &[Redemption], as_of: i64) -> LoyaltyStatus {
        loyalty_status(orders, redemptions, as_of, "USD", &LoyaltyConfig::default())
    }

    #[test]
    fn an_upgrade_takes_effect_on_the_qualifying_order() {
        // Given 400.00 spent on day 10 and 150.00 on day 50
        let orders = [
            order("o-1", 10, "USD", 40_000),
            order("o-2", 50, "USD", 15_000),
        ];
        // Then the member is Bronze on day 49 and Silver from day 50
        assert_eq!(status(&orders, &[], 49).tier, "Bronze");
        let silver = status(&orders, &[], 50);
        assert_eq!(silver.tier, "Silver");
        assert_eq!(silver.tier_since_day, Some(50));
        assert_eq!(silver.rolling_net_spend_minor, 55_000);
        // And 1 point per 100 minor units was earned
        assert_eq!(silver.points_earned, 550);
    }

    #[test]
    fn a_downgrade_follows_the_rolling_spend_at_as_of() {
        let orders = [
            order("o-1", 10, "USD", 40_000),
            order("o-2", 50, "USD", 15_000),
        ];
        // Day 374 is the last day the day-10 order is inside the 365-day window
        assert_eq!(status(&orders, &[], 374).tier, "Silver");
        let after = status(&orders, &[], 375);
        assert_eq!(after.tier, "Bronze");
        assert_eq!(after.tier_since_day, None);
        assert_eq!(after.rolling_net_spend_minor, 15_000);
    }

    #[test]
    fn cancellations_and_refunds_do_not_earn_or_qualify() {
        let mut cancelled = order("o-1", 10, "USD", 100_000);
        cancelled.cancelled = true;
        let mut refunded = order("o-2", 11, "USD", 60_000);
        refunded.refunded_minor = 20_000;
        let result = status(
            &[cancelled, refunded, order("o-3", 12, "EUR", 900_000)],
            &[],
            20,
        );
        assert_eq!(result.tier, "Bronze");
        assert_eq!(result.rolling_net_spend_minor, 40_000);
        assert_eq!(result.points_earned, 400);
        // The EUR order is shown apart, not converted or added
        assert_eq!(result.other_currency_rolling_spend_minor["EUR"], 900_000);
    }

    #[test]
    fn points_expire_a_year_after_earning_oldest_first() {
        // Given 100 points earned on day 0 and 50 on day 200, and 30 redeemed on day 300
        let orders = [
            order("o-1", 0, "USD", 10_000),
            order("o-2", 200, "USD", 5_000),
        ];
        let redemptions = [redemption("r-1", 300, 30)];
        // Then the redemption used the day-0 lot, whose last 70 points expire on day 365
        let before = status(&orders, &redemptions, 340);
        assert_eq!(before.points_balance, 120);
        assert_eq!(before.points_expiring_soon, 70);
        let after = status(&orders, &redemptions, 365);
        assert_eq!(after.points_balance, 50);
        assert_eq!(after.points_expired, 70);
        assert_eq!(after.points_expiring_soon, 0);
    }

    #[test]
    fn an_over_redemption_is_recorded_in_full_and_flagged() {
        // Given 100 points and a redemption of 150
        let orders = [
            order("o-1", 0, "USD", 10_000),
            order("o-2", 20, "USD", 8_000),
        ];
        let redemptions = [redemption("r-1", 10, 150)];
        // When evaluated before and after the next order
        let owing = status(&orders, &redemptions, 15);
        // Then the balance shows the debt and the flag names the event
        assert_eq!(owing.points_balance, -50);
        assert_eq!(
            owing.over_redemptions,
            vec![OverRedemption {
                event_id: "r-1".into(),
                day: 10,
                requested_points: 150,
                available_points: 100,
                shortfall_points: 50
            }]
        );
        // And the next earnings pay the debt back first
        let repaid = status(&orders, &redemptions, 25);
        assert_eq!(repaid.points_balance, 30);
        assert_eq!(repaid.over_redemptions.len(), 1);
    }

    fn arbitrary_order() -> impl Strategy<Value = OrderFact> {
        (
            0_u16..500,
            0_i64..800,
            0_i64..50_000,
            any::<bool>(),
            0_i64..5_000,
        )
            .prop_map(|(id, day, total, cancelled, refunded)| OrderFact {
                order_id: format!("o-{id}"),
                placed_day: day,
                currency: "USD".into(),
                total_minor: total,
                cancelled,
                refunded_minor: refunded,
            })
    }

    proptest! {
        #[test]
        fn points_are_conserved(
            orders in proptest::collection::vec(arbitrary_order(), 0..25),
            redemptions in proptest::collection::vec((0_i64..800, 0_i64..600), 0..15),
            as_of in 0_i64..900,
        ) {
            let redemptions: Vec<Redemption> = redemptions
                .iter()
                .enumerate()
                .map(|(index, (day, points))| redemption(&format!("r-{index}"), *day, *points))
                .collect();
            let result = status(&orders, &redemptions, as_of);
            // Every point earned is still held, was spent, or expired.
            prop_assert_eq!(
                result.points_earned - result.points_redeemed - result.points_expired,
                result.points_balance
            );
            // The balance only goes negative through a flagged over-redemption.
            prop_assert!(result.points_balance >= 0 || !result.over_redemptions.is_empty());
            prop_assert!(result.points_expiring_soon <= result.points_balance.max(0));
        }
    }
}
