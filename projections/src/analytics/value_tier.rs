//! 80/20 value tiers over a population slice, from predicted CLV, P(alive)
//! and expected purchases.

use serde::{Deserialize, Serialize};

use super::config::ValueTierConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueInput {
    pub customer_id: String,
    /// Predicted CLV in reporting-currency minor units.
    pub clv: f64,
    pub p_alive: f64,
    pub expected_purchases: f64,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ValueTier {
    High,
    Potential,
    Secondary,
    Low,
}

impl ValueTier {
    pub const ALL: [ValueTier; 4] = [
        ValueTier::High,
        ValueTier::Potential,
        ValueTier::Secondary,
        ValueTier::Low,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ValueTier::High => "high",
            ValueTier::Potential => "potential",
            ValueTier::Secondary => "secondary",
            ValueTier::Low => "low",
        }
    }
}

/// How many of `population` make up the top `share`, rounded up so that a
/// small slice still has a top. The tiny offset keeps 0.2 × 10 at 2 despite
/// binary rounding.
fn share_count(share: f64, population: usize) -> usize {
    ((share * population as f64 - 1e-9).ceil().max(0.0) as usize).min(population)
}

/// Positions (0 = highest) of each input when ranked by `key`, descending.
/// Equal keys are ordered by customer id, then input position, so every
/// ranking is a strict order and tier sizes are exact.
fn descending_positions(customers: &[ValueInput], key: impl Fn(&ValueInput) -> f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..customers.len()).collect();
    order.sort_by(|left, right| {
        key(&customers[*right])
            .total_cmp(&key(&customers[*left]))
            .then_with(|| {
                customers[*left]
                    .customer_id
                    .cmp(&customers[*right].customer_id)
            })
            .then(left.cmp(right))
    });
    let mut positions = vec![0; customers.len()];
    for (position, index) in order.into_iter().enumerate() {
        positions[index] = position;
    }
    positions
}

/// One tier per input, in input order. The first rule that holds wins:
/// * `high`: among the top `high_top_fraction` by CLV;
/// * `potential`: P(alive) ≥ `potential_min_p_alive` and among the top
///   `potential_top_purchases_fraction` by expected purchases;
/// * `low`: among the bottom `low_bottom_fraction` by CLV with P(alive) <
///   `low_p_alive_below`;
/// * `secondary`: everyone else.
///
/// Shares are of the slice given, rounded up.
pub fn value_tiers(customers: &[ValueInput], config: &ValueTierConfig) -> Vec<ValueTier> {
    let population = customers.len();
    let by_clv = descending_positions(customers, |customer| customer.clv);
    let by_purchases = descending_positions(customers, |customer| customer.expected_purchases);
    let high_count = share_count(config.high_top_fraction, population);
    let potential_count = share_count(config.potential_top_purchases_fraction, population);
    let low_count = share_count(config.low_bottom_fraction, population);
    customers
        .iter()
        .enumerate()
        .map(|(index, customer)| {
            if by_clv[index] < high_count {
                ValueTier::High
            } else if customer.p_alive >= config.potential_min_p_alive
                && by_purchases[index] < potential_count
            {
                ValueTier::Potential
            } else if by_clv[index] >= population - low_count
                && customer.p_alive < config.low_p_alive_below
            {
                ValueTier::Low
            } else {
                ValueTier::Secondary
            }
        })
        .collect()
}

/// The tier boundaries of a population, so that one customer can be placed
/// without ranking everyone again. A customer tying with a boundary value
/// is inside it; with distinct values this agrees with [`value_tiers`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ValueCutoffs {
    /// The lowest CLV in the top `high_top_fraction`.
    pub high_min_clv: Option<f64>,
    /// The lowest expected purchases in the top `potential_top_purchases_fraction`.
    pub potential_min_purchases: Option<f64>,
    /// The highest CLV in the bottom `low_bottom_fraction`.
    pub low_max_clv: Option<f64>,
}

impl ValueCutoffs {
    pub fn from_population(customers: &[ValueInput], config: &ValueTierConfig) -> Self {
        let population = customers.len();
        let descending = |key: fn(&ValueInput) -> f64| -> Vec<f64> {
            let mut values: Vec<f64> = customers.iter().map(key).collect();
            values.sort_by(|left, right| right.total_cmp(left));
            values
        };
        let by_clv = descending(|customer| customer.clv);
        let by_purchases = descending(|customer| customer.expected_purchases);
        let nth = |values: &[f64], count: usize| count.checked_sub(1).map(|last| values[last]);
        let low_count = share_count(config.low_bottom_fraction, population);
        ValueCutoffs {
            high_min_clv: nth(&by_clv, share_count(config.high_top_fraction, population)),
            potential_min_purchases: nth(
                &by_purchases,
                share_count(config.potential_top_purchases_fraction, population),
            ),
            low_max_clv: (low_count > 0).then(|| by_clv[population - low_count]),
        }
    }

