//! Every threshold the analytics use, with its default, in one place so a
//! deployment can tune them from its config file and have them checked once
//! at start-up.

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// The `[analytics]` section. Unknown keys are refused so a typo cannot
/// silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// ISO 4217 code the money models work in; other currencies are reported
    /// beside it, never converted.
    pub reporting_currency: String,
    pub rfm: RfmConfig,
    pub bg_nbd: BgNbdConfig,
    pub clv: ClvConfig,
    pub churn: ChurnConfig,
    pub lifecycle: LifecycleConfig,
    pub value_tier: ValueTierConfig,
    pub loyalty: LoyaltyConfig,
    pub campaigns: CampaignConfig,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            reporting_currency: "USD".into(),
            rfm: RfmConfig::default(),
            bg_nbd: BgNbdConfig::default(),
            clv: ClvConfig::default(),
            churn: ChurnConfig::default(),
            lifecycle: LifecycleConfig::default(),
            value_tier: ValueTierConfig::default(),
            loyalty: LoyaltyConfig::default(),
            campaigns: CampaignConfig::default(),
        }
    }
}

/// The `[analytics.campaigns]` section; the campaigns module has the rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CampaignConfig {
    /// An order counts as a conversion of the last open or click at most
    /// this many days before it.
    pub conversion_window_days: i64,
    /// Withdrawing email consent within this many days of the send counts
    /// as unsubscribing from the campaign.
    pub unsubscribe_window_days: i64,
}

