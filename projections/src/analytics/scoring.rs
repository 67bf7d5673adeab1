//! One customer's scores at an `as_of`: the facts the customer view keeps,
//! cut at `as_of`, scored against models fitted over the whole population.
//!
//! The split follows what changes when: [`CustomerFacts`] change with each
//! of the customer's events; [`PopulationModels`] (the BG/NBD and
//! Gamma-Gamma fits, the one-time-buyer horizon and the value-tier cutoffs)
//! are fitted over everyone and change slowly; the [`RfmDistribution`] is
//! kept exact one customer at a time. [`score`] combines them and is pure.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::bg_nbd::{BgNbdFit, BgNbdParameters, fit_bg_nbd};
use super::churn::{churn_flag, second_occasion_gap_percentile};
use super::config::{AnalyticsConfig, ClvConfig};
use super::gamma_gamma::{
    GammaGammaFit, GammaGammaParameters, clv_month_ends, discounted_purchases, fit_gamma_gamma,
};
use super::lifecycle::{LifecycleInput, LifecycleStage, lifecycle_stage};
use super::loyalty::{OverRedemption, Redemption, loyalty_status};
use super::occasions::{
    CustomerOccasions, OrderFact, RepeatSummary, purchase_occasions, repeat_summary,
};
use super::rfm::{RfmDistribution, RfmSegment, RfmValues, rfm_values};
use super::value_tier::{ValueCutoffs, ValueInput, ValueTier};
use crate::customer_view::{MailFact, ProfileState};
use crate::money::Currency;
use crate::time::utc_day;

/// One order with the days its pieces happened, so it can be cut at any
/// `as_of`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderHistory {
    pub order_id: String,
    pub placed_day: i64,
    /// The instant it was placed, for attribution windows.
    pub placed_at_ms: i64,
    pub currency: Currency,
    pub total_minor: i64,
    pub cancelled_day: Option<i64>,
    /// (day, amount) of each refund.
    pub refunds: Vec<(i64, i64)>,
}

/// What the analytics need of one person, taken from their merged
/// [`ProfileState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerFacts {
    pub orders: Vec<OrderHistory>,
    pub redemptions: Vec<Redemption>,
    /// The day of their first recorded event of any kind.
    pub first_seen_day: Option<i64>,
    /// Their campaign email and email consent withdrawals; `None` for the
    /// many who have neither, so they cost a pointer.
    pub mail: Option<Box<MailHistory>>,
}

/// A person's campaign email events and email consent withdrawals, each
/// oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailHistory {
    pub mail: Vec<MailFact>,
    pub consent_withdrawn_ms: Vec<i64>,
}

impl CustomerFacts {
    pub fn from_profile(state: &ProfileState) -> Self {
        let mut orders: Vec<OrderHistory> = state
            .orders
            .iter()
            .filter_map(|(order_id, facts)| {
                let placed = facts.placed.as_ref()?;
                let placed_day = utc_day(placed.value.at_ms);
                let mut refunds: Vec<(i64, i64)> = state
                    .refunds
                    .values()
                    .filter(|refund| &refund.order_id == order_id)
                    .map(|refund| (utc_day(refund.at_ms), refund.amount_minor))
                    .collect();
                // Refunds stored before their times were kept (state format
                // 1) count from the day the order was placed.
                let timed: i64 = refunds.iter().map(|(_, amount)| amount).sum();
                if facts.refunded_minor != timed {
                    refunds.push((placed_day, facts.refunded_minor - timed));
                }
                Some(OrderHistory {
                    order_id: order_id.clone(),
                    placed_day,
                    placed_at_ms: placed.value.at_ms,
                    currency: Currency::new(&placed.value.currency),
                    total_minor: placed.value.total_minor,
                    cancelled_day: facts.cancelled_at_ms.map(utc_day),
                    refunds,
                })
            })
            .collect();
        orders.sort_by(|left, right| {
            (left.placed_day, &left.order_id).cmp(&(right.placed_day, &right.order_id))
        });
        let redemptions = state
            .redemptions
            .iter()
            .map(|(event_id, redemption)| Redemption {
                day: utc_day(redemption.at_ms),
                points: redemption.points,
                event_id: event_id.clone(),
            })
            .collect();
        let mail =
            (!state.mail.is_empty() || !state.email_consent_withdrawn.is_empty()).then(|| {
                let mut mail: Vec<MailFact> = state.mail.values().cloned().collect();
                mail.sort_by(|left, right| {
                    (left.at_ms, left.kind, &left.campaign_id).cmp(&(
                        right.at_ms,
                        right.kind,
                        &right.campaign_id,
                    ))
                });
                let mut consent_withdrawn_ms: Vec<i64> =
                    state.email_consent_withdrawn.values().copied().collect();
                consent_withdrawn_ms.sort_unstable();
                Box::new(MailHistory {
                    mail,
                    consent_withdrawn_ms,
                })
            });
        CustomerFacts {
            orders,
            redemptions,
            first_seen_day: state.first_seen_ms.map(utc_day),
            mail,
        }
    }

