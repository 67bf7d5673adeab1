//! The analytics scoreboard: RFM, churn, CLV, lifecycle, value tiers and
//! loyalty as live projections of the customer view.
//!
//! The customer view already holds every fact the models need (orders with
//! the times of their cancellations and refunds, redemptions), so the
//! analytics are derived from it rather than folded a second time:
//!
//! * a [`Board`] per projection version keeps each person's
//!   [`CustomerFacts`] in a slot of their own ([`Persons`]), built by one
//!   scan of the version's profiles (or read back from the image the
//!   projector wrote when it last stopped, see [`image`]) and then kept
//!   current from the profiles each applied batch changed
//!   ([`crate::changes::Changes`]);
//! * per `as_of` it keeps a [`Snapshot`]: the exact RFM population (updated
//!   one person at a time, so a person's scores reflect their latest event at
//!   once), the fitted models and everyone's segment labels. Models are
//!   refitted once the people changed since the fit exceed
//!   [`REFIT_AFTER_SHARE`] of the population (at least
//!   [`REFIT_AFTER_AT_LEAST`]), on a background thread; until the new fit
//!   is in place changed people are re-labelled against the current one.
//!
//! Everything is a function of the stored facts and `as_of`; only the
//! default `as_of` (today, UTC) reads the clock, in the request handler.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rapport_common::metrics::{Gauge, Registry};
use rapport_common::{Result, keys};
use rapport_projections::analytics::bg_nbd::{BgNbdFit, Cohort, fit_bg_nbd};
use rapport_projections::analytics::config::AnalyticsConfig;
use rapport_projections::analytics::dashboard::{
    Overview, OverviewBuilder, clv_bin, cohort_months, month_of,
};
use rapport_projections::analytics::gamma_gamma::{GammaGammaFit, fit_gamma_gamma};
use rapport_projections::analytics::lifecycle::LifecycleStage;
use rapport_projections::analytics::occasions::RepeatSummary;
use rapport_projections::analytics::population::PopulationShare;
use rapport_projections::analytics::rfm::{RfmDistribution, RfmScores, RfmSegment, RfmValues};
use rapport_projections::analytics::scoring::{
    CustomerFacts, CustomerInputs, CustomerScores, PopulationModels, inputs, score, score_inputs,
};
use rapport_projections::analytics::validation::{Holdout, Validation, validate};
use rapport_projections::analytics::value_tier::ValueTier;
use rapport_projections::customer_view::ProfileState;
use rapport_projections::money::minor_unit_digits;

use crate::changes::Changes;
use crate::position::Positions;
use crate::read::{Served, View, person_of};

mod image;

/// The scored days a board's image keeps (see [`image`]).
pub use image::KEPT_DAYS as IMAGE_DAYS;

/// Models are refitted once this share of the population changed since the fit…
pub const REFIT_AFTER_SHARE: f64 = 0.01;
/// …or this many people, whichever is more.
pub const REFIT_AFTER_AT_LEAST: usize = 100;
/// How many `as_of` snapshots (and model fits) a board keeps.
const KEPT_SNAPSHOTS: usize = 4;
const KEPT_FITS: usize = 16;

/// The segment labels of one person at one `as_of`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Labels {
    /// R, F and M; the segment follows from them.
    pub rfm: Option<RfmScores>,
    pub lifecycle: Option<LifecycleStage>,
    pub value_tier: Option<ValueTier>,
    /// Their loyalty tier's place among the configured tiers.
    pub loyalty: u8,
    /// A buyer: `Some(at_risk)` of their churn flag.
    pub at_risk: Option<bool>,
    /// Days of their first and last purchase occasions, for a buyer (32
    /// bits: dates are checked to lie between 1970 and 2100).
    pub purchases: Option<(i32, i32)>,
    /// Purchase occasions after the first (0 for people who never bought).
    pub repeats: u32,
    /// Expected lifetime value, for a buyer with a fitted model.
    pub clv_minor: Option<f64>,
    /// Bit k: bought k months after the month of their first purchase.
    pub cohort_months: u32,
}

impl Labels {
    fn of(scores: &CustomerScores, inputs: &CustomerInputs, config: &AnalyticsConfig) -> Self {
        let occasions = &inputs.occasions.reporting;
        let loyalty = config
            .loyalty
            .tiers
            .iter()
            .position(|tier| tier.name == scores.loyalty.tier)
            .unwrap_or_default();
        Labels {
            purchases: occasions
                .first()
                .zip(occasions.last())
                .map(|(first, last)| (day32(first.day), day32(last.day))),
            repeats: inputs
                .summary
                .as_ref()
                .map_or(0, |summary| summary.repeat_occasions),
            clv_minor: scores.clv.as_ref().and_then(|clv| clv.expected_value_minor),
            cohort_months: cohort_months(inputs),
            rfm: scores.rfm.as_ref().map(|rfm| RfmScores {
                recency: rfm.r,
                frequency: rfm.f,
                monetary: rfm.m,
            }),
            lifecycle: scores.lifecycle,
            value_tier: scores.value_tier,
            loyalty: u8::try_from(loyalty).unwrap_or(u8::MAX),
            at_risk: scores.churn.as_ref().map(|churn| churn.at_risk),
        }
    }

    /// Puts these labels in place of what `scores` (scored afresh) says, so
    /// that the dashboard's figures count people as the lists and
    /// `/v1/segments` do: a person's labels change with their own events
    /// and at refits, not with every other person's.
    fn apply_to(&self, scores: &mut CustomerScores, config: &AnalyticsConfig) {
        match (&mut scores.rfm, self.rfm) {
            (Some(document), Some(rfm)) => {
                document.r = rfm.recency;
                document.f = rfm.frequency;
                document.m = rfm.monetary;
                document.segment = rfm.segment();
                document.segment_name = rfm.segment().as_str();
            }
            (rfm, None) => *rfm = None,
            (None, Some(_)) => {}
        }
        scores.lifecycle = self.lifecycle;
        scores.value_tier = self.value_tier;
        if let Some(tier) = self.loyalty_tier(config) {
            scores.loyalty.tier.replace_range(.., tier);
        }
        if let (Some(churn), Some(at_risk)) = (&mut scores.churn, self.at_risk) {
            churn.at_risk = at_risk;
        }
        if let Some(clv) = &mut scores.clv {
            clv.expected_value_minor = self.clv_minor;
        }
    }

    fn loyalty_tier<'a>(&self, config: &'a AnalyticsConfig) -> Option<&'a str> {
        config
            .loyalty
            .tiers
            .get(usize::from(self.loyalty))
            .map(|tier| tier.name.as_str())
    }

    /// The label of `kind` (`rfm`, `lifecycle`, `value_tier`, `loyalty`).
    pub fn get<'a>(&self, kind: SegmentKind, config: &'a AnalyticsConfig) -> Option<&'a str> {
        match kind {
            SegmentKind::Rfm => self.rfm.map(|rfm| rfm.segment().slug()),
            SegmentKind::Lifecycle => self.lifecycle.map(|stage| stage.as_str()),
            SegmentKind::ValueTier => self.value_tier.map(|tier| tier.as_str()),
            SegmentKind::Loyalty => self.loyalty_tier(config),
        }
    }
}

/// A day in 32 bits, for what is kept per person and day.
fn day32(day: i64) -> i32 {
    day.clamp(i32::MIN.into(), i32::MAX.into()) as i32
}

/// One person's place in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Entry {
    /// For people known by the snapshot's `as_of`.
    labels: Option<Labels>,
    /// For people with a purchase occasion in the RFM window: the values
    /// the snapshot's distribution counts them with.
    rfm: PackedRfm,
}

/// Optional RFM values in 16 bytes rather than 32, for a million people
/// at each kept day: frequency 0 stands for none (a buyer in the window
/// has at least one occasion), and the day fits 32 bits (dates are
/// checked to lie between 1970 and 2100).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct PackedRfm {
    last_occasion_day: i32,
    frequency: u32,
    monetary_minor: i64,
}

impl PackedRfm {
    fn of(values: Option<RfmValues>) -> Self {
        values.map_or_else(PackedRfm::default, |values| PackedRfm {
            last_occasion_day: day32(values.last_occasion_day),
            frequency: values.frequency,
            monetary_minor: values.monetary_minor,
        })
    }

