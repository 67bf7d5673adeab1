//! Turns a customer's orders into purchase occasions, the unit every model
//! counts, and condenses occasions into the (x, t_x, T) summary the
//! probabilistic models are written in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One order as the analytics see it, whatever event stream it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFact {
    pub order_id: String,
    /// UTC day of placement (see [`crate::time::utc_day`]).
    pub placed_day: i64,
    /// ISO 4217 code such as "USD".
    pub currency: crate::money::Currency,
    pub total_minor: i64,
    pub cancelled: bool,
    /// Sum of all refunds on the order, in the order's currency.
    pub refunded_minor: i64,
}

impl OrderFact {
    /// Total less refunds; zero for a cancelled order. Not clipped at zero:
    /// a refund larger than the order is a data problem to surface, not hide.
    pub fn net_minor(&self) -> i64 {
        if self.cancelled {
            0
        } else {
            self.total_minor - self.refunded_minor
        }
    }
}

/// Everything a customer bought on one day in one currency. The models count
/// occasions rather than orders so that a basket split into several orders
/// (or a re-submitted checkout) is one purchase, as the BG/NBD papers assume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOccasion {
    pub day: i64,
    /// Net of refunds, summed over the day's orders.
    pub net_minor: i64,
    pub orders: u32,
}

/// A customer's occasions, split by currency.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CustomerOccasions {
    /// Occasions in the reporting currency, oldest first; the models use these.
    pub reporting: Vec<PurchaseOccasion>,
    /// Occasions in every other currency, oldest first, for separate reporting.
    /// They are never converted or added to the reporting figures.
    pub other_currencies: BTreeMap<String, Vec<PurchaseOccasion>>,
}

/// Groups non-cancelled orders into one occasion per (currency, day).
///
/// A refunded order still makes an occasion (the customer did come and buy);
/// the refund only lowers its value. Cancelled orders make none.
pub fn purchase_occasions(orders: &[OrderFact], reporting_currency: &str) -> CustomerOccasions {
    let mut by_currency_and_day: BTreeMap<&str, BTreeMap<i64, PurchaseOccasion>> = BTreeMap::new();
    for order in orders.iter().filter(|order| !order.cancelled) {
        let occasion = by_currency_and_day
            .entry(order.currency.as_str())
            .or_default()
            .entry(order.placed_day)
            .or_insert(PurchaseOccasion {
                day: order.placed_day,
                net_minor: 0,
                orders: 0,
            });
        occasion.net_minor += order.net_minor();
        occasion.orders += 1;
    }
    let mut occasions = CustomerOccasions::default();
    for (currency, days) in by_currency_and_day {
        let list: Vec<PurchaseOccasion> = days.into_values().collect();
        if currency == reporting_currency {
            occasions.reporting = list;
        } else {
            occasions.other_currencies.insert(currency.to_owned(), list);
        }
    }
    occasions
}

/// A customer's repeat-buying history at `as_of`, in the terms of Fader,
/// Hardie & Lee (2005): x = repeat occasions, t_x = first to last occasion,
/// T = first occasion to `as_of`. Days here; the models convert to weeks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepeatSummary {
    pub first_occasion_day: i64,
    /// x: occasions after the first.
    pub repeat_occasions: u32,
    /// t_x in days; 0 when there are no repeats.
    pub first_to_last_days: i64,
    /// T in days.
    pub first_to_as_of_days: i64,
    /// Net value of the repeat occasions (the first one excluded, as the
    /// Gamma-Gamma model asks).
    pub repeat_net_minor: i64,
    /// Days from the first to the second occasion, for the one-time-buyer rule.
    pub first_to_second_days: Option<i64>,
}

impl RepeatSummary {
    /// Mean value of a repeat occasion; `None` without repeats.
    pub fn mean_repeat_value_minor(&self) -> Option<f64> {
        (self.repeat_occasions > 0)
            .then(|| self.repeat_net_minor as f64 / f64::from(self.repeat_occasions))
    }
}