    /// The orders as they stood at the end of `as_of`: placed by then,
    /// cancelled only if cancelled by then, net of the refunds made by then.
    pub fn orders_at(&self, as_of: i64) -> Vec<OrderFact> {
        self.orders
            .iter()
            .filter(|order| order.placed_day <= as_of)
            .map(|order| OrderFact {
                order_id: order.order_id.clone(),
                placed_day: order.placed_day,
                currency: order.currency.clone(),
                total_minor: order.total_minor,
                cancelled: order.cancelled_day.is_some_and(|day| day <= as_of),
                refunded_minor: order
                    .refunds
                    .iter()
                    .filter(|(day, _)| *day <= as_of)
                    .map(|(_, amount)| amount)
                    .sum(),
            })
            .collect()
    }

    /// Known by `as_of` at all (an event on or before that day).
    pub fn known_at(&self, as_of: i64) -> bool {
        self.first_seen_day.is_some_and(|day| day <= as_of)
    }
}

/// A customer's model inputs at one `as_of`.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerInputs {
    pub orders: Vec<OrderFact>,
    pub occasions: CustomerOccasions,
    /// `None` without an occasion by `as_of`.
    pub summary: Option<RepeatSummary>,
    /// `None` without an occasion in the RFM window.
    pub rfm: Option<RfmValues>,
}

pub fn inputs(facts: &CustomerFacts, as_of: i64, config: &AnalyticsConfig) -> CustomerInputs {
    let orders = facts.orders_at(as_of);
    let occasions = purchase_occasions(&orders, &config.reporting_currency);
    let summary = repeat_summary(&occasions.reporting, as_of);
    let rfm = rfm_values(&occasions.reporting, as_of, &config.rfm);
    CustomerInputs {
        orders,
        occasions,
        summary,
        rfm,
    }
}

/// The population-wide models at one `as_of`. A model that cannot be fitted
/// (too little data) keeps the reason, which the API shows.
#[derive(Debug, Clone, PartialEq)]
pub struct PopulationModels {
    pub as_of: i64,
    pub bg_nbd: Result<BgNbdFit, String>,
    pub gamma_gamma: Result<GammaGammaFit, String>,
    /// Days without a second purchase after which a one-time buyer is at risk.
    pub one_time_buyer_horizon_days: Option<i64>,
    pub value_cutoffs: ValueCutoffs,
    /// Predictions at these fits, remembered per (x, T).
    pub predictor: Predictor,
}

/// BG/NBD's and Gamma-Gamma's view of one customer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prediction {
    pub p_alive: Option<f64>,
    pub expected_purchases: Option<f64>,
    pub clv_minor: Option<f64>,
}