    fn get(self) -> Option<RfmValues> {
        (self.frequency > 0).then_some(RfmValues {
            last_occasion_day: self.last_occasion_day.into(),
            frequency: self.frequency,
            monetary_minor: self.monetary_minor,
        })
    }
}

/// Everyone's facts, each person in a slot of their own that they keep
/// (slots are never reused): snapshots keep their labels in vectors by
/// slot rather than in maps keyed by id, and a copy of everyone, to score
/// them without holding the board, costs two pointers a person.
#[derive(Clone, Default)]
pub struct Persons {
    slots: Vec<Option<(Arc<str>, Arc<CustomerFacts>)>>,
    count: usize,
}

impl Persons {
    /// People with facts.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Everyone's id and facts, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &CustomerFacts)> {
        self.slots
            .iter()
            .flatten()
            .map(|(id, facts)| (&**id, &**facts))
    }

    pub fn values(&self) -> impl Iterator<Item = &CustomerFacts> {
        self.iter().map(|(_, facts)| facts)
    }

    /// Everyone with their slot.
    fn by_slot(&self) -> impl Iterator<Item = (u32, &str, &CustomerFacts)> {
        self.slots.iter().enumerate().filter_map(|(slot, person)| {
            let (id, facts) = person.as_ref()?;
            Some((slot as u32, &**id, &**facts))
        })
    }

    fn get(&self, slot: u32) -> Option<&CustomerFacts> {
        let (_, facts) = self.slots.get(slot as usize)?.as_ref()?;
        Some(facts)
    }

    /// Slots in use or retired: the length snapshots' vectors grow to.
    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn put(&mut self, slot: u32, id: Arc<str>, facts: CustomerFacts) {
        let index = slot as usize;
        if self.slots.len() <= index {
            self.slots.resize(index + 1, None);
        }
        let previous = self.slots[index].replace((id, Arc::new(facts)));
        if previous.is_none() {
            self.count += 1;
        }
    }

    /// Empties `slot`; whether it held someone.
    fn take(&mut self, slot: u32) -> bool {
        let taken = self
            .slots
            .get_mut(slot as usize)
            .and_then(Option::take)
            .is_some();
        if taken {
            self.count -= 1;
        }
        taken
    }
}

/// The segmentations `/v1/segments` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SegmentKind {
    Rfm,
    Lifecycle,
    ValueTier,
    Loyalty,
}

impl SegmentKind {
    pub const ALL: [SegmentKind; 4] = [
        SegmentKind::Rfm,
        SegmentKind::Lifecycle,
        SegmentKind::ValueTier,
        SegmentKind::Loyalty,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            SegmentKind::Rfm => "rfm",
            SegmentKind::Lifecycle => "lifecycle",
            SegmentKind::ValueTier => "value_tier",
            SegmentKind::Loyalty => "loyalty",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Every name of this kind, so counts show empty segments too.
    pub fn names(&self, config: &AnalyticsConfig) -> Vec<String> {
        match self {
            SegmentKind::Rfm => RfmSegment::ALL.iter().map(|s| s.slug().into()).collect(),
            SegmentKind::Lifecycle => LifecycleStage::ALL
                .iter()
                .map(|s| s.as_str().into())
                .collect(),
            SegmentKind::ValueTier => ValueTier::ALL.iter().map(|s| s.as_str().into()).collect(),
            SegmentKind::Loyalty => config
                .loyalty
                .tiers
                .iter()
                .map(|tier| tier.name.clone())
                .collect(),
        }
    }
}

/// Everyone scored at one `as_of`.
pub struct Snapshot {
    pub as_of: i64,
    /// Who bought in the RFM window, counted by their values.
    pub rfm: RfmDistribution,
    pub models: Arc<PopulationModels>,
    /// Buyers by `as_of`, over whom the models were fitted.
    pub buyers: usize,
    /// By the board's slots.
    entries: Vec<Entry>,
    /// Entries with labels: people known by `as_of`.
    labelled: usize,
    changed_since_fit: usize,
    population_at_fit: usize,
    /// Counts every update, so the dashboard's figures know when they are old.
    revision: u64,
    /// Requests that read it: the image keeps the days read most.
    reads: std::sync::atomic::AtomicU64,
    overview: Mutex<Option<CachedOverview>>,
    /// With other processes serving some partitions: their part of the
    /// population it was scored against, and when that was gathered.
    gathered: Option<Gathered>,
}

/// The other processes' part of the population at one `as_of`, and the
/// people this process counts beside it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Others {
    pub(crate) share: PopulationShare,
    pub(crate) served: Served,
}

struct Gathered {
    others: Others,
    at: Instant,
}

/// With other processes serving some partitions, a snapshot's population
/// is gathered again when older than this and a request reads it: their
/// people change without this process seeing it.
pub const POPULATION_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// The dashboard's figures of a snapshot, and the snapshot's revision
/// when they were gathered.
struct CachedOverview {
    figures: Arc<Overview>,
    revision: u64,
    gathered: Instant,
}

/// The dashboard's figures are gathered again once the snapshot changed and
/// they are older than this: a pass over a million people takes a few
/// seconds, too long to repeat for every page under live traffic.
pub const OVERVIEW_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// Which people a dashboard list shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PeopleFilter {
    Segment(SegmentKind, String),
    /// R and the combined FM score, 1–5 each.
    RfmCell(u8, u8),
    /// Bought in the `n` days up to `as_of`.
    BoughtWithin(i64),
    /// First purchase in this month (months since January 1970).
    Cohort(i64),
    /// First purchase in `month`, and a purchase `after` months later.
    CohortActive {
        month: i64,
        after: u32,
    },
    /// Everyone with a purchase by `as_of`.
    Buyers,
    /// Buyers with more than one purchase occasion.
    RepeatBuyers,
    /// Buyers with this many repeat purchases (or more, with `or_more`).
    Repeats {
        repeats: u32,
        or_more: bool,
    },
    /// Buyers whose CLV falls in this bin of the distribution
    /// ([`rapport_projections::analytics::dashboard::CLV_EDGES_MAJOR`]).
    ClvBin {
        bin: usize,
        minor_per_major: i64,
    },
    /// Buyers not flagged at risk of churning.
    ActiveBuyers,
    /// Everyone known by `as_of`.
    Everyone,
}

impl Snapshot {
    /// Scores everyone at `as_of`: against these people alone, or with
    /// `others` against the whole population, of which this process holds
    /// the people `others.served` names.
    fn build(
        persons: &Persons,
        as_of: i64,
        config: &AnalyticsConfig,
        others: Option<Others>,
    ) -> Self {
        let mut entries = vec![Entry::default(); persons.capacity()];
        let (rfm, models, buyers) = match &others {
            None => {
                let mut everyone: Vec<RepeatSummary> = Vec::new();
                for (slot, _, facts) in persons.by_slot() {
                    let inputs = inputs(facts, as_of, config);
                    entries[slot as usize].rfm = PackedRfm::of(inputs.rfm);
                    everyone.extend(inputs.summary);
                }
                let rfm = RfmDistribution::from_values(
                    entries.iter().filter_map(|entry| entry.rfm.get()),
                );
                let models = PopulationModels::fit(&everyone, as_of, config);
                (rfm, models, everyone.len())
            }
            Some(others) => {
                let mut whole = others.share.clone();
                for (slot, id, facts) in persons.by_slot() {
                    let inputs = inputs(facts, as_of, config);
                    entries[slot as usize].rfm = PackedRfm::of(inputs.rfm);
                    if others.served.holds(id) {
                        whole.add(&inputs);
                    }
                }
                let models = whole.models(config);
                let buyers = whole.buyers() as usize;
                (whole.rfm, models, buyers)
            }
        };
        let models = Arc::new(models);
        let mut labelled = 0;
        for (slot, _, facts) in persons.by_slot() {
            if facts.known_at(as_of) {
                let inputs = inputs(facts, as_of, config);
                let scores = score_inputs(facts, &inputs, as_of, &rfm, &models, config);
                entries[slot as usize].labels = Some(Labels::of(&scores, &inputs, config));
                labelled += 1;
            }
        }
        Snapshot {
            as_of,
            rfm,
            models,
            buyers,
            entries,
            labelled,
            changed_since_fit: 0,
            population_at_fit: persons.len(),
            revision: 0,
            reads: Default::default(),
            overview: Mutex::new(None),
            gathered: others.map(|others| Gathered {
                others,
                at: Instant::now(),
            }),
        }
    }

