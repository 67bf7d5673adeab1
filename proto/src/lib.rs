//! The Rapport event contract, generated from `proto/rapport/events/v1`.
//!
//! The `.proto` files are the contract between storefronts, services and
//! projections; see `proto/EVOLUTION.md` for how they may change.

#![allow(unreachable_pub, clippy::all)]

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/rapport.events.v1.rs"));
}

pub use prost::Message;