/// BG/NBD's and Gamma-Gamma's predictions for anyone, at one pair of fits.
///
/// What a customer is expected to buy if alive depends only on their repeat
/// occasions x and age T, not on the day of their last occasion; a million
/// customers share some tens of thousands of (x, T) pairs. Each pair's
/// expectations (at the prediction horizon, and discounted over the CLV's
/// months) are computed once and remembered, which makes scoring everyone
/// cost little more than P(alive) per customer. The memory holds one entry
/// per pair and lives as long as the fits.
pub struct Predictor {
    bg_nbd: Option<BgNbdParameters>,
    gamma_gamma: Option<GammaGammaParameters>,
    prediction_horizon_days: i64,
    clv: ClvConfig,
    clv_month_ends: Vec<i64>,
    if_alive: Mutex<HashMap<(u32, i64), IfAlive>>,
}

/// A customer's expected purchases if alive: within the prediction horizon,
/// and discounted over the CLV horizon.
#[derive(Debug, Clone, Copy)]
struct IfAlive {
    purchases: f64,
    discounted_clv_purchases: f64,
}

impl Predictor {
    pub fn new(
        bg_nbd: Option<&BgNbdFit>,
        gamma_gamma: Option<&GammaGammaFit>,
        config: &AnalyticsConfig,
    ) -> Self {
        Predictor {
            bg_nbd: bg_nbd.map(|fit| fit.parameters),
            gamma_gamma: gamma_gamma.map(|fit| fit.parameters),
            prediction_horizon_days: config.bg_nbd.prediction_horizon_days,
            clv: config.clv.clone(),
            clv_month_ends: clv_month_ends(&config.clv),
            if_alive: Mutex::new(HashMap::new()),
        }
    }

    pub fn predict(&self, summary: &RepeatSummary) -> Prediction {
        let Some(bg_nbd) = &self.bg_nbd else {
            return Prediction::default();
        };
        let p_alive = bg_nbd.probability_alive(summary);
        let if_alive = self.if_alive(bg_nbd, summary);
        Prediction {
            p_alive: Some(p_alive),
            expected_purchases: Some(p_alive * if_alive.purchases),
            clv_minor: self.gamma_gamma.and_then(|gamma_gamma| {
                let order_value = gamma_gamma.expected_order_value_minor(summary)?;
                Some(order_value * p_alive * if_alive.discounted_clv_purchases)
            }),
        }
    }

    fn if_alive(&self, bg_nbd: &BgNbdParameters, summary: &RepeatSummary) -> IfAlive {
        let key = (summary.repeat_occasions, summary.first_to_as_of_days);
        if let Some(known) = self.if_alive.lock().expect("predictor lock").get(&key) {
            return *known;
        }
        let horizons: Vec<i64> = std::iter::once(self.prediction_horizon_days)
            .chain(self.clv_month_ends.iter().copied())
            .collect();
        let purchases = bg_nbd.expected_purchases_if_alive(key.0, key.1, &horizons);
        let computed = IfAlive {
            purchases: purchases[0],
            discounted_clv_purchases: discounted_purchases(
                &purchases[1..],
                &self.clv_month_ends,
                &self.clv,
            ),
        };
        self.if_alive
            .lock()
            .expect("predictor lock")
            .insert(key, computed);
        computed
    }
}

impl Clone for Predictor {
    /// The same fits with nothing remembered yet.
    fn clone(&self) -> Self {
        Predictor {
            bg_nbd: self.bg_nbd,
            gamma_gamma: self.gamma_gamma,
            prediction_horizon_days: self.prediction_horizon_days,
            clv: self.clv.clone(),
            clv_month_ends: self.clv_month_ends.clone(),
            if_alive: Mutex::new(HashMap::new()),
        }
    }
}

impl PartialEq for Predictor {
    fn eq(&self, other: &Self) -> bool {
        self.bg_nbd == other.bg_nbd
            && self.gamma_gamma == other.gamma_gamma
            && self.prediction_horizon_days == other.prediction_horizon_days
            && self.clv == other.clv
    }
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Predictor")
            .field("bg_nbd", &self.bg_nbd)
            .field("gamma_gamma", &self.gamma_gamma)
            .field("prediction_horizon_days", &self.prediction_horizon_days)
            .field("clv", &self.clv)
            .finish_non_exhaustive()
    }
}