    /// Whether the snapshot is to be scored again against `others`, which
    /// were gathered now (`None`: no other process serves any partition).
    fn scored_against(&self, others: Option<&Others>) -> bool {
        self.gathered.as_ref().map(|gathered| &gathered.others) == others
    }

    /// With other processes serving some partitions: whether their part of
    /// the population is to be gathered again (never gathered, old, or
    /// gathered while this process served other partitions than `served`).
    fn due_for_gathering(&self, served: &Served) -> bool {
        self.gathered.as_ref().is_none_or(|gathered| {
            gathered.at.elapsed() >= POPULATION_MAX_AGE || gathered.others.served != *served
        })
    }

    /// People known by `as_of`: those with labels.
    pub fn customers(&self) -> usize {
        self.labelled
    }

    fn labels(&self, slot: u32) -> Option<&Labels> {
        self.entries.get(slot as usize)?.labels.as_ref()
    }

    /// The dashboard's figures if they were gathered and are still fresh
    /// (see [`Snapshot::overview`]).
    pub fn overview_cached(&self) -> Option<Arc<Overview>> {
        let cached = self.overview.lock().expect("overview lock");
        cached
            .as_ref()
            .filter(|kept| {
                kept.revision == self.revision || kept.gathered.elapsed() < OVERVIEW_MAX_AGE
            })
            .map(|kept| kept.figures.clone())
    }

    /// The dashboard's figures: gathered once, again when the snapshot
    /// changed and they are older than [`OVERVIEW_MAX_AGE`].
    pub fn overview(&self, persons: &Persons, config: &AnalyticsConfig) -> Arc<Overview> {
        let mut cached = self.overview.lock().expect("overview lock");
        if let Some(kept) = cached.as_ref()
            && (kept.revision == self.revision || kept.gathered.elapsed() < OVERVIEW_MAX_AGE)
        {
            return kept.figures.clone();
        }
        let started = Instant::now();
        let builder = self.overview_part(persons, config, &Served::everyone());
        let figures = Arc::new(builder.finish(self.bg_nbd()));
        tracing::info!(
            as_of = %rapport_projections::time::format_day(self.as_of),
            persons = persons.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "gathered the dashboard's figures"
        );
        *cached = Some(CachedOverview {
            figures: figures.clone(),
            revision: self.revision,
            gathered: Instant::now(),
        });
        figures
    }

    /// The dashboard's figures over the people `served` names, to be
    /// merged with other processes' and finished.
    pub(crate) fn overview_part(
        &self,
        persons: &Persons,
        config: &AnalyticsConfig,
        served: &Served,
    ) -> OverviewBuilder {
        let mut builder =
            OverviewBuilder::new(self.as_of, minor_unit_digits(&config.reporting_currency));
        for (slot, id, facts) in persons.by_slot() {
            if let Some(labels) = self.labels(slot)
                && served.holds(id)
            {
                let inputs = inputs(facts, self.as_of, config);
                let mut scores =
                    score_inputs(facts, &inputs, self.as_of, &self.rfm, &self.models, config);
                labels.apply_to(&mut scores, config);
                builder.add(id, &inputs, &scores);
            }
        }
        builder
    }

    /// BG/NBD's fitted parameters, if it could be fitted.
    pub(crate) fn bg_nbd(
        &self,
    ) -> Option<&rapport_projections::analytics::bg_nbd::BgNbdParameters> {
        self.models.bg_nbd.as_ref().ok().map(|fit| &fit.parameters)
    }

    /// Whether a person with `labels` belongs in `filter`'s list.
    fn admits(&self, filter: &PeopleFilter, labels: &Labels, config: &AnalyticsConfig) -> bool {
        match filter {
            PeopleFilter::Segment(kind, name) => labels.get(*kind, config) == Some(name.as_str()),
            PeopleFilter::RfmCell(r, fm) => labels
                .rfm
                .is_some_and(|rfm| rfm.recency == *r && rfm.frequency_monetary() == *fm),
            PeopleFilter::BoughtWithin(days) => labels
                .purchases
                .is_some_and(|(_, last)| i64::from(last) > self.as_of - days),
            PeopleFilter::Cohort(month) => labels
                .purchases
                .is_some_and(|(first, _)| month_of(first.into()) == *month),
            PeopleFilter::CohortActive { month, after } => {
                labels
                    .purchases
                    .is_some_and(|(first, _)| month_of(first.into()) == *month)
                    && labels.cohort_months >> after & 1 == 1
            }
            PeopleFilter::Buyers => labels.purchases.is_some(),
            PeopleFilter::RepeatBuyers => labels.repeats > 0,
            PeopleFilter::Repeats { repeats, or_more } => {
                labels.purchases.is_some()
                    && (labels.repeats == *repeats || (*or_more && labels.repeats > *repeats))
            }
            PeopleFilter::ClvBin {
                bin,
                minor_per_major,
            } => {
                labels.at_risk.is_some()
                    && clv_bin(labels.clv_minor.unwrap_or(0.0), *minor_per_major) == *bin
            }
            PeopleFilter::ActiveBuyers => labels.at_risk == Some(false),
            PeopleFilter::Everyone => true,
        }
    }

    /// Re-scores the person in `slot` (gone with `None`).
    fn update(&mut self, slot: u32, facts: Option<&CustomerFacts>, config: &AnalyticsConfig) {
        self.changed_since_fit += 1;
        self.revision += 1;
        let index = slot as usize;
        if self.entries.len() <= index {
            self.entries.resize(index + 1, Entry::default());
        }
        let entry = &mut self.entries[index];
        if let Some(values) = std::mem::take(&mut entry.rfm).get() {
            self.rfm.remove(&values);
        }
        if entry.labels.take().is_some() {
            self.labelled -= 1;
        }
        let Some(facts) = facts.filter(|facts| facts.known_at(self.as_of)) else {
            return;
        };
        let inputs = inputs(facts, self.as_of, config);
        if let Some(values) = &inputs.rfm {
            self.rfm.add(values);
        }
        let scores = score_inputs(facts, &inputs, self.as_of, &self.rfm, &self.models, config);
        let entry = &mut self.entries[index];
        entry.rfm = PackedRfm::of(inputs.rfm);
        entry.labels = Some(Labels::of(&scores, &inputs, config));
        self.labelled += 1;
    }

    fn stale(&self) -> bool {
        moved_on(self.changed_since_fit, self.population_at_fit)
    }

    /// People per name of `kind`, every name listed.
    pub fn counts(&self, kind: SegmentKind, config: &AnalyticsConfig) -> BTreeMap<String, u64> {
        let mut counts: BTreeMap<String, u64> = kind
            .names(config)
            .into_iter()
            .map(|name| (name, 0))
            .collect();
        for labels in self
            .entries
            .iter()
            .filter_map(|entry| entry.labels.as_ref())
        {
            if let Some(name) = labels.get(kind, config) {
                *counts.entry(name.to_owned()).or_default() += 1;
            }
        }
        counts
    }
}

/// A snapshot with the board's ids, for what a request reads of it:
/// one person's labels, pages of people in id order.
pub struct Scored<'a> {
    snapshot: &'a Snapshot,
    slot_of: &'a BTreeMap<Arc<str>, u32>,
    config: &'a AnalyticsConfig,
}

impl std::ops::Deref for Scored<'_> {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        self.snapshot
    }
}