/// Summarises the occasions on or before `as_of`; `None` if there are none.
/// Occasions may come in any order; two on the same day are merged.
pub fn repeat_summary(occasions: &[PurchaseOccasion], as_of: i64) -> Option<RepeatSummary> {
    let mut net_by_day: BTreeMap<i64, i64> = BTreeMap::new();
    for occasion in occasions.iter().filter(|occasion| occasion.day <= as_of) {
        *net_by_day.entry(occasion.day).or_default() += occasion.net_minor;
    }
    let mut days = net_by_day.iter();
    let (first_day, _) = days.next()?;
    let second_day = days.next().map(|(day, _)| *day);
    let last_day = *net_by_day.keys().next_back()?;
    Some(RepeatSummary {
        first_occasion_day: *first_day,
        repeat_occasions: (net_by_day.len() - 1) as u32,
        first_to_last_days: last_day - first_day,
        first_to_as_of_days: as_of - first_day,
        repeat_net_minor: net_by_day.values().skip(1).sum(),
        first_to_second_days: second_day.map(|day| day - first_day),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn order(id: &str, day: i64, currency: &str, total: i64) -> OrderFact {
        OrderFact {
            order_id: id.into(),
            placed_day: day,
            currency: currency.into(),
            total_minor: total,
            cancelled: false,
            refunded_minor: 0,
        }
    }

    #[test]
    fn same_day_orders_make_one_occasion_and_cancellations_none() {
        // Given two orders on day 10, a cancelled one on day 11 and a partly
        // refunded one on day 12
        let mut cancelled = order("o-3", 11, "USD", 900);
        cancelled.cancelled = true;
        let mut refunded = order("o-4", 12, "USD", 1_000);
        refunded.refunded_minor = 250;
        let orders = vec![
            order("o-1", 10, "USD", 1_500),
            order("o-2", 10, "USD", 500),
            cancelled,
            refunded,
        ];
        // When they are grouped
        let occasions = purchase_occasions(&orders, "USD");
        // Then day 10 is one occasion of two orders and day 11 does not exist
        assert_eq!(
            occasions.reporting,
            vec![
                PurchaseOccasion {
                    day: 10,
                    net_minor: 2_000,
                    orders: 2
                },
                PurchaseOccasion {
                    day: 12,
                    net_minor: 750,
                    orders: 1
                },
            ]
        );
        assert!(occasions.other_currencies.is_empty());
    }

    #[test]
    fn other_currencies_are_kept_apart() {
        // Given orders in USD and EUR on the same day
        let orders = vec![order("o-1", 3, "USD", 100), order("o-2", 3, "EUR", 900)];
        // When grouped with USD as the reporting currency
        let occasions = purchase_occasions(&orders, "USD");
        // Then the EUR spend is reported on its own and not added to USD
        assert_eq!(occasions.reporting[0].net_minor, 100);
        assert_eq!(occasions.other_currencies["EUR"][0].net_minor, 900);
    }

    #[test]
    fn summary_counts_repeats_from_the_first_occasion() {
        // Given occasions on days 5, 12 and 40, and one after as_of
        let occasions: Vec<PurchaseOccasion> = [(5, 100), (12, 300), (40, 500), (90, 7)]
            .into_iter()
            .map(|(day, net_minor)| PurchaseOccasion {
                day,
                net_minor,
                orders: 1,
            })
            .collect();
        // When summarised at day 60
        let summary = repeat_summary(&occasions, 60).expect("has occasions");
        // Then x = 2, t_x = 35, T = 55 and the first occasion's value is left out
        assert_eq!(summary.repeat_occasions, 2);
        assert_eq!(summary.first_to_last_days, 35);
        assert_eq!(summary.first_to_as_of_days, 55);
        assert_eq!(summary.repeat_net_minor, 800);
        assert_eq!(summary.mean_repeat_value_minor(), Some(400.0));
        assert_eq!(summary.first_to_second_days, Some(7));
        assert_eq!(repeat_summary(&occasions, 4), None);
    }

    fn arbitrary_order() -> impl Strategy<Value = OrderFact> {
        (
            0_u8..50,
            0_i64..20,
            prop::sample::select(vec!["USD", "EUR"]),
            0_i64..10_000,
            any::<bool>(),
            0_i64..500,
        )
            .prop_map(
                |(id, day, currency, total, cancelled, refunded)| OrderFact {
                    order_id: format!("o-{id}"),
                    placed_day: day,
                    currency: currency.into(),
                    total_minor: total,
                    cancelled,
                    refunded_minor: refunded,
                },
            )
    }

    proptest! {
        #[test]
        fn occasions_do_not_depend_on_order_arrival(orders in proptest::collection::vec(arbitrary_order(), 0..30), rotation in 0_usize..30) {
            let mut shuffled = orders.clone();
            shuffled.reverse();
            let len = shuffled.len().max(1);
            shuffled.rotate_left(rotation % len);
            prop_assert_eq!(purchase_occasions(&orders, "USD"), purchase_occasions(&shuffled, "USD"));
        }

        #[test]
        fn occasions_keep_every_minor_unit(orders in proptest::collection::vec(arbitrary_order(), 0..30)) {
            let occasions = purchase_occasions(&orders, "USD");
            let grouped: i64 = occasions.reporting.iter().chain(occasions.other_currencies.values().flatten()).map(|occasion| occasion.net_minor).sum();
            let direct: i64 = orders.iter().map(OrderFact::net_minor).sum();
            prop_assert_eq!(grouped, direct);
        }
    }
}
