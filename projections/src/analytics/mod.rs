//! Customer analytics over purchase history: RFM scores and segments, the
//! BG/NBD and Gamma-Gamma models (P(alive), expected purchases, CLV), churn
//! flags, lifecycle stages, 80/20 value tiers and loyalty membership.
//!
//! Everything here is a pure function of its inputs and an `as_of` day
//! (whole UTC days since 1970-01-01, inclusive): no clock, no randomness, no
//! I/O, and ties are broken explicitly so the same inputs always give the same
//! answer. Money is in minor units of one reporting currency; orders in other
//! currencies are carried alongside, never converted or summed in.
//!
//! The usual flow: [`occasions::purchase_occasions`] turns a customer's
//! orders into purchase occasions and [`occasions::repeat_summary`] condenses
//! them for the probabilistic models. Population-wide pieces (the
//! [`rfm::RfmPopulation`], the BG/NBD and Gamma-Gamma fits, the one-time-buyer
//! horizon) are built from everyone's summaries; each customer is then scored
//! against them, and [`value_tier::value_tiers`] ranks a slice at the end.

pub mod bg_nbd;
pub mod campaigns;
pub mod churn;
pub mod config;
pub mod dashboard;
pub mod gamma_gamma;
pub mod lifecycle;
pub mod loyalty;
mod numerics;
pub mod occasions;
mod order_statistics;
pub mod population;
pub mod rfm;
pub mod scoring;
pub mod simulation;
pub mod validation;
pub mod value_tier;

/// What can go wrong in the analytics layer. Kept apart from the crate's
/// [`crate::Error`], which is about stored state, because these are about
/// configuration and about data too thin to fit a model to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("analytics config key `{key}` {rule}")]
    InvalidConfig { key: String, rule: String },
    #[error("cannot fit the {model} model: {reason}")]
    NotEnoughData { model: &'static str, reason: String },
    #[error("fitting the {model} model failed: {reason}")]
    FitFailed { model: &'static str, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