impl<'a> Scored<'a> {
    /// The labels of person `id`, if known by `as_of`.
    pub fn labels_of(&self, id: &str) -> Option<&'a Labels> {
        self.snapshot.labels(*self.slot_of.get(id)?)
    }

    /// The people of `filter` after `cursor` (a person id), by id, up to
    /// `limit`, among those `served` names; and whether there are more.
    pub(crate) fn people(
        &self,
        filter: &PeopleFilter,
        cursor: Option<&str>,
        limit: usize,
        served: &Served,
    ) -> (Vec<String>, bool) {
        self.page_where(cursor, limit, served, |labels| {
            self.snapshot.admits(filter, labels, self.config)
        })
    }

    /// Members of one segment after `cursor` (a person id), by id, among
    /// the people `served` names.
    pub(crate) fn members(
        &self,
        kind: SegmentKind,
        name: &str,
        cursor: Option<&str>,
        limit: usize,
        served: &Served,
    ) -> (Vec<String>, bool) {
        self.page_where(cursor, limit, served, |labels| {
            labels.get(kind, self.config) == Some(name)
        })
    }

    /// People known by `as_of` among those `served` names.
    pub(crate) fn customers_of(&self, served: &Served) -> u64 {
        if served.is_everyone() {
            return self.snapshot.customers() as u64;
        }
        self.served_labels(served).count() as u64
    }

    /// People per name of `kind`, every name listed, among those `served`
    /// names.
    pub(crate) fn counts_of(&self, kind: SegmentKind, served: &Served) -> BTreeMap<String, u64> {
        if served.is_everyone() {
            return self.snapshot.counts(kind, self.config);
        }
        let mut counts: BTreeMap<String, u64> = kind
            .names(self.config)
            .into_iter()
            .map(|name| (name, 0))
            .collect();
        for labels in self.served_labels(served) {
            if let Some(name) = labels.get(kind, self.config) {
                *counts.entry(name.to_owned()).or_default() += 1;
            }
        }
        counts
    }

    fn served_labels<'s>(&'s self, served: &'s Served) -> impl Iterator<Item = &'a Labels> + 's {
        self.slot_of
            .iter()
            .filter(|(id, _)| served.holds(id))
            .filter_map(|(_, slot)| self.snapshot.labels(*slot))
    }

    /// The ids `admits` accepts among those `served` names, after
    /// `cursor`, up to `limit`, and whether there are more. Walks the ids
    /// in order from the cursor and stops at the page's end.
    fn page_where(
        &self,
        cursor: Option<&str>,
        limit: usize,
        served: &Served,
        admits: impl Fn(&Labels) -> bool,
    ) -> (Vec<String>, bool) {
        let after = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut ids: Vec<String> = self
            .slot_of
            .range::<str, _>((after, Bound::Unbounded))
            .filter(|(id, slot)| {
                served.holds(id) && self.snapshot.labels(**slot).is_some_and(&admits)
            })
            .map(|(id, _)| id.to_string())
            .take(limit.saturating_add(1))
            .collect();
        let more = ids.len() > limit;
        ids.truncate(limit);
        (ids, more)
    }
}

/// Whether a fit made over `population` people is out of date after
/// `changed` of them changed: past [`REFIT_AFTER_SHARE`] of them, and at
/// least [`REFIT_AFTER_AT_LEAST`].
fn moved_on(changed: usize, population: usize) -> bool {
    let allowed = ((population as f64 * REFIT_AFTER_SHARE) as usize).max(REFIT_AFTER_AT_LEAST);
    changed > allowed
}

/// A model validation kept until the population moved on.
struct KeptValidation {
    validation: Arc<Validation>,
    changed_since_fit: usize,
    population_at_fit: usize,
}

/// A model fit asked for over HTTP, with the cohort it was fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FitKey {
    pub as_of: i64,
    pub cohort: Option<(i64, i64)>,
}

/// Both models for one [`FitKey`].
#[derive(Debug, Clone)]
pub struct Fits {
    /// Buyers by `as_of` (in the cohort), over whom both models are fitted.
    pub buyers: usize,
    pub bg_nbd: std::result::Result<BgNbdFit, String>,
    pub gamma_gamma: std::result::Result<GammaGammaFit, String>,
    changed_since_fit: usize,
    population_at_fit: usize,
    /// The other processes' part of the population they were fitted over.
    others: Option<Others>,
}

/// The analytics of one projection version.
pub struct Board {
    /// The feed this board follows; a version dropped and created again
    /// under the same name gets a new feed, and so a new board.
    changes: Option<Changes>,
    persons: Persons,
    /// The slot of every id given one, in id order: pages of people walk it.
    slot_of: BTreeMap<Arc<str>, u32>,
    /// Absorbed profile → the person it belongs to.
    root_of: HashMap<String, String>,
    /// People with a profile on a partition another process serves, with
    /// those profiles: read again before the population is gathered, as
    /// that process's changes to them are not in this one's change feed.
    remote_members: HashMap<String, Vec<String>>,
    /// The partitions this process served when the board was built. A
    /// partition taken on is replayed without a change feed; the board is
    /// built again once it is served.
    served: Served,
    snapshots: VecDeque<Snapshot>,
    /// Snapshots being refitted in the background, with the slots of the
    /// people changed since the refit took its copy of everyone.
    refitting: HashMap<i64, HashSet<u32>>,
    fits: VecDeque<(FitKey, Fits)>,
    validations: VecDeque<KeptValidation>,
}

pub(crate) fn facts_of(members: &[(String, ProfileState)]) -> CustomerFacts {
    let mut merged = ProfileState::default();
    for (_, profile) in members {
        merged.merge(profile);
    }
    CustomerFacts::from_profile(&merged)
}

impl Board {
    fn empty(changes: Option<Changes>) -> Self {
        Board {
            changes,
            persons: Persons::default(),
            slot_of: BTreeMap::new(),
            root_of: HashMap::new(),
            remote_members: HashMap::new(),
            served: Served::everyone(),
            snapshots: VecDeque::new(),
            refitting: HashMap::new(),
            fits: VecDeque::new(),
            validations: VecDeque::new(),
        }
    }

    /// Scans every profile of the version once. Subscribes to the change
    /// feed first, so nothing applied during the scan is missed.
    fn build(view: &View<'_>, changes: Option<Changes>) -> Result<Self> {
        if let Some(changes) = &changes {
            changes.subscribe();
        }
        let mut board = Board::empty(changes);
        board.served = view.served_here();
        // Profiles in a merge are gathered afterwards, person by person.
        let mut in_merges = Vec::new();
        let mut elsewhere: Vec<(String, Vec<u8>)> = Vec::new();
        view.store
            .visit_prefix(&view.family, &[keys::PROFILE], |key, value| {
                let Ok(id) = keys::decode_profile(key) else {
                    tracing::warn!(key = ?key, "skipping a malformed profile key");
                    return Ok(());
                };
                let state = ProfileState::decode(value)?;
                if state.merged_into.is_some() || !state.absorbed.is_empty() {
                    // Profiles of theirs that other processes hold are read
                    // ahead, one request per process.
                    elsewhere.extend(
                        state
                            .merged_into
                            .iter()
                            .chain(&state.absorbed)
                            .filter(|other| !view.owns(other))
                            .map(|other| (other.clone(), keys::profile(other))),
                    );
                    in_merges.push(id);
                } else if view.owns(&id) {
                    board.set_facts(&id, CustomerFacts::from_profile(&state));
                }
                Ok(())
            })?;
        let prefetched;
        let view = if elsewhere.is_empty() {
            view
        } else {
            prefetched = view.with_prefetched(view.prefetch(&elsewhere)?);
            &prefetched
        };
        for id in in_merges {
            board.refresh_person(view, &id)?;
        }
        Ok(board)
    }

    /// Puts `facts` in the slot of `id`, given one if need be; the slot.
    fn set_facts(&mut self, id: &str, facts: CustomerFacts) -> u32 {
        // Past every slot given out, those of people gone included.
        let next = self.persons.capacity() as u32;
        let (id, slot) = match self.slot_of.get_key_value(id) {
            Some((id, slot)) => (id.clone(), *slot),
            None => {
                let id: Arc<str> = Arc::from(id);
                self.slot_of.insert(id.clone(), next);
                (id, next)
            }
        };
        self.persons.put(slot, id, facts);
        slot
    }

    /// Takes `id` off the board; their slot if they were on it.
    fn remove_person(&mut self, id: &str) -> Option<u32> {
        let slot = *self.slot_of.get(id)?;
        self.persons.take(slot).then_some(slot)
    }