impl PopulationModels {
    /// Fits every model over the summaries of all customers with an occasion
    /// by `as_of`: BG/NBD, Gamma-Gamma, and everything population-wide (the
    /// one-time-buyer horizon, the value-tier cutoffs).
    pub fn fit(summaries: &[RepeatSummary], as_of: i64, config: &AnalyticsConfig) -> Self {
        let bg_nbd = fit_bg_nbd(summaries, None).map_err(|error| error.to_string());
        let gamma_gamma = fit_gamma_gamma(summaries).map_err(|error| error.to_string());
        let predictor = Predictor::new(bg_nbd.as_ref().ok(), gamma_gamma.as_ref().ok(), config);
        let one_time_buyer_horizon_days =
            second_occasion_gap_percentile(summaries, config.churn.one_time_buyer_percentile);
        let values: Vec<ValueInput> = summaries
            .iter()
            .map(|summary| {
                let prediction = predictor.predict(summary);
                ValueInput {
                    customer_id: String::new(),
                    clv: prediction.clv_minor.unwrap_or(0.0),
                    p_alive: prediction.p_alive.unwrap_or(1.0),
                    expected_purchases: prediction.expected_purchases.unwrap_or(0.0),
                }
            })
            .collect();
        PopulationModels {
            as_of,
            value_cutoffs: ValueCutoffs::from_population(&values, &config.value_tier),
            bg_nbd,
            gamma_gamma,
            one_time_buyer_horizon_days,
            predictor,
        }
    }
}

/// The fitted part of [`PopulationModels`], to keep on disk: the
/// predictor's remembered expectations are recomputed on demand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredModels {
    pub as_of: i64,
    pub bg_nbd: Result<BgNbdFit, String>,
    pub gamma_gamma: Result<GammaGammaFit, String>,
    pub one_time_buyer_horizon_days: Option<i64>,
    pub value_cutoffs: ValueCutoffs,
}

impl PopulationModels {
    pub fn to_stored(&self) -> StoredModels {
        StoredModels {
            as_of: self.as_of,
            bg_nbd: self.bg_nbd.clone(),
            gamma_gamma: self.gamma_gamma.clone(),
            one_time_buyer_horizon_days: self.one_time_buyer_horizon_days,
            value_cutoffs: self.value_cutoffs.clone(),
        }
    }