impl Default for CampaignConfig {
    fn default() -> Self {
        CampaignConfig {
            conversion_window_days: 7,
            unsubscribe_window_days: 7,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RfmConfig {
    /// Occasions on the `lookback_days` days ending with `as_of` count.
    pub lookback_days: i64,
}

impl Default for RfmConfig {
    fn default() -> Self {
        RfmConfig { lookback_days: 365 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BgNbdConfig {
    /// How far ahead "expected purchases" looks.
    pub prediction_horizon_days: i64,
}

impl Default for BgNbdConfig {
    fn default() -> Self {
        BgNbdConfig {
            prediction_horizon_days: 90,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClvConfig {
    pub horizon_days: i64,
    /// Applied per 30-day month, as the CLV in `gamma_gamma` describes.
    pub monthly_discount_rate: f64,
}

impl Default for ClvConfig {
    fn default() -> Self {
        ClvConfig {
            horizon_days: 365,
            monthly_discount_rate: 0.01,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChurnConfig {
    /// Repeat buyers are at risk when P(alive) falls below this.
    pub p_alive_below: f64,
    /// One-time buyers are at risk once this share of repeat buyers had
    /// already made their second purchase by the same age.
    pub one_time_buyer_percentile: f64,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            p_alive_below: 0.5,
            one_time_buyer_percentile: 0.8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    pub loyal_min_occasions: u32,
    pub loyal_window_days: i64,
    pub churned_p_alive_below: f64,
    /// Also the gap after which a new order counts as a win-back.
    pub churned_after_days_without_occasion: i64,
    pub won_back_days: i64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            loyal_min_occasions: 4,
            loyal_window_days: 365,
            churned_p_alive_below: 0.1,
            churned_after_days_without_occasion: 365,
            won_back_days: 90,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValueTierConfig {
    pub high_top_fraction: f64,
    pub potential_min_p_alive: f64,
    pub potential_top_purchases_fraction: f64,
    pub low_bottom_fraction: f64,
    pub low_p_alive_below: f64,
}

impl Default for ValueTierConfig {
    fn default() -> Self {
        ValueTierConfig {
            high_top_fraction: 0.2,
            potential_min_p_alive: 0.7,
            potential_top_purchases_fraction: 0.4,
            low_bottom_fraction: 0.4,
            low_p_alive_below: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoyaltyTierThreshold {
    pub name: String,
    /// Rolling net spend, in reporting-currency minor units, that reaches the tier.
    pub min_rolling_spend_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoyaltyConfig {
    /// Lowest first; the first must start at 0 so every member has a tier.
    pub tiers: Vec<LoyaltyTierThreshold>,
    pub rolling_window_days: i64,
    /// Net spend that earns one point.
    pub minor_units_per_point: i64,
    pub points_expire_after_days: i64,
    pub expiring_soon_days: i64,
}

impl Default for LoyaltyConfig {
    fn default() -> Self {
        let tier = |name: &str, min_rolling_spend_minor: i64| LoyaltyTierThreshold {
            name: name.into(),
            min_rolling_spend_minor,
        };
        LoyaltyConfig {
            // 0, 500.00, 2 000.00 and 5 000.00 in a two-decimal currency.
            tiers: vec![
                tier("Bronze", 0),
                tier("Silver", 50_000),
                tier("Gold", 200_000),
                tier("Diamond", 500_000),
            ],
            rolling_window_days: 365,
            minor_units_per_point: 100,
            points_expire_after_days: 365,
            expiring_soon_days: 30,
        }
    }
}

fn invalid(key: impl Into<String>, rule: impl Into<String>) -> Error {
    Error::InvalidConfig {
        key: key.into(),
        rule: rule.into(),
    }
}

fn require_positive_days(key: &str, value: i64) -> Result<()> {
    if value < 1 {
        return Err(invalid(
            key,
            format!("must be at least 1 day (got {value})"),
        ));
    }
    Ok(())
}

fn require_probability(key: &str, value: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&value) {
        return Err(invalid(
            key,
            format!("must be between 0 and 1 (got {value})"),
        ));
    }
    Ok(())
}

/// A share of a population: an empty share would make a tier meaningless.
fn require_share(key: &str, value: f64) -> Result<()> {
    if !(value > 0.0 && value <= 1.0) {
        return Err(invalid(
            key,
            format!("must be above 0 and at most 1 (got {value})"),
        ));
    }
    Ok(())
}

impl AnalyticsConfig {
    /// Checks every key; the error names the first one broken.
    pub fn validate(&self) -> Result<()> {
        let currency = &self.reporting_currency;
        if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
            return Err(invalid(
                "reporting_currency",
                format!("must be a three-letter ISO 4217 code such as \"USD\" (got {currency:?})"),
            ));
        }
        require_positive_days("rfm.lookback_days", self.rfm.lookback_days)?;
        require_positive_days(
            "bg_nbd.prediction_horizon_days",
            self.bg_nbd.prediction_horizon_days,
        )?;
        require_positive_days("clv.horizon_days", self.clv.horizon_days)?;
        for (key, days) in [
            (
                "campaigns.conversion_window_days",
                self.campaigns.conversion_window_days,
            ),
            (
                "campaigns.unsubscribe_window_days",
                self.campaigns.unsubscribe_window_days,
            ),
        ] {
            require_positive_days(key, days)?;
            if days > 3_650 {
                return Err(invalid(
                    key,
                    format!("must be at most 3 650 days (got {days})"),
                ));
            }
        }
        let rate = self.clv.monthly_discount_rate;
        if !(rate.is_finite() && rate >= 0.0) {
            return Err(invalid(
                "clv.monthly_discount_rate",
                format!("must be a finite rate of 0 or more (got {rate})"),
            ));
        }
        require_probability("churn.p_alive_below", self.churn.p_alive_below)?;
        require_share(
            "churn.one_time_buyer_percentile",
            self.churn.one_time_buyer_percentile,
        )?;

        let lifecycle = &self.lifecycle;
        if lifecycle.loyal_min_occasions < 2 {
            return Err(invalid(
                "lifecycle.loyal_min_occasions",
                format!(
                    "must be at least 2, or first-time buyers would be loyal (got {})",
                    lifecycle.loyal_min_occasions
                ),
            ));
        }
        require_positive_days("lifecycle.loyal_window_days", lifecycle.loyal_window_days)?;
        require_probability(
            "lifecycle.churned_p_alive_below",
            lifecycle.churned_p_alive_below,
        )?;
        require_positive_days(
            "lifecycle.churned_after_days_without_occasion",
            lifecycle.churned_after_days_without_occasion,
        )?;
        require_positive_days("lifecycle.won_back_days", lifecycle.won_back_days)?;

        let value_tier = &self.value_tier;
        require_share("value_tier.high_top_fraction", value_tier.high_top_fraction)?;
        require_probability(
            "value_tier.potential_min_p_alive",
            value_tier.potential_min_p_alive,
        )?;
        require_share(
            "value_tier.potential_top_purchases_fraction",
            value_tier.potential_top_purchases_fraction,
        )?;
        require_share(
            "value_tier.low_bottom_fraction",
            value_tier.low_bottom_fraction,
        )?;
        require_probability("value_tier.low_p_alive_below", value_tier.low_p_alive_below)?;

        self.loyalty.validate()
    }
}

impl LoyaltyConfig {
    fn validate(&self) -> Result<()> {
        let Some(first) = self.tiers.first() else {
            return Err(invalid("loyalty.tiers", "must list at least one tier"));
        };
        if first.min_rolling_spend_minor != 0 {
            return Err(invalid(
                "loyalty.tiers[0].min_rolling_spend_minor",
                format!(
                    "must be 0 so every member has a tier (got {})",
                    first.min_rolling_spend_minor
                ),
            ));
        }
        for (index, tier) in self.tiers.iter().enumerate() {
            if tier.name.trim().is_empty() {
                return Err(invalid(
                    format!("loyalty.tiers[{index}].name"),
                    "must not be empty",
                ));
            }
            if self.tiers[..index]
                .iter()
                .any(|earlier| earlier.name == tier.name)
            {
                return Err(invalid(
                    format!("loyalty.tiers[{index}].name"),
                    format!("must be unique ({:?} appears twice)", tier.name),
                ));
            }
            if index > 0
                && tier.min_rolling_spend_minor <= self.tiers[index - 1].min_rolling_spend_minor
            {
                return Err(invalid(
                    format!("loyalty.tiers[{index}].min_rolling_spend_minor"),
                    format!(
                        "must be above the previous tier's {} (got {})",
                        self.tiers[index - 1].min_rolling_spend_minor,
                        tier.min_rolling_spend_minor
                    ),
                ));
            }
        }
        require_positive_days("loyalty.rolling_window_days", self.rolling_window_days)?;
        if self.minor_units_per_point < 1 {
            return Err(invalid(
                "loyalty.minor_units_per_point",
                format!("must be at least 1 (got {})", self.minor_units_per_point),
            ));
        }
        require_positive_days(
            "loyalty.points_expire_after_days",
            self.points_expire_after_days,
        )?;
        require_positive_days("loyalty.expiring_soon_days", self.expiring_soon_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error as ValueError, MapDeserializer};

    #[test]
    fn defaults_are_valid_and_match_the_issue() {
        let config = AnalyticsConfig::default();
        config.validate().expect("defaults validate");
        assert_eq!(config.reporting_currency, "USD");
        assert_eq!(config.rfm.lookback_days, 365);
        assert_eq!(config.bg_nbd.prediction_horizon_days, 90);
        assert_eq!(config.churn.p_alive_below, 0.5);
        assert_eq!(config.loyalty.tiers[3].min_rolling_spend_minor, 500_000);
    }

    #[test]
    fn a_missing_key_takes_its_default() {
        // Given a config that sets only the currency
        let entries = vec![("reporting_currency", "EUR")];
        // When deserialised
        let config = AnalyticsConfig::deserialize(MapDeserializer::<_, ValueError>::new(
            entries.into_iter(),
        ))
        .expect("known key");
        // Then everything else is the default
        assert_eq!(config.reporting_currency, "EUR");
        assert_eq!(config.rfm, RfmConfig::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let entries = vec![("reporting_curency", "EUR")];
        let error = AnalyticsConfig::deserialize(MapDeserializer::<_, ValueError>::new(
            entries.into_iter(),
        ))
        .expect_err("typo must fail");
        assert!(error.to_string().contains("reporting_curency"), "{error}");

        let entries = vec![("lookback", 30_i64)];
        let error =
            RfmConfig::deserialize(MapDeserializer::<_, ValueError>::new(entries.into_iter()))
                .expect_err("typo must fail");
        assert!(error.to_string().contains("lookback"), "{error}");
    }

    #[test]
    fn validate_names_the_broken_key() {
        // Given a config with one bad threshold at a time
        let mut config = AnalyticsConfig::default();
        config.value_tier.high_top_fraction = 0.0;
        // When validated, then the error names that key
        let error = config.validate().expect_err("invalid");
        assert_eq!(
            error,
            Error::InvalidConfig {
                key: "value_tier.high_top_fraction".into(),
                rule: "must be above 0 and at most 1 (got 0)".into()
            }
        );

        let mut config = AnalyticsConfig::default();
        config.loyalty.tiers[2].min_rolling_spend_minor = 100;
        let error = config.validate().expect_err("invalid");
        assert!(
            error
                .to_string()
                .starts_with("analytics config key `loyalty.tiers[2].min_rolling_spend_minor`"),
            "{error}"
        );

        let config = AnalyticsConfig {
            reporting_currency: "usd".into(),
            ..AnalyticsConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(Error::InvalidConfig { key, .. }) if key == "reporting_currency"
        ));

        let mut config = AnalyticsConfig::default();
        config.clv.monthly_discount_rate = f64::NAN;
        assert!(matches!(
            config.validate(),
            Err(Error::InvalidConfig { key, .. }) if key == "clv.monthly_discount_rate"
        ));
    }
}