    /// Re-reads the person `id` belongs to, whole (profiles other
    /// processes serve included); the slots whose facts changed. A person
    /// is on the board of the process owning their root profile only.
    fn refresh_person(&mut self, view: &View<'_>, id: &str) -> Result<Vec<u32>> {
        let start = self.root_of.get(id).map_or(id, String::as_str).to_owned();
        let Some(person) = person_of(view, &start)? else {
            // Gone from the store (erased): gone from the scores too.
            return Ok(self.remove_person(&start).into_iter().collect());
        };
        let mut touched = Vec::new();
        for (member, _) in &person.members {
            if *member != person.root {
                self.root_of.insert(member.clone(), person.root.clone());
                touched.extend(self.remove_person(member));
            }
        }
        self.root_of.remove(&person.root);
        if !view.owns(&person.root) {
            // Another process's person: it counts them.
            touched.extend(self.remove_person(&person.root));
            self.remote_members.remove(&person.root);
            return Ok(touched);
        }
        let mut elsewhere: Vec<String> = person
            .members
            .iter()
            .flat_map(|(member, profile)| std::iter::once(member).chain(&profile.absorbed))
            .filter(|id| !view.owns(id))
            .cloned()
            .collect();
        elsewhere.sort_unstable();
        elsewhere.dedup();
        if elsewhere.is_empty() {
            self.remote_members.remove(&person.root);
        } else {
            self.remote_members.insert(person.root.clone(), elsewhere);
        }
        let facts = facts_of(&person.members);
        let unchanged = self
            .slot_of
            .get(person.root.as_str())
            .and_then(|slot| self.persons.get(*slot))
            .is_some_and(|kept| *kept == facts);
        if !unchanged {
            touched.push(self.set_facts(&person.root, facts));
        }
        Ok(touched)
    }

    /// Re-reads every person with a profile another process serves, those
    /// profiles first in one request per process, and re-scores those who
    /// changed (up to a failure, when one fails).
    fn refresh_remote(&mut self, view: &View<'_>, config: &AnalyticsConfig) -> Result<()> {
        let wanted: Vec<(String, Vec<u8>)> = self
            .remote_members
            .values()
            .flatten()
            .map(|id| (id.clone(), keys::profile(id)))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let view = view.with_prefetched(view.prefetch(&wanted)?);
        let mut touched = Vec::new();
        let dependent: Vec<String> = self.remote_members.keys().cloned().collect();
        let mut outcome = Ok(());
        for root in dependent {
            match self.refresh_person(&view, &root) {
                Ok(slots) => touched.extend(slots),
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        self.retouch(touched, config);
        outcome
    }

    /// Takes in every profile changed since the last call. Returns the
    /// `as_of`s whose models are now due for a refit, already marked as
    /// being refitted.
    fn catch_up(&mut self, view: &View<'_>, config: &AnalyticsConfig) -> Result<Vec<i64>> {
        let Some(changes) = self.changes.clone() else {
            return Ok(Vec::new());
        };
        let changed = changes.take();
        let mut touched = Vec::new();
        for (done, id) in changed.iter().enumerate() {
            match self.refresh_person(view, id) {
                Ok(slots) => touched.extend(slots),
                Err(error) => {
                    // Nothing is lost: the rest is taken in next time.
                    changes.record(changed[done..].to_vec());
                    self.retouch(touched, config);
                    return Err(error);
                }
            }
        }
        self.retouch(touched, config);
        let mut due = Vec::new();
        for snapshot in &self.snapshots {
            if snapshot.stale() && !self.refitting.contains_key(&snapshot.as_of) {
                due.push(snapshot.as_of);
            }
        }
        for as_of in &due {
            self.refitting.insert(*as_of, HashSet::new());
        }
        Ok(due)
    }

    /// Re-scores the people in `touched` in every snapshot, and ages the
    /// fits and validations by them.
    fn retouch(&mut self, mut touched: Vec<u32>, config: &AnalyticsConfig) {
        touched.sort_unstable();
        touched.dedup();
        for snapshot in &mut self.snapshots {
            for slot in &touched {
                snapshot.update(*slot, self.persons.get(*slot), config);
            }
        }
        for pending in self.refitting.values_mut() {
            pending.extend(touched.iter().copied());
        }
        for (_, fits) in &mut self.fits {
            fits.changed_since_fit += touched.len();
        }
        self.fits
            .retain(|(_, fits)| !moved_on(fits.changed_since_fit, fits.population_at_fit));
        for kept in &mut self.validations {
            kept.changed_since_fit += touched.len();
        }
        self.validations
            .retain(|kept| !moved_on(kept.changed_since_fit, kept.population_at_fit));
    }

    /// Puts a snapshot refitted from a copy of everyone in place of the old
    /// one, after re-scoring the people who changed since the copy.
    /// `new`: the snapshot is for a date the board did not keep yet, and
    /// is added (else a snapshot pushed out meanwhile by other dates is no
    /// longer wanted).
    fn install(&mut self, mut snapshot: Snapshot, config: &AnalyticsConfig, new: bool) {
        let changed = self.refitting.remove(&snapshot.as_of).unwrap_or_default();
        for slot in &changed {
            snapshot.update(*slot, self.persons.get(*slot), config);
        }
        snapshot.changed_since_fit = changed.len();
        if let Some(kept) = self
            .snapshots
            .iter_mut()
            .find(|kept| kept.as_of == snapshot.as_of)
        {
            *kept = snapshot;
        } else if new {
            if self.snapshots.len() >= KEPT_SNAPSHOTS {
                self.snapshots.pop_front();
            }
            self.snapshots.push_back(snapshot);
        }
    }

    /// The snapshot of `as_of`, scored against `others` (see
    /// [`Snapshot::build`]): the one kept if it was, else scored now.
    fn snapshot(
        &mut self,
        as_of: i64,
        config: &AnalyticsConfig,
        others: Option<Others>,
    ) -> &Snapshot {
        let kept = self
            .snapshots
            .iter()
            .position(|snapshot| snapshot.as_of == as_of);
        if let Some(position) = kept
            && self.snapshots[position].scored_against(others.as_ref())
        {
            if let Some(gathered) = &mut self.snapshots[position].gathered {
                gathered.at = Instant::now();
            }
            return &self.snapshots[position];
        }
        let started = Instant::now();
        let snapshot = Snapshot::build(&self.persons, as_of, config, others);
        tracing::info!(
            as_of = %rapport_projections::time::format_day(as_of),
            persons = self.persons.len(),
            with_other_processes = snapshot.gathered.is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "scored every customer"
        );
        let position = match kept {
            Some(position) => {
                self.snapshots[position] = snapshot;
                position
            }
            None => {
                if self.snapshots.len() >= KEPT_SNAPSHOTS {
                    self.snapshots.pop_front();
                }
                self.snapshots.push_back(snapshot);
                self.snapshots.len() - 1
            }
        };
        &self.snapshots[position]
    }

    /// The snapshot of `as_of`, if kept, with the board's ids.
    fn scored<'a>(&'a self, as_of: i64, config: &'a AnalyticsConfig) -> Option<Scored<'a>> {
        let snapshot = self.snapshots.iter().find(|kept| kept.as_of == as_of)?;
        snapshot
            .reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Scored {
            snapshot,
            slot_of: &self.slot_of,
            config,
        })
    }

    /// Both models for `key`, over these people alone or with `others`
    /// over the whole population.
    fn fits(&mut self, key: FitKey, config: &AnalyticsConfig, others: Option<Others>) -> Fits {
        if let Some((_, fits)) = self
            .fits
            .iter()
            .find(|(cached, fits)| *cached == key && fits.others == others)
        {
            return fits.clone();
        }
        // Everyone's scores at this `as_of` were computed with the same fits
        // (same population), kept current by the same rule.
        if key.cohort.is_none()
            && let Some(snapshot) = self
                .snapshots
                .iter()
                .find(|kept| kept.as_of == key.as_of && kept.scored_against(others.as_ref()))
        {
            return Fits {
                buyers: snapshot.buyers,
                bg_nbd: snapshot.models.bg_nbd.clone(),
                gamma_gamma: snapshot.models.gamma_gamma.clone(),
                changed_since_fit: snapshot.changed_since_fit,
                population_at_fit: snapshot.population_at_fit,
                others,
            };
        }
        let in_cohort = |summary: &RepeatSummary| {
            key.cohort
                .is_none_or(|(from, to)| (from..=to).contains(&summary.first_occasion_day))
        };
        let everyone: Vec<RepeatSummary> = match &others {
            None => self
                .persons
                .values()
                .filter_map(|facts| inputs(facts, key.as_of, config).summary)
                .filter(in_cohort)
                .collect(),
            Some(others) => {
                let mut whole = others.share.clone();
                for (id, facts) in self.persons.iter() {
                    if others.served.holds(id) {
                        whole.add(&inputs(facts, key.as_of, config));
                    }
                }
                whole.summaries().into_iter().filter(in_cohort).collect()
            }
        };
        let customers = everyone.len();
        let started = Instant::now();
        let fits = Fits {
            buyers: customers,
            bg_nbd: fit_bg_nbd(&everyone, None::<Cohort>).map_err(|error| error.to_string()),
            gamma_gamma: fit_gamma_gamma(&everyone).map_err(|error| error.to_string()),
            changed_since_fit: 0,
            population_at_fit: self.persons.len(),
            others,
        };
        tracing::info!(
            as_of = %rapport_projections::time::format_day(key.as_of),
            cohort = ?key.cohort,
            customers,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fitted BG/NBD and Gamma-Gamma"
        );
        if self.fits.len() >= KEPT_FITS {
            self.fits.pop_front();
        }
        self.fits.push_back((key, fits.clone()));
        fits
    }
}

/// Scores everyone at `as_of` on a copy of their facts and installs the
/// snapshot (see [`Board::install`]), so that the board is held only while
/// the copy is taken and the result put in place, not while everyone is
/// scored; changes applied meanwhile are replayed onto it. `as_of` must
/// be marked as being refitted first. `before_install` sees the snapshot
/// and the copy it was scored from.
fn score_on_copy(
    board: &RwLock<Board>,
    as_of: i64,
    config: &AnalyticsConfig,
    new: bool,
    others: Option<Others>,
    before_install: impl FnOnce(&Snapshot, &Persons),
) {
    let persons = board.read().expect("board lock").persons.clone();
    let snapshot = Snapshot::build(&persons, as_of, config, others);
    before_install(&snapshot, &persons);
    drop(persons);
    board
        .write()
        .expect("board lock")
        .install(snapshot, config, new);
}

/// Dashboard figures gathered from every process: version, `as_of`,
/// when, the figures.
type GatheredOverview = (String, i64, Instant, Arc<Overview>);

/// The scoreboards of every version, built on first use.
pub struct Scoreboard {
    pub config: AnalyticsConfig,
    boards: Mutex<HashMap<String, Arc<RwLock<Board>>>>,
    /// (version, `as_of`) whose dashboard figures are being gathered in the
    /// background.
    gathering: Arc<Mutex<HashSet<(String, i64)>>>,
    /// Versions whose image is being read back; their boards wait for it.
    restoring: (Mutex<HashSet<String>>, std::sync::Condvar),
    /// Dashboard figures gathered from every process, by (version,
    /// `as_of`), with when.
    gathered_overviews: Mutex<VecDeque<GatheredOverview>>,
    persons: Gauge,
    build_milliseconds: Gauge,
}

impl Scoreboard {
    pub fn new(config: AnalyticsConfig, registry: &Registry) -> Self {
        Scoreboard {
            config,
            boards: Mutex::new(HashMap::new()),
            gathering: Arc::default(),
            restoring: Default::default(),
            gathered_overviews: Mutex::default(),
            persons: registry.gauge(
                "rapport_scores_persons",
                "People the live scoreboard knows.",
                &[],
            ),
            build_milliseconds: registry.gauge(
                "rapport_scores_build_milliseconds",
                "How long the last scan of a version's profiles took.",
                &[],
            ),
        }
    }