    /// The models as fitted, under `config` (which sets the prediction
    /// horizons).
    pub fn from_stored(stored: StoredModels, config: &AnalyticsConfig) -> Self {
        let predictor = Predictor::new(
            stored.bg_nbd.as_ref().ok(),
            stored.gamma_gamma.as_ref().ok(),
            config,
        );
        PopulationModels {
            as_of: stored.as_of,
            bg_nbd: stored.bg_nbd,
            gamma_gamma: stored.gamma_gamma,
            one_time_buyer_horizon_days: stored.one_time_buyer_horizon_days,
            value_cutoffs: stored.value_cutoffs,
            predictor,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RfmDocument {
    pub recency_days: i64,
    pub frequency: u32,
    pub monetary_minor: i64,
    pub currency: String,
    pub r: u8,
    pub f: u8,
    pub m: u8,
    pub segment: RfmSegment,
    pub segment_name: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChurnDocument {
    pub p_alive: Option<f64>,
    pub expected_purchases: Option<f64>,
    pub horizon_days: i64,
    pub at_risk: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClvDocument {
    pub expected_value_minor: Option<f64>,
    pub currency: String,
    pub horizon_days: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LoyaltyDocument {
    pub tier: String,
    pub points: i64,
    pub points_expiring_30d: i64,
    pub rolling_net_spend_minor: i64,
    pub over_redemptions: Vec<OverRedemption>,
}

/// The answer of `GET /v1/customers/{id}/scores`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CustomerScores {
    pub as_of: String,
    /// `None` without an occasion in the RFM window.
    pub rfm: Option<RfmDocument>,
    /// `None` without any purchase occasion by `as_of`.
    pub churn: Option<ChurnDocument>,
    pub clv: Option<ClvDocument>,
    /// `None` when nothing was known of them by `as_of`.
    pub lifecycle: Option<LifecycleStage>,
    /// `None` for someone who has not bought by `as_of`.
    pub value_tier: Option<ValueTier>,
    pub loyalty: LoyaltyDocument,
}

/// Scores one customer at `as_of` against the population's RFM distribution
/// and models (which must be for the same `as_of`).
pub fn score(
    facts: &CustomerFacts,
    as_of: i64,
    rfm_population: &RfmDistribution,
    models: &PopulationModels,
    config: &AnalyticsConfig,
) -> CustomerScores {
    let inputs = inputs(facts, as_of, config);
    score_inputs(facts, &inputs, as_of, rfm_population, models, config)
}

/// [`score`] for inputs already taken from `facts` at `as_of`, for callers
/// that need the inputs too.
pub fn score_inputs(
    facts: &CustomerFacts,
    inputs: &CustomerInputs,
    as_of: i64,
    rfm_population: &RfmDistribution,
    models: &PopulationModels,
    config: &AnalyticsConfig,
) -> CustomerScores {
    let currency = config.reporting_currency.clone();
    let rfm = inputs.rfm.and_then(|values| {
        let scores = rfm_population.score(&values)?;
        Some(RfmDocument {
            recency_days: values.recency_days(as_of),
            frequency: values.frequency,
            monetary_minor: values.monetary_minor,
            currency: currency.clone(),
            r: scores.recency,
            f: scores.frequency,
            m: scores.monetary,
            segment: scores.segment(),
            segment_name: scores.segment().as_str(),
        })
    });
    let prediction = inputs
        .summary
        .as_ref()
        .map(|summary| models.predictor.predict(summary));
    let churn = inputs
        .summary
        .as_ref()
        .zip(prediction)
        .map(|(summary, prediction)| {
            let flag = match (summary.repeat_occasions, prediction.p_alive) {
                (repeats, None) if repeats > 0 => super::churn::ChurnFlag {
                    at_risk: false,
                    reason: format!(
                        "no BG/NBD model at this date ({})",
                        models.bg_nbd.as_ref().err().map_or("", String::as_str)
                    ),
                },
                (_, p_alive) => churn_flag(
                    summary,
                    p_alive.unwrap_or(1.0),
                    models.one_time_buyer_horizon_days,
                    &config.churn,
                ),
            };
            ChurnDocument {
                p_alive: prediction.p_alive,
                expected_purchases: prediction.expected_purchases,
                horizon_days: config.bg_nbd.prediction_horizon_days,
                at_risk: flag.at_risk,
                reason: flag.reason,
            }
        });
    let clv = prediction.map(|prediction| ClvDocument {
        expected_value_minor: prediction.clv_minor,
        currency: currency.clone(),
        horizon_days: config.clv.horizon_days,
    });
    let lifecycle = lifecycle_stage(
        &LifecycleInput {
            has_interactions: facts.known_at(as_of),
            occasions: &inputs.occasions.reporting,
            p_alive: prediction.and_then(|prediction| prediction.p_alive),
            at_risk: churn.as_ref().is_some_and(|churn| churn.at_risk),
        },
        as_of,
        &config.lifecycle,
    );
    let value_tier = prediction.map(|prediction| {
        models.value_cutoffs.tier(
            &ValueInput {
                customer_id: String::new(),
                clv: prediction.clv_minor.unwrap_or(0.0),
                p_alive: prediction.p_alive.unwrap_or(1.0),
                expected_purchases: prediction.expected_purchases.unwrap_or(0.0),
            },
            &config.value_tier,
        )
    });
    let loyalty = loyalty_status(
        &inputs.orders,
        &facts.redemptions,
        as_of,
        &config.reporting_currency,
        &config.loyalty,
    );
    CustomerScores {
        as_of: crate::time::format_day(as_of),
        rfm,
        churn,
        clv,
        lifecycle,
        value_tier,
        loyalty: LoyaltyDocument {
            tier: loyalty.tier,
            points: loyalty.points_balance,
            points_expiring_30d: loyalty.points_expiring_soon,
            rolling_net_spend_minor: loyalty.rolling_net_spend_minor,
            over_redemptions: loyalty.over_redemptions,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::config::AnalyticsConfig;
    use crate::analytics::gamma_gamma::customer_lifetime_value;
    use crate::analytics::rfm::RfmPopulation;
    use crate::customer_view::ProfileState;
    use rapport_proto::v1::{
        CustomerRecord, Event, EventResolved, OrderCancelled, OrderPlaced, OrderRefunded,
        PointsRedeemed, SourcePosition, customer_record, event,
    };

    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn remembered_predictions_equal_the_models_own_formulas() {
        // Given fits and customers of whom two share (x, T) but not t_x
        let bg_nbd = BgNbdFit {
            parameters: BgNbdParameters {
                r: 0.24,
                alpha: 4.41,
                a: 0.79,
                b: 2.43,
            },
            log_likelihood: 0.0,
            customers: 0,
        };
        let gamma_gamma = GammaGammaFit {
            parameters: GammaGammaParameters {
                p: 6.25,
                q: 3.74,
                gamma: 1_500.0,
            },
            log_likelihood: 0.0,
            customers: 0,
        };
        let config = AnalyticsConfig::default();
        let customer =
            |repeats: u32, first_to_last_days: i64, repeat_net_minor: i64| RepeatSummary {
                first_occasion_day: 0,
                repeat_occasions: repeats,
                first_to_last_days,
                first_to_as_of_days: 200,
                repeat_net_minor,
                first_to_second_days: (repeats > 0).then_some(first_to_last_days.min(10)),
            };
        let predictor = Predictor::new(Some(&bg_nbd), Some(&gamma_gamma), &config);
        for summary in [
            customer(0, 0, 0),
            customer(3, 20, 9_000),
            customer(3, 190, 3_000),
            customer(3, 20, 9_000),
        ] {
            // When each is predicted through the remembered expectations
            let prediction = predictor.predict(&summary);
            // Then the answers are those of the per-customer formulas
            let parameters = &bg_nbd.parameters;
            let close =
                |ours: f64, theirs: f64| (ours - theirs).abs() <= 1e-12 * theirs.abs().max(1.0);
            assert_eq!(
                prediction.p_alive,
                Some(parameters.probability_alive(&summary))
            );
            let purchases =
                parameters.expected_purchases(&summary, config.bg_nbd.prediction_horizon_days);
            assert!(close(prediction.expected_purchases.unwrap(), purchases));
            let clv =
                customer_lifetime_value(parameters, &gamma_gamma.parameters, &summary, &config.clv);
            assert_eq!(prediction.clv_minor.is_some(), clv.is_some());
            if let (Some(ours), Some(theirs)) = (prediction.clv_minor, clv) {
                assert!(close(ours, theirs), "{ours} vs {theirs}");
            }
        }
        assert_eq!(
            predictor.if_alive.lock().unwrap().len(),
            2,
            "one entry per (x, T)"
        );
    }

    fn record(event_id: &str, day: i64, payload: event::Payload) -> CustomerRecord {
        CustomerRecord {
            customer_id: "c-1".into(),
            source: Some(SourcePosition::default()),
            received_at_ms: day * DAY_MS,
            body: Some(customer_record::Body::Event(EventResolved {
                event: Some(Event {
                    event_id: event_id.into(),
                    r#type: "x".into(),
                    occurred_at_ms: day * DAY_MS + 3_600_000,
                    payload: Some(payload),
                    ..Default::default()
                }),
                linked: vec![],
            })),
        }
    }

    fn order(id: &str, day: i64, order_id: &str, total: i64) -> CustomerRecord {
        record(
            id,
            day,
            event::Payload::OrderPlaced(OrderPlaced {
                order_id: order_id.into(),
                total_minor: total,
                currency: "USD".into(),
                items: vec![],
            }),
        )
    }

    #[test]
    fn orders_are_cut_at_as_of_with_their_cancellations_and_refunds() {
        // Given an order on day 10, refunded in part on day 12, and one on
        // day 11 cancelled on day 13
        let mut state = ProfileState::default();
        state.apply(&order("e1", 10, "o-1", 10_000));
        state.apply(&order("e2", 11, "o-2", 5_000));
        state.apply(&record(
            "e3",
            12,
            event::Payload::OrderRefunded(OrderRefunded {
                order_id: "o-1".into(),
                amount_minor: 2_500,
            }),
        ));
        state.apply(&record(
            "e4",
            13,
            event::Payload::OrderCancelled(OrderCancelled {
                order_id: "o-2".into(),
            }),
        ));
        let facts = CustomerFacts::from_profile(&state);
        // When cut on days 10, 12 and 13
        let net = |as_of: i64| -> Vec<i64> {
            facts
                .orders_at(as_of)
                .iter()
                .map(OrderFact::net_minor)
                .collect()
        };
        // Then each day sees only what had happened by its end
        assert_eq!(net(10), [10_000]);
        assert_eq!(net(12), [7_500, 5_000]);
        assert_eq!(net(13), [7_500, 0]);
        assert!(facts.known_at(10) && !facts.known_at(9));
    }

    #[test]
    fn a_customer_is_scored_against_the_population() {
        let config = AnalyticsConfig::default();
        // Given 40 customers buying every 10 days for a while, and our
        // customer who bought on days 100, 110 and 120 and redeemed points
        let mut population = RfmPopulation::new();
        let mut summaries = Vec::new();
        let as_of = 200;
        for index in 0..40_i64 {
            let mut state = ProfileState::default();
            for purchase in 0..(1 + index % 5) {
                let day = 60 + index + purchase * 10;
                state.apply(&order(
                    &format!("e{index}-{purchase}"),
                    day,
                    &format!("o{index}-{purchase}"),
                    1_000 + 100 * index,
                ));
            }
            let inputs = inputs(&CustomerFacts::from_profile(&state), as_of, &config);
            population.upsert(&format!("c{index}"), inputs.rfm);
            summaries.extend(inputs.summary);
        }
        let mut state = ProfileState::default();
        for (day, id) in [(100, "a"), (110, "b"), (120, "c")] {
            state.apply(&order(id, day, id, 60_000));
        }
        state.apply(&record(
            "r",
            150,
            event::Payload::PointsRedeemed(PointsRedeemed {
                points: 100,
                reason: String::new(),
            }),
        ));
        let facts = CustomerFacts::from_profile(&state);
        let ours = inputs(&facts, as_of, &config);
        population.upsert("c-1", ours.rfm);
        summaries.extend(ours.summary);
        let models = PopulationModels::fit(&summaries, as_of, &config);

        // When scored
        let scores = score(&facts, as_of, population.distribution(), &models, &config);

        // Then every part is there and consistent with the inputs
        let rfm = scores.rfm.expect("bought in the window");
        assert_eq!((rfm.recency_days, rfm.frequency), (80, 3));
        assert_eq!(rfm.monetary_minor, 180_000);
        assert_eq!(rfm.m, 5, "the biggest spender");
        let churn = scores.churn.expect("a buyer");
        let p_alive = churn.p_alive.expect("BG/NBD fitted");
        // P(alive) by the paper's closed form (Fader, Hardie & Lee 2005,
        // eq. 13) at the fitted parameters: x = 2 repeats, t_x = 20 and
        // T = 100 days, in weeks.
        let fitted = models.bg_nbd.as_ref().expect("fitted").parameters;
        let (x, t_x, age) = (2.0, 20.0 / 7.0, 100.0 / 7.0);
        let by_hand = 1.0
            / (1.0
                + fitted.a / (fitted.b + x - 1.0)
                    * ((fitted.alpha + age) / (fitted.alpha + t_x)).powf(fitted.r + x));
        assert!(
            (p_alive - by_hand).abs() < 1e-9,
            "{p_alive} against {by_hand}"
        );
        assert!(churn.reason.contains("P(alive)"), "{}", churn.reason);
        assert!(scores.clv.expect("a buyer").expected_value_minor.is_some());
        assert!(scores.lifecycle.is_some());
        assert!(scores.value_tier.is_some());
        // 1 800 points earned, 100 spent, the tier from 1 800.00 rolling spend
        assert_eq!(scores.loyalty.points, 1_700);
        assert_eq!(scores.loyalty.tier, "Silver");
        assert_eq!(scores.as_of, "1970-07-20");
    }

    #[test]
    fn a_prospect_has_a_stage_and_a_base_tier_but_no_scores() {
        let config = AnalyticsConfig::default();
        let mut state = ProfileState::default();
        state.apply(&record(
            "v",
            5,
            event::Payload::WebPageViewed(Default::default()),
        ));
        let facts = CustomerFacts::from_profile(&state);
        let models = PopulationModels::fit(&[], 10, &config);
        let scores = score(&facts, 10, &RfmDistribution::new(), &models, &config);
        assert_eq!(scores.lifecycle, Some(LifecycleStage::Prospect));
        assert!(scores.rfm.is_none() && scores.churn.is_none() && scores.value_tier.is_none());
        assert_eq!(scores.loyalty.tier, "Bronze");
        assert!(models.bg_nbd.is_err());
        // Before their first visit nothing was known of them
        let before = score(&facts, 4, &RfmDistribution::new(), &models, &config);
        assert_eq!(before.lifecycle, None);
    }

    fn arbitrary_purchase_event() -> impl proptest::strategy::Strategy<Value = CustomerRecord> {
        use proptest::prelude::*;
        (0_u8..4, 0_i64..400, 0_u8..5, 1_i64..20_000).prop_map(|(kind, day, key, amount)| {
            let id = format!("e{kind}-{day}-{key}-{amount}");
            let order_id = format!("o-{key}");
            match kind {
                0 => order(&id, day, &order_id, amount),
                1 => record(
                    &id,
                    day,
                    event::Payload::OrderCancelled(OrderCancelled { order_id }),
                ),
                2 => record(
                    &id,
                    day,
                    event::Payload::OrderRefunded(OrderRefunded {
                        order_id,
                        amount_minor: amount / 3,
                    }),
                ),
                _ => record(
                    &id,
                    day,
                    event::Payload::PointsRedeemed(PointsRedeemed {
                        points: amount / 100,
                        reason: String::new(),
                    }),
                ),
            }
        })
    }

    proptest::proptest! {
        /// A person's log split over two profiles that later merge (a guest
        /// checkout and an account, say) gives the same facts, and so the
        /// same scores at every `as_of`, as the log folded whole.
        #[test]
        fn scores_of_a_split_log_merged_equal_the_whole(
            records in proptest::collection::vec(arbitrary_purchase_event(), 1..40),
            sides in proptest::collection::vec(proptest::prelude::any::<bool>(), 40),
            as_of in 0_i64..450,
        ) {
            let config = AnalyticsConfig::default();
            let mut whole = ProfileState::default();
            let (mut left, mut right) = (ProfileState::default(), ProfileState::default());
            for (record, left_side) in records.iter().zip(&sides) {
                whole.apply(record);
                if *left_side { left.apply(record); } else { right.apply(record); }
            }
            left.merge(&right);
            let (merged, folded) = (CustomerFacts::from_profile(&left), CustomerFacts::from_profile(&whole));
            proptest::prop_assert_eq!(&merged, &folded);
            let mut population = RfmPopulation::new();
            population.upsert("c-1", inputs(&folded, as_of, &config).rfm);
            let models = PopulationModels::fit(&[], as_of, &config);
            proptest::prop_assert_eq!(
                score(&merged, as_of, population.distribution(), &models, &config),
                score(&folded, as_of, population.distribution(), &models, &config)
            );
        }
    }
}