    /// The tier of one customer, by the rules of [`value_tiers`].
    pub fn tier(&self, customer: &ValueInput, config: &ValueTierConfig) -> ValueTier {
        if self
            .high_min_clv
            .is_some_and(|cutoff| customer.clv >= cutoff)
        {
            ValueTier::High
        } else if customer.p_alive >= config.potential_min_p_alive
            && self
                .potential_min_purchases
                .is_some_and(|cutoff| customer.expected_purchases >= cutoff)
        {
            ValueTier::Potential
        } else if customer.p_alive < config.low_p_alive_below
            && self
                .low_max_clv
                .is_some_and(|cutoff| customer.clv <= cutoff)
        {
            ValueTier::Low
        } else {
            ValueTier::Secondary
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_agree_with_the_ranking_when_values_are_distinct() {
        let config = ValueTierConfig::default();
        // Given 50 customers with distinct CLVs, purchases and a spread of P(alive)
        let customers: Vec<ValueInput> = (0..50)
            .map(|index| {
                input(
                    &format!("c{index:02}"),
                    f64::from((index * 37) % 50) * 10.0,
                    f64::from((index * 13) % 10) / 10.0,
                    f64::from((index * 29) % 50) / 7.0,
                )
            })
            .collect();
        let ranked = value_tiers(&customers, &config);
        let cutoffs = ValueCutoffs::from_population(&customers, &config);
        for (customer, tier) in customers.iter().zip(ranked) {
            assert_eq!(
                cutoffs.tier(customer, &config),
                tier,
                "{}",
                customer.customer_id
            );
        }
        // And an empty population puts everyone in `secondary`
        let empty = ValueCutoffs::from_population(&[], &config);
        assert_eq!(empty.tier(&customers[0], &config), ValueTier::Secondary);
    }

    fn input(id: &str, clv: f64, p_alive: f64, expected_purchases: f64) -> ValueInput {
        ValueInput {
            customer_id: id.into(),
            clv,
            p_alive,
            expected_purchases,
        }
    }

    #[test]
    fn top_fifth_by_clv_is_high_and_the_rest_split_by_outlook() {
        // Given ten customers with CLV 10..100
        let customers = vec![
            input("c01", 100.0, 0.9, 1.0),
            input("c02", 90.0, 0.9, 1.0),
            input("c03", 80.0, 0.8, 3.0), // top-40 % purchases, alive → potential
            input("c04", 70.0, 0.6, 3.0), // top-40 % purchases, but P(alive) < 0.7
            input("c05", 60.0, 0.9, 0.1),
            input("c06", 50.0, 0.2, 0.1),
            input("c07", 40.0, 0.2, 0.1), // bottom 40 % CLV, P(alive) < 0.5 → low
            input("c08", 30.0, 0.9, 0.1), // bottom 40 % CLV but alive → secondary
            input("c09", 20.0, 0.9, 2.0), // bottom CLV but many purchases ahead
            input("c10", 10.0, 0.1, 0.1),
        ];
        // When tiered
        let tiers = value_tiers(&customers, &ValueTierConfig::default());
        // Then
        use ValueTier::*;
        assert_eq!(
            tiers,
            vec![
                High, High, Potential, Secondary, Secondary, Secondary, Low, Secondary, Potential,
                Low
            ]
        );
    }

    #[test]
    fn ties_are_broken_by_customer_id_whatever_the_input_order() {
        // Given five customers with the same CLV
        let mut customers: Vec<ValueInput> = ["e", "c", "a", "d", "b"]
            .iter()
            .map(|id| input(id, 5.0, 0.6, 1.0))
            .collect();
        // When tiered in two different orders
        let tiers = value_tiers(&customers, &ValueTierConfig::default());
        customers.reverse();
        let reversed = value_tiers(&customers, &ValueTierConfig::default());
        // Then exactly one (ceil of 20 % of 5) is high, and it is "a" both times
        let high = |customers: &[ValueInput], tiers: &[ValueTier]| -> Vec<String> {
            customers
                .iter()
                .zip(tiers)
                .filter(|(_, tier)| **tier == ValueTier::High)
                .map(|(customer, _)| customer.customer_id.clone())
                .collect()
        };
        let original_order: Vec<ValueInput> = customers.iter().rev().cloned().collect();
        assert_eq!(high(&original_order, &tiers), vec!["a".to_string()]);
        assert_eq!(high(&customers, &reversed), vec!["a".to_string()]);
        assert!(value_tiers(&[], &ValueTierConfig::default()).is_empty());
    }
}