    /// The dashboard's figures of `version` at `as_of` gathered from every
    /// process less than [`OVERVIEW_MAX_AGE`] ago, if any.
    pub(crate) fn gathered_overview(&self, version: &str, as_of: i64) -> Option<Arc<Overview>> {
        let kept = self.gathered_overviews.lock().expect("overviews lock");
        kept.iter()
            .find(|(kept_version, day, at, _)| {
                kept_version == version && *day == as_of && at.elapsed() < OVERVIEW_MAX_AGE
            })
            .map(|(_, _, _, figures)| figures.clone())
    }

    /// Keeps figures gathered from every process (see
    /// [`Scoreboard::gathered_overview`]), as many days as snapshots.
    pub(crate) fn keep_gathered_overview(&self, version: &str, as_of: i64, figures: Arc<Overview>) {
        let mut kept = self.gathered_overviews.lock().expect("overviews lock");
        kept.retain(|(kept_version, day, _, _)| (kept_version.as_str(), *day) != (version, as_of));
        if kept.len() >= KEPT_SNAPSHOTS {
            kept.pop_front();
        }
        kept.push_back((version.to_owned(), as_of, Instant::now(), figures));
    }

    /// Marks `versions` as being restored from their images: their boards
    /// wait for [`Scoreboard::restore`] rather than scan.
    pub(crate) fn begin_restore(&self, versions: &[String]) {
        let mut restoring = self.restoring.0.lock().expect("restoring lock");
        restoring.extend(versions.iter().cloned());
    }

    /// Ends the wait for `version`'s restore.
    pub(crate) fn end_restore(&self, version: &str) {
        let (restoring, restored) = &self.restoring;
        restoring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(version);
        restored.notify_all();
    }

    fn await_restore(&self, version: &str) {
        let (restoring, restored) = &self.restoring;
        let mut restoring = restoring.lock().expect("restoring lock");
        while restoring.contains(version) {
            restoring = restored.wait(restoring).expect("restoring lock");
        }
    }

    /// Reads the board of `version` back from its image, if it has a valid
    /// one (see [`image`]), and ends the wait [`Scoreboard::begin_restore`]
    /// started, whatever happens.
    pub(crate) fn restore(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
    ) -> Result<bool> {
        struct Done<'a>(&'a Scoreboard, &'a str);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.end_restore(self.1);
            }
        }
        let _done = Done(self, version);
        if !view.owns_everything() {
            // Its people's profiles elsewhere may have changed meanwhile.
            return Ok(false);
        }
        let started = Instant::now();
        let Some(board) = image::read(view.store, &view.family, changes, &self.config)? else {
            return Ok(false);
        };
        let persons = board.persons.len();
        let days = board.snapshots.len();
        self.persons.set(persons as i64);
        self.boards
            .lock()
            .expect("boards lock")
            .insert(version.to_owned(), Arc::new(RwLock::new(board)));
        tracing::info!(
            version,
            persons,
            days,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "read the scoreboard back from its image"
        );
        Ok(true)
    }

    /// Whether `view`'s version has an image to read back.
    pub(crate) fn has_image(&self, view: &View<'_>) -> Result<bool> {
        image::exists(view.store, &view.family)
    }

    /// Writes the board of `version`, if there is one, as its image (see
    /// [`image`]). For when its worker has stopped: the image holds the
    /// positions it stands at.
    pub(crate) fn save(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
    ) -> Result<bool> {
        let kept = self
            .boards
            .lock()
            .expect("boards lock")
            .contains_key(version);
        if !kept || !view.owns_everything() {
            return Ok(false);
        }
        let started = Instant::now();
        let board = self.board(view, version, changes)?;
        let board = board.read().expect("board lock");
        let positions = Positions::load(view.store, &view.family)?;
        let days = image::write(view.store, &view.family, &board, &positions, &self.config)?;
        tracing::info!(
            version,
            persons = board.persons.len(),
            days,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "wrote the scoreboard's image"
        );
        Ok(true)
    }

    /// The board of `version`, caught up with every applied batch.
    fn board(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
    ) -> Result<Arc<RwLock<Board>>> {
        self.await_restore(version);
        let existing = self
            .boards
            .lock()
            .expect("boards lock")
            .get(version)
            .cloned()
            .filter(|board| {
                let board = board.read().expect("board lock");
                let same_feed = match (&board.changes, &changes) {
                    (Some(mine), Some(current)) => mine.same_feed(current),
                    (None, None) => true,
                    _ => false,
                };
                same_feed && board.served == view.served_here()
            });
        let board = match existing {
            Some(board) => board,
            None => {
                let started = Instant::now();
                let board = Arc::new(RwLock::new(Board::build(view, changes)?));
                let elapsed = started.elapsed().as_millis() as i64;
                self.build_milliseconds.set(elapsed);
                self.persons
                    .set(board.read().expect("board lock").persons.len() as i64);
                tracing::info!(version, elapsed_ms = elapsed, "built the scoreboard");
                self.boards
                    .lock()
                    .expect("boards lock")
                    .insert(version.to_owned(), board.clone());
                board
            }
        };
        let pending = board
            .read()
            .expect("board lock")
            .changes
            .as_ref()
            .is_some_and(Changes::pending);
        if pending {
            let due = {
                let mut writable = board.write().expect("board lock");
                let due = writable.catch_up(view, &self.config)?;
                self.persons.set(writable.persons.len() as i64);
                due
            };
            for as_of in due {
                match self.gather(view, &board, as_of) {
                    Ok(others) => self.refit_in_background(board.clone(), as_of, others),
                    Err(error) => {
                        tracing::warn!(%error, "could not gather the population for a refit; the current models stay");
                        board.write().expect("board lock").refitting.remove(&as_of);
                    }
                }
            }
        }
        Ok(board)
    }

    /// With other processes serving some partitions: their part of the
    /// population at `as_of`, after reading again this process's people
    /// with profiles there. `None` when every partition is served here.
    fn gather(&self, view: &View<'_>, board: &RwLock<Board>, as_of: i64) -> Result<Option<Others>> {
        if !view.shared() {
            return Ok(None);
        }
        self.refresh_remote(view, board)?;
        let share = view
            .others_share(as_of)?
            .unwrap_or_else(|| PopulationShare::new(as_of));
        Ok(Some(Others {
            share,
            served: view.served_here(),
        }))
    }

    fn refresh_remote(&self, view: &View<'_>, board: &RwLock<Board>) -> Result<()> {
        board
            .write()
            .expect("board lock")
            .refresh_remote(view, &self.config)
    }

    /// This process's share of the population at `as_of`: the people
    /// `served` names (see [`PopulationShare`]).
    pub(crate) fn share(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        as_of: i64,
        served: &Served,
    ) -> Result<PopulationShare> {
        self.with_persons(view, version, changes, |persons, config| {
            let mut share = PopulationShare::new(as_of);
            for (id, facts) in persons.iter() {
                if served.holds(id) {
                    share.add(&inputs(facts, as_of, config));
                }
            }
            share
        })
    }

    /// Refits the snapshot of `as_of` on its own thread; requests go on
    /// being answered from the current one meanwhile.
    fn refit_in_background(&self, board: Arc<RwLock<Board>>, as_of: i64, others: Option<Others>) {
        let config = self.config.clone();
        let spawned = std::thread::Builder::new()
            .name("scores-refit".into())
            .spawn(move || {
                let started = Instant::now();
                score_on_copy(&board, as_of, &config, false, others, |_, _| {});
                tracing::info!(
                    as_of = %rapport_projections::time::format_day(as_of),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "refitted the models and re-scored everyone"
                );
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start a refit; the current models stay");
        }
    }

    /// Makes sure the board keeps a snapshot of `as_of`: scores everyone
    /// on a copy if it does not (see [`score_on_copy`]), or waits for a
    /// scoring of that day already under way. For requests that may need
    /// days nobody asked for yet, so that they do not hold the board while
    /// everyone is scored.
    pub(crate) fn ensure_snapshot(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        as_of: i64,
    ) -> Result<()> {
        let board = self.board(view, version, changes)?;
        let others = self.gather(view, &board, as_of)?;
        loop {
            let mut writable = board.write().expect("board lock");
            if writable.snapshots.iter().any(|kept| kept.as_of == as_of) {
                return Ok(());
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = writable.refitting.entry(as_of)
            {
                // Changes applied while it is scored are replayed onto it.
                slot.insert(HashSet::new());
                break;
            }
            drop(writable);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let started = Instant::now();
        score_on_copy(&board, as_of, &self.config, true, others, |_, _| {});
        tracing::info!(
            as_of = %rapport_projections::time::format_day(as_of),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "scored everyone on a copy"
        );
        Ok(())
    }

    /// Runs `read` on the snapshot of `as_of`, building it if needed.
    pub(crate) fn with_snapshot<T>(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        as_of: i64,
        read: impl FnOnce(&Scored<'_>, &AnalyticsConfig) -> T,
    ) -> Result<T> {
        self.with_everyone(view, version, changes, as_of, |scored, _, config| {
            read(scored, config)
        })
    }

    /// Runs `read` on the snapshot of `as_of` and everyone's facts, building
    /// the snapshot if needed (for the dashboard's figures and lists).
    pub(crate) fn with_everyone<T>(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        as_of: i64,
        read: impl FnOnce(&Scored<'_>, &Persons, &AnalyticsConfig) -> T,
    ) -> Result<T> {
        let board = self.board(view, version, changes)?;
        {
            let shared = board.read().expect("board lock");
            if let Some(scored) = shared.scored(as_of, &self.config) {
                let current = if view.shared() {
                    !scored.due_for_gathering(&view.served_here())
                } else {
                    scored.gathered.is_none()
                };
                if current {
                    return Ok(read(&scored, &shared.persons, &self.config));
                }
            }
        }
        let others = self.gather(view, &board, as_of)?;
        let mut board = board.write().expect("board lock");
        board.snapshot(as_of, &self.config, others);
        let board = &*board;
        let scored = board
            .scored(as_of, &self.config)
            .expect("the snapshot just built");
        Ok(read(&scored, &board.persons, &self.config))
    }

    /// The dashboard's figures at `as_of` if they are ready; otherwise
    /// starts gathering them in the background (scoring everyone at
    /// `as_of` first if no snapshot has that date) and says `None`, so a
    /// page can answer at once and be asked again.
    pub(crate) fn overview_ready(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        as_of: i64,
    ) -> Result<Option<Arc<Overview>>> {
        let board = self.board(view, version, changes)?;
        {
            let shared = board.read().expect("board lock");
            if let Some(figures) = shared
                .snapshots
                .iter()
                .find(|kept| kept.as_of == as_of)
                .and_then(Snapshot::overview_cached)
            {
                return Ok(Some(figures));
            }
        }
        let job = (version.to_owned(), as_of);
        if !self
            .gathering
            .lock()
            .expect("gathering lock")
            .insert(job.clone())
        {
            return Ok(None);
        }
        let others = match self.gather(view, &board, as_of) {
            Ok(others) => others,
            Err(error) => {
                self.gathering.lock().expect("gathering lock").remove(&job);
                return Err(error);
            }
        };
        let build = {
            let mut writable = board.write().expect("board lock");
            let kept = writable.snapshots.iter().any(|kept| kept.as_of == as_of);
            if !kept && writable.refitting.contains_key(&as_of) {
                // A refit of a snapshot pushed out meanwhile is finishing.
                drop(writable);
                self.gathering.lock().expect("gathering lock").remove(&job);
                return Ok(None);
            }
            if !kept {
                // Changes applied while it is built are replayed onto it.
                writable.refitting.insert(as_of, HashSet::new());
            }
            !kept
        };
        let config = self.config.clone();
        let worker = board.clone();
        let gathering = self.gathering.clone();
        let finished = job.clone();
        let spawned = std::thread::Builder::new()
            .name("dashboard-figures".into())
            .spawn(move || {
                let started = Instant::now();
                if build {
                    score_on_copy(
                        &worker,
                        as_of,
                        &config,
                        true,
                        others,
                        |snapshot, persons| {
                            snapshot.overview(persons, &config);
                        },
                    );
                } else {
                    let shared = worker.read().expect("board lock");
                    if let Some(snapshot) = shared.snapshots.iter().find(|kept| kept.as_of == as_of)
                    {
                        snapshot.overview(&shared.persons, &config);
                    }
                }
                gathering.lock().expect("gathering lock").remove(&finished);
                tracing::info!(
                    as_of = %rapport_projections::time::format_day(as_of),
                    scored_everyone = build,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "the dashboard's figures are ready"
                );
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start gathering the dashboard's figures");
            self.gathering.lock().expect("gathering lock").remove(&job);
            if build {
                board.write().expect("board lock").refitting.remove(&as_of);
            }
        }
        Ok(None)
    }

    /// Scores one person (read fresh from the store) at `as_of`.
    pub(crate) fn score_person(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        members: &[(String, ProfileState)],
        as_of: i64,
    ) -> Result<CustomerScores> {
        let facts = facts_of(members);
        self.with_snapshot(view, version, changes, as_of, |snapshot, config| {
            score(&facts, as_of, &snapshot.rfm, &snapshot.models, config)
        })
    }

    /// Runs `read` on everyone's facts as they stand now (for the
    /// campaign figures, which depend on no `as_of`), people with profiles
    /// on other processes read again first.
    pub(crate) fn with_persons<T>(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        read: impl FnOnce(&Persons, &AnalyticsConfig) -> T,
    ) -> Result<T> {
        let board = self.board(view, version, changes)?;
        self.refresh_remote(view, &board)?;
        let shared = board.read().expect("board lock");
        Ok(read(&shared.persons, &self.config))
    }

    /// Both models validated on a calibration period ending on
    /// `calibration_end` and a holdout ending on `holdout_end` (see
    /// [`validate`]), kept until the population moved on. Everyone's
    /// histories are split under the board's read lock; the fits run
    /// after it is released.
    pub(crate) fn validation(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        calibration_end: i64,
        holdout_end: i64,
    ) -> Result<Arc<Validation>> {
        let board = self.board(view, version, changes)?;
        let (buyers, population) = {
            let shared = board.read().expect("board lock");
            if let Some(kept) = shared.validations.iter().find(|kept| {
                (kept.validation.calibration_end, kept.validation.holdout_end)
                    == (calibration_end, holdout_end)
            }) {
                return Ok(kept.validation.clone());
            }
            let mut buyers = self.holdouts_of(
                &shared.persons,
                calibration_end,
                holdout_end,
                &Served::everyone(),
            );
            // In id order, so the fit does not depend on how the map iterated.
            buyers.sort_unstable_by(|left, right| left.0.cmp(&right.0));
            let buyers: Vec<Holdout> = buyers.into_iter().map(|(_, holdout)| holdout).collect();
            (buyers, shared.persons.len())
        };
        let started = Instant::now();
        let validation = Arc::new(validate(&buyers, calibration_end, holdout_end));
        tracing::info!(
            calibration_end = %rapport_projections::time::format_day(calibration_end),
            holdout_end = %rapport_projections::time::format_day(holdout_end),
            buyers = buyers.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "validated BG/NBD and Gamma-Gamma"
        );
        let mut board = board.write().expect("board lock");
        if board.validations.len() >= KEPT_FITS {
            board.validations.pop_front();
        }
        board.validations.push_back(KeptValidation {
            validation: validation.clone(),
            changed_since_fit: 0,
            population_at_fit: population,
        });
        Ok(validation)
    }

    fn holdouts_of(
        &self,
        persons: &Persons,
        calibration_end: i64,
        holdout_end: i64,
        served: &Served,
    ) -> Vec<(String, Holdout)> {
        persons
            .iter()
            .filter(|(id, _)| served.holds(id))
            .filter_map(|(id, facts)| {
                let holdout = Holdout::of(facts, calibration_end, holdout_end, &self.config)?;
                Some((id.to_owned(), holdout))
            })
            .collect()
    }

    /// The calibration buyers of a validation (see [`validate`]) among the
    /// people `served` names, by id, to be merged with other processes'.
    pub(crate) fn holdouts(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        calibration_end: i64,
        holdout_end: i64,
        served: &Served,
    ) -> Result<Vec<(String, Holdout)>> {
        self.with_persons(view, version, changes, |persons, _| {
            self.holdouts_of(persons, calibration_end, holdout_end, served)
        })
    }

    /// The dashboard's figures at `as_of` over the people `served` names,
    /// to be merged with other processes' and finished with the BG/NBD
    /// fit everyone is scored against (see [`Snapshot::bg_nbd`]).
    pub(crate) fn overview_part(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        as_of: i64,
        served: &Served,
    ) -> Result<OverviewBuilder> {
        self.with_everyone(view, version, changes, as_of, |scored, persons, config| {
            scored.overview_part(persons, config, served)
        })
    }

    /// The model fits for `key`, cached until the population moved on.
    pub(crate) fn fits(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        key: FitKey,
    ) -> Result<Fits> {
        let board = self.board(view, version, changes.clone())?;
        let others = if key.cohort.is_none() {
            // The models everyone is scored against at `as_of`.
            self.with_snapshot(view, version, changes, key.as_of, |_, _| ())?;
            let shared = board.read().expect("board lock");
            shared
                .snapshots
                .iter()
                .find(|kept| kept.as_of == key.as_of)
                .and_then(|kept| kept.gathered.as_ref())
                .map(|gathered| gathered.others.clone())
        } else {
            self.gather(view, &board, key.as_of)?
        };
        let mut board = board.write().expect("board lock");
        Ok(board.fits(key, &self.config, others))
    }

    /// Segment counts at `ask`'s day and a page of one segment's members,
    /// among the people `served` names (for another process's figures).
    pub(crate) fn segments(
        &self,
        view: &View<'_>,
        version: &str,
        changes: Option<Changes>,
        ask: &rapport_proto::internal::SegmentAsk,
        page: Option<SegmentKind>,
        served: &Served,
    ) -> Result<rapport_proto::internal::SegmentAnswer> {
        use rapport_proto::internal::{SegmentAnswer, SegmentCount};
        self.with_snapshot(view, version, changes, ask.as_of_day, |scored, _| {
            let mut answer = SegmentAnswer {
                customers: scored.customers_of(served),
                ..SegmentAnswer::default()
            };
            for kind in SegmentKind::ALL {
                for (name, count) in scored.counts_of(kind, served) {
                    answer.counts.push(SegmentCount {
                        kind: kind.as_str().to_owned(),
                        name,
                        count,
                    });
                }
            }
            if let Some(kind) = page {
                let after = (!ask.after.is_empty()).then_some(ask.after.as_str());
                let (members, more) =
                    scored.members(kind, &ask.name, after, ask.limit as usize, served);
                answer.members = members;
                answer.more = more;
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_read_back_gives_newcomers_slots_of_their_own() {
        // Given a board whose second person left, written and read back
        let directory = tempfile::tempdir().unwrap();
        let family = "customer_view.v1";
        let store = rapport_common::store::Store::open(directory.path(), &[family]).unwrap();
        let config = AnalyticsConfig::default();
        let facts = |day: i64| CustomerFacts {
            first_seen_day: Some(day),
            ..CustomerFacts::default()
        };
        let mut board = Board::empty(None);
        for (day, id) in ["a", "b", "c"].into_iter().enumerate() {
            board.set_facts(id, facts(day as i64));
        }
        assert_eq!(board.remove_person("b"), Some(1));
        image::write(&store, family, &board, &Positions::default(), &config).unwrap();
        let mut restored = image::read(&store, family, None, &config).unwrap().unwrap();
        assert_eq!(restored.persons.len(), 2);

        // When someone new arrives, they get a slot nobody had
        let slot = restored.set_facts("d", facts(9));
        assert_eq!(slot, 3);
        assert_eq!(restored.persons.get(2), Some(&facts(2)), "c keeps theirs");
        assert_eq!(restored.persons.get(3), Some(&facts(9)));
        let ids: Vec<&str> = restored.slot_of.keys().map(|id| &**id).collect();
        assert_eq!(ids, ["a", "c", "d"]);
    }

    #[test]
    fn segment_kinds_round_trip_and_list_every_name() {
        let config = AnalyticsConfig::default();
        for kind in SegmentKind::ALL {
            assert_eq!(SegmentKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(SegmentKind::parse("colour"), None);
        assert_eq!(SegmentKind::Rfm.names(&config).len(), 11);
        assert_eq!(
            SegmentKind::Loyalty.names(&config),
            ["Bronze", "Silver", "Gold", "Diamond"]
        );
    }
}
