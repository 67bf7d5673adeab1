//! The unified customer view: everything known about one person.
//!
//! State is kept per *profile* (a known customer or a prospect) and is
//! mergeable: [`ProfileState::merge`] is commutative and associative, so the
//! view of a person is the merge of their root profile with every profile
//! absorbed into it, whatever partition each lived on and in whatever order
//! those partitions were read. Nothing is copied between partitions; see
//! `services/ARCHITECTURE.md`.

use std::collections::{BTreeMap, BTreeSet};

use rapport_proto::v1::{CustomerRecord, Event, customer_record, event};
use rapport_proto::wire::Pruning;
use serde::{Deserialize, Serialize};

use crate::identity::{Conflict, Identifier};
use crate::time::format_rfc3339;

/// Orders last-writer-wins values: later `occurred_at`, then larger event id.
/// Both come from the event, so the winner never depends on arrival order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    pub occurred_at_ms: i64,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<T> {
    pub stamp: Stamp,
    pub value: T,
}

fn keep_latest<T: Clone>(slot: &mut Option<Stamped<T>>, candidate: &Option<Stamped<T>>) {
    if let Some(candidate) = candidate
        && slot
            .as_ref()
            .is_none_or(|current| candidate.stamp > current.stamp)
    {
        *slot = Some(candidate.clone());
    }
}

fn set_latest<T: Clone>(slot: &mut Option<Stamped<T>>, stamp: &Stamp, value: T) {
    keep_latest(
        slot,
        &Some(Stamped {
            stamp: stamp.clone(),
            value,
        }),
    );
}

fn min_option(left: Option<i64>, right: Option<i64>) -> Option<i64> {
    match (left, right) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_option(left: Option<i64>, right: Option<i64>) -> Option<i64> {
    left.max(right)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelActivity {
    pub count: u64,
    pub last_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub at_ms: i64,
    pub total_minor: i64,
    pub currency: String,
}

/// What is known of one order; pieces may arrive on different profiles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFacts {
    pub placed: Option<Stamped<PlacedOrder>>,
    pub cancelled_at_ms: Option<i64>,
    pub refunded_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenedTicket {
    pub at_ms: i64,
    pub category: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketFacts {
    pub opened: Option<Stamped<OpenedTicket>>,
    pub resolved_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileFields {
    pub name: Option<Stamped<String>>,
    pub email: Option<Stamped<String>>,
    pub phone: Option<Stamped<String>>,
    pub city: Option<Stamped<String>>,
    pub attributes: BTreeMap<String, Stamped<String>>,
}

/// The folded state of one profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileState {
    pub identifiers: BTreeSet<Identifier>,
    pub fields: ProfileFields,
    pub first_seen_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    pub event_counts: BTreeMap<String, u64>,
    pub channels: BTreeMap<String, ChannelActivity>,
    pub orders: BTreeMap<String, OrderFacts>,
    pub tickets: BTreeMap<String, TicketFacts>,
    pub last_nps: Option<Stamped<i32>>,
    pub csat_sum: i64,
    pub csat_count: u64,
    pub consent: BTreeMap<String, Stamped<bool>>,
    pub points_redeemed: i64,
    /// Profiles absorbed directly into this one.
    pub absorbed: BTreeSet<String>,
    /// Set when this profile was absorbed; reads follow it.
    pub merged_into: Option<String>,
    pub conflicts: BTreeSet<(Identifier, String)>,
    /// Refunds by the id of their event, with their time, so that scores at
    /// an earlier `as_of` do not see later refunds. Stored after the
    /// format-1 fields (see [`ProfileState::encode`]).
    #[serde(skip)]
    pub refunds: BTreeMap<String, RefundFact>,
    /// Points redemptions by the id of their event.
    #[serde(skip)]
    pub redemptions: BTreeMap<String, RedemptionFact>,
    /// What to show for an identifier that travels as a pseudonym: the
    /// sealed token ingest stored beside it, by pseudonym. Of several
    /// tokens for one pseudonym (each event seals afresh) the smallest is
    /// kept, so that folding and merging in any order agree. Stored after
    /// the format-2 facts.
    #[serde(skip)]
    pub display: BTreeMap<String, String>,
    /// Email events of campaigns (those with a `campaign_id`) by the id of
    /// their event, for the campaign figures. Stored after the display
    /// tokens (format 4).
    #[serde(skip)]
    pub mail: BTreeMap<String, MailFact>,
    /// When email consent was withdrawn, by the id of the event.
    #[serde(skip)]
    pub email_consent_withdrawn: BTreeMap<String, i64>,
}

/// What happened to a campaign's email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MailKind {
    Sent,
    Bounced,
    Opened,
    Clicked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailFact {
    pub at_ms: i64,
    pub kind: MailKind,
    pub campaign_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundFact {
    pub order_id: String,
    pub at_ms: i64,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedemptionFact {
    pub at_ms: i64,
    pub points: i64,
    pub reason: String,
}

/// The facts format 2 added, written after the format-1 state.
#[derive(Serialize, Deserialize)]
struct Format2Facts {
    refunds: BTreeMap<String, RefundFact>,
    redemptions: BTreeMap<String, RedemptionFact>,
}

/// The facts format 4 added, written after the display tokens.
#[derive(Serialize, Deserialize)]
struct Format4Facts {
    mail: BTreeMap<String, MailFact>,
    email_consent_withdrawn: BTreeMap<String, i64>,
}

/// [`Format4Facts`] as written, borrowed.
#[derive(Serialize)]
struct Format4FactsRef<'a> {
    mail: &'a BTreeMap<String, MailFact>,
    email_consent_withdrawn: &'a BTreeMap<String, i64>,
}

/// [`Format2Facts`] as written: serialises to the same bytes, borrowed.
#[derive(Serialize)]
struct Format2FactsRef<'a> {
    refunds: &'a BTreeMap<String, RefundFact>,
    redemptions: &'a BTreeMap<String, RedemptionFact>,
}

/// Something the fold wants stored outside the profile's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Append to the profile's timeline.
    Timeline(TimelineEntry),
    /// `identifier` now resolves to this profile.
    IndexIdentifier(Identifier),
    /// A clash between two known customers, for the conflicts list.
    ConflictRecorded(ConflictEntry),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub occurred_at_ms: i64,
    pub event_id: String,
    pub event_type: String,
    pub channel: String,
    pub summary: String,
}

impl TimelineEntry {
    /// Appends the entry as a timeline value stores it: without its time
    /// and event id, which the value's key holds (see `keys::timeline`).
    pub fn encode_value_into(&self, bytes: &mut Vec<u8>) {
        TimelineLine {
            event_type: &self.event_type,
            channel: &self.channel,
            summary: &self.summary,
        }
        .push_to(bytes);
    }

    /// Reads a stored timeline value, given the time and event id from its
    /// key. Values written before this format held the whole entry, which
    /// is the time and the event id followed by today's value; such a value
    /// begins with exactly those two, which today's (a varint shorter than
    /// 128, then the event type) never does for a time more than 64 ms away
    /// from the epoch.
    pub fn decode_value(
        occurred_at_ms: i64,
        event_id: String,
        value: &[u8],
    ) -> Result<Self, crate::Error> {
        let older_head = postcard::to_stdvec(&(occurred_at_ms, &event_id))?;
        let line = value.strip_prefix(older_head.as_slice()).unwrap_or(value);
        let (event_type, channel, summary): (String, String, String) = postcard::from_bytes(line)?;
        Ok(Self {
            occurred_at_ms,
            event_id,
            event_type,
            channel,
            summary,
        })
    }
}

/// A stored timeline value, borrowed from its entry.
#[derive(Serialize)]
struct TimelineLine<'a> {
    event_type: &'a str,
    channel: &'a str,
    summary: &'a str,
}

impl TimelineLine<'_> {
    fn push_to(&self, bytes: &mut Vec<u8>) {
        *bytes = postcard::to_extend(self, std::mem::take(bytes)).expect("a line serialises");
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictEntry {
    pub received_at_ms: i64,
    pub cause_event_id: String,
    pub conflict: Conflict,
}

impl ProfileState {
    /// Folds one customer-topic record addressed to this profile and
    /// returns what it wants stored outside the profile's state.
    pub fn apply(&mut self, record: &CustomerRecord) -> Vec<Effect> {
        self.fold(record);
        effects(record)
    }

    /// Folds one record into the state alone: [`apply`](Self::apply)
    /// without the effects, which do not depend on the state. A store that
    /// keeps a profile's later records beside its state (RocksDB's merge
    /// operands) folds them with this whenever it combines them.
    pub fn fold(&mut self, record: &CustomerRecord) {
        match &record.body {
            Some(customer_record::Body::Event(resolved)) => {
                self.identifiers
                    .extend(resolved.linked.iter().filter_map(Identifier::from_proto));
                if let Some(event) = &resolved.event {
                    if let Some(customer) = &event.customer {
                        for (pseudonym, token) in [
                            (&customer.customer_id, &customer.customer_id_sealed),
                            (&customer.email, &customer.email_sealed),
                            (&customer.phone, &customer.phone_sealed),
                            (&customer.anonymous_id, &customer.anonymous_id_sealed),
                        ] {
                            if !pseudonym.is_empty() && !token.is_empty() {
                                keep_smallest(&mut self.display, pseudonym, token);
                            }
                        }
                    }
                    self.apply_event(event);
                }
            }
            Some(customer_record::Body::Merged(merged)) => {
                self.absorbed.extend(merged.absorbed.iter().cloned());
            }
            Some(customer_record::Body::MergedAway(merged_away)) => {
                self.merged_into = Some(merged_away.into.clone());
            }
            Some(customer_record::Body::Conflict(recorded)) => {
                if let Some(identifier) = recorded
                    .identifier
                    .as_ref()
                    .and_then(Identifier::from_proto)
                {
                    self.conflicts.insert((identifier, recorded.owner.clone()));
                }
            }
            None => {}
        }
    }

    fn apply_event(&mut self, event: &Event) {
        let at = event.occurred_at_ms;
        let stamp = Stamp {
            occurred_at_ms: at,
            event_id: event.event_id.clone(),
        };
        self.first_seen_ms = min_option(self.first_seen_ms, Some(at));
        self.last_seen_ms = max_option(self.last_seen_ms, Some(at));
        *self.event_counts.entry(event.r#type.clone()).or_default() += 1;
        let channel = self.channels.entry(event.channel.clone()).or_default();
        channel.count += 1;
        channel.last_at_ms = channel.last_at_ms.max(at);

        use event::Payload;
        match &event.payload {
            Some(Payload::CustomerRegistered(profile) | Payload::CustomerUpdated(profile)) => {
                let fields = &mut self.fields;
                for (slot, value) in [
                    (&mut fields.name, &profile.name),
                    (&mut fields.email, &profile.email),
                    (&mut fields.phone, &profile.phone),
                    (&mut fields.city, &profile.city),
                ] {
                    if !value.is_empty() {
                        set_latest(slot, &stamp, value.clone());
                    }
                }
                for (key, value) in &profile.attributes {
                    let mut slot = fields.attributes.remove(key);
                    set_latest(&mut slot, &stamp, value.clone());
                    fields
                        .attributes
                        .extend(slot.map(|kept| (key.clone(), kept)));
                }
            }
            Some(Payload::OrderPlaced(order)) => {
                let facts = self.orders.entry(order.order_id.clone()).or_default();
                let placed = PlacedOrder {
                    at_ms: at,
                    total_minor: order.total_minor,
                    currency: order.currency.clone(),
                };
                set_latest(&mut facts.placed, &stamp, placed);
            }
            Some(Payload::OrderCancelled(cancelled)) => {
                let facts = self.orders.entry(cancelled.order_id.clone()).or_default();
                facts.cancelled_at_ms = min_option(facts.cancelled_at_ms, Some(at));
            }
            Some(Payload::OrderRefunded(refund)) => {
                self.orders
                    .entry(refund.order_id.clone())
                    .or_default()
                    .refunded_minor += refund.amount_minor;
                self.refunds.insert(
                    event.event_id.clone(),
                    RefundFact {
                        order_id: refund.order_id.clone(),
                        at_ms: at,
                        amount_minor: refund.amount_minor,
                    },
                );
            }
            Some(Payload::TicketOpened(ticket)) => {
                let facts = self.tickets.entry(ticket.ticket_id.clone()).or_default();
                set_latest(
                    &mut facts.opened,
                    &stamp,
                    OpenedTicket {
                        at_ms: at,
                        category: ticket.category.clone(),
                    },
                );
            }
            Some(Payload::TicketResolved(ticket)) => {
                let facts = self.tickets.entry(ticket.ticket_id.clone()).or_default();
                facts.resolved_at_ms = max_option(facts.resolved_at_ms, Some(at));
            }
            Some(Payload::SurveyAnswered(survey)) => {
                if let Some(nps) = survey.nps {
                    set_latest(&mut self.last_nps, &stamp, nps);
                }
                if let Some(csat) = survey.csat {
                    self.csat_sum += i64::from(csat);
                    self.csat_count += 1;
                }
            }
            Some(Payload::ConsentChanged(consent)) => {
                let mut slot = self.consent.remove(&consent.channel);
                set_latest(&mut slot, &stamp, consent.granted);
                self.consent
                    .extend(slot.map(|kept| (consent.channel.clone(), kept)));
                if consent.channel == "email" && !consent.granted {
                    self.email_consent_withdrawn
                        .insert(event.event_id.clone(), at);
                }
            }
            Some(
                Payload::EmailSent(mail)
                | Payload::EmailOpened(mail)
                | Payload::EmailClicked(mail)
                | Payload::EmailBounced(mail),
            ) if !mail.campaign_id.is_empty() => {
                let kind = match &event.payload {
                    Some(Payload::EmailSent(_)) => MailKind::Sent,
                    Some(Payload::EmailBounced(_)) => MailKind::Bounced,
                    Some(Payload::EmailOpened(_)) => MailKind::Opened,
                    _ => MailKind::Clicked,
                };
                self.mail.insert(
                    event.event_id.clone(),
                    MailFact {
                        at_ms: at,
                        kind,
                        campaign_id: mail.campaign_id.clone(),
                    },
                );
            }
            Some(Payload::PointsRedeemed(redeemed)) => {
                self.points_redeemed += redeemed.points;
                self.redemptions.insert(
                    event.event_id.clone(),
                    RedemptionFact {
                        at_ms: at,
                        points: redeemed.points,
                        reason: redeemed.reason.clone(),
                    },
                );
            }
            Some(
                Payload::IdentityLinked(_)
                | Payload::WebPageViewed(_)
                | Payload::EmailSent(_)
                | Payload::EmailOpened(_)
                | Payload::EmailClicked(_)
                | Payload::EmailBounced(_)
                | Payload::CallCompleted(_)
                | Payload::CustomTracked(_),
            ) => {}
            // A payload from a newer contract: counted above, otherwise ignored.
            None => {}
        }
    }

    /// Combines the facts of two profiles of one person. Commutative and
    /// associative, so any order of absorbing gives the same person.
    pub fn merge(&mut self, other: &ProfileState) {
        self.identifiers.extend(other.identifiers.iter().cloned());
        let (fields, theirs) = (&mut self.fields, &other.fields);
        keep_latest(&mut fields.name, &theirs.name);
        keep_latest(&mut fields.email, &theirs.email);
        keep_latest(&mut fields.phone, &theirs.phone);
        keep_latest(&mut fields.city, &theirs.city);
        for (key, value) in &theirs.attributes {
            let mut slot = fields.attributes.remove(key);
            keep_latest(&mut slot, &Some(value.clone()));
            fields
                .attributes
                .extend(slot.map(|kept| (key.clone(), kept)));
        }
        self.first_seen_ms = min_option(self.first_seen_ms, other.first_seen_ms);
        self.last_seen_ms = max_option(self.last_seen_ms, other.last_seen_ms);
        for (kind, count) in &other.event_counts {
            *self.event_counts.entry(kind.clone()).or_default() += count;
        }
        for (name, activity) in &other.channels {
            let mine = self.channels.entry(name.clone()).or_default();
            mine.count += activity.count;
            mine.last_at_ms = mine.last_at_ms.max(activity.last_at_ms);
        }
        for (id, facts) in &other.orders {
            let mine = self.orders.entry(id.clone()).or_default();
            keep_latest(&mut mine.placed, &facts.placed);
            mine.cancelled_at_ms = min_option(mine.cancelled_at_ms, facts.cancelled_at_ms);
            mine.refunded_minor += facts.refunded_minor;
        }
        for (id, facts) in &other.tickets {
            let mine = self.tickets.entry(id.clone()).or_default();
            keep_latest(&mut mine.opened, &facts.opened);
            mine.resolved_at_ms = max_option(mine.resolved_at_ms, facts.resolved_at_ms);
        }
        keep_latest(&mut self.last_nps, &other.last_nps);
        self.csat_sum += other.csat_sum;
        self.csat_count += other.csat_count;
        for (channel, value) in &other.consent {
            let mut slot = self.consent.remove(channel);
            keep_latest(&mut slot, &Some(value.clone()));
            self.consent
                .extend(slot.map(|kept| (channel.clone(), kept)));
        }
        self.points_redeemed += other.points_redeemed;
        self.absorbed.extend(other.absorbed.iter().cloned());
        self.conflicts.extend(other.conflicts.iter().cloned());
        // An event is folded into one profile only, so the keys never clash.
        for (id, refund) in &other.refunds {
            self.refunds.insert(id.clone(), refund.clone());
        }
        for (id, redemption) in &other.redemptions {
            self.redemptions.insert(id.clone(), redemption.clone());
        }
        for (pseudonym, token) in &other.display {
            keep_smallest(&mut self.display, pseudonym, token);
        }
        for (id, mail) in &other.mail {
            self.mail.insert(id.clone(), mail.clone());
        }
        for (id, at_ms) in &other.email_consent_withdrawn {
            self.email_consent_withdrawn.insert(id.clone(), *at_ms);
        }
    }

    /// Adds `later`, the state folded from records that all come after the
    /// records folded into `self`. Folding a record into a state equals
    /// appending the record folded into an empty state:
    /// `state.apply(record)` leaves `state` byte-identical to
    /// `state.append(&delta)` after `delta.apply(record)`, and appending is
    /// associative. So a store can keep a profile as its state plus the
    /// deltas of later records and combine them whenever it likes (RocksDB's
    /// merge operator) instead of reading and rewriting the whole state for
    /// every record. Unlike [`merge`](Self::merge) it is not commutative:
    /// the later `merged_into` wins, as it does in [`apply`](Self::apply).
    pub fn append(&mut self, later: &ProfileState) {
        self.merge(later);
        if later.merged_into.is_some() {
            self.merged_into.clone_from(&later.merged_into);
        }
    }

    /// Serialises the state. A leading byte names the format: format 2 is
    /// the format-1 state followed by the facts added since, format 3 is
    /// format 2 followed by the display tokens, and format 4 is format 3
    /// followed by the campaign facts, so state written by an
    /// older release still decodes (without what it did not hold, which
    /// only a rebuild can recover).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(128);
        self.encode_into(&mut bytes);
        bytes
    }

    /// Appends [`ProfileState::encode`]'s bytes to `bytes`.
    pub fn encode_into(&self, bytes: &mut Vec<u8>) {
        // One buffer, and the added facts borrowed: encoding every delta and
        // every merged profile made the copies and clones show in profiles.
        let mut buffer = std::mem::take(bytes);
        buffer.push(STATE_FORMAT);
        let buffer = postcard::to_extend(self, buffer).expect("profile state always serialises");
        let added = Format2FactsRef {
            refunds: &self.refunds,
            redemptions: &self.redemptions,
        };
        let buffer = postcard::to_extend(&added, buffer).expect("profile state always serialises");
        let buffer =
            postcard::to_extend(&self.display, buffer).expect("profile state always serialises");
        let campaigns = Format4FactsRef {
            mail: &self.mail,
            email_consent_withdrawn: &self.email_consent_withdrawn,
        };
        *bytes = postcard::to_extend(&campaigns, buffer).expect("profile state always serialises");
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, crate::Error> {
        match bytes.split_first() {
            Some((&1, rest)) => Ok(postcard::from_bytes(rest)?),
            Some((&2, rest)) => {
                let (mut state, rest): (Self, _) = postcard::take_from_bytes(rest)?;
                let added: Format2Facts = postcard::from_bytes(rest)?;
                state.refunds = added.refunds;
                state.redemptions = added.redemptions;
                Ok(state)
            }
            Some((&3, rest)) => {
                let (mut state, rest): (Self, _) = postcard::take_from_bytes(rest)?;
                let (added, rest): (Format2Facts, _) = postcard::take_from_bytes(rest)?;
                state.refunds = added.refunds;
                state.redemptions = added.redemptions;
                state.display = postcard::from_bytes(rest)?;
                Ok(state)
            }
            Some((&STATE_FORMAT, rest)) => {
                let (mut state, rest): (Self, _) = postcard::take_from_bytes(rest)?;
                let (added, rest): (Format2Facts, _) = postcard::take_from_bytes(rest)?;
                state.refunds = added.refunds;
                state.redemptions = added.redemptions;
                let (display, rest) = postcard::take_from_bytes(rest)?;
                state.display = display;
                let campaigns: Format4Facts = postcard::from_bytes(rest)?;
                state.mail = campaigns.mail;
                state.email_consent_withdrawn = campaigns.email_consent_withdrawn;
                Ok(state)
            }
            Some((version, _)) => Err(crate::Error::UnknownFormat(*version)),
            None => Err(crate::Error::UnknownFormat(0)),
        }
    }
}

const STATE_FORMAT: u8 = 4;

fn keep_smallest(display: &mut BTreeMap<String, String>, pseudonym: &str, token: &str) {
    match display.get_mut(pseudonym) {
        Some(kept) if kept.as_str() <= token => {}
        Some(kept) => token.clone_into(kept),
        None => {
            display.insert(pseudonym.to_owned(), token.to_owned());
        }
    }
}

/// The fields of a `CustomerRecord` (numbers from
/// `proto/rapport/events/v1/customer.proto`) that [`ProfileState::fold`]
/// never reads: the customer id (a stored delta sits under its profile's
/// key), the source position and the receive time.
pub static UNFOLDED: Pruning = Pruning {
    drop: &[1, 2, 3],
    within: &[(10, &RESOLVED_UNFOLDED)],
};

/// Of an `EventResolved`: only the event has fields the fold skips.
static RESOLVED_UNFOLDED: Pruning = Pruning {
    drop: &[],
    within: &[(1, &EVENT_UNFOLDED)],
};

/// Of an `Event` (`events.proto`): the receive time and the sender. The
/// identifiers it was sent with stay: the fold keeps their sealed tokens
/// for display, by pseudonym.
static EVENT_UNFOLDED: Pruning = Pruning {
    drop: &[4, 5],
    within: &[],
};

/// What a record wants stored outside its profile's state: the index
/// entries of the identifiers it links, its timeline line, the conflict it
/// records. The same whatever the state, so a fold can work them out
/// without the profile at hand.
pub fn effects(record: &CustomerRecord) -> Vec<Effect> {
    let mut effects = Vec::new();
    for_each_effect(record, |effect| {
        effects.push(match effect {
            EffectOf::Timeline(event) => Effect::Timeline(timeline_entry(event)),
            EffectOf::IndexIdentifier(identifier) => Effect::IndexIdentifier(identifier),
            EffectOf::ConflictRecorded(entry) => Effect::ConflictRecorded(entry),
        });
    });
    effects
}

/// An [`Effect`] with the timeline line still to be worked out from the
/// record's event: what a projector needs, without the allocations of an
/// owned [`TimelineEntry`] for every record.
#[derive(Debug)]
pub enum EffectOf<'a> {
    Timeline(&'a Event),
    IndexIdentifier(Identifier),
    ConflictRecorded(ConflictEntry),
}

/// Calls `visit` with each of `record`'s effects, in [`effects`]' order.
pub fn for_each_effect<'a>(record: &'a CustomerRecord, mut visit: impl FnMut(EffectOf<'a>)) {
    match &record.body {
        Some(customer_record::Body::Event(resolved)) => {
            for identifier in resolved.linked.iter().filter_map(Identifier::from_proto) {
                visit(EffectOf::IndexIdentifier(identifier));
            }
            if let Some(event) = &resolved.event {
                visit(EffectOf::Timeline(event));
            }
        }
        Some(customer_record::Body::Conflict(recorded)) => {
            if let Some(identifier) = recorded
                .identifier
                .as_ref()
                .and_then(Identifier::from_proto)
            {
                visit(EffectOf::ConflictRecorded(ConflictEntry {
                    received_at_ms: record.received_at_ms,
                    cause_event_id: recorded.cause_event_id.clone(),
                    conflict: Conflict {
                        identifier,
                        owner: recorded.owner.clone(),
                        claimant: recorded.claimant.clone(),
                    },
                }));
            }
        }
        Some(customer_record::Body::Merged(_) | customer_record::Body::MergedAway(_)) | None => {}
    }
}

/// The compact line the timeline shows for an event.
pub fn timeline_entry(event: &Event) -> TimelineEntry {
    let mut summary = String::new();
    write_summary(event, &mut summary);
    TimelineEntry {
        occurred_at_ms: event.occurred_at_ms,
        event_id: event.event_id.clone(),
        event_type: event.r#type.clone(),
        channel: event.channel.clone(),
        summary,
    }
}

/// Appends `event`'s timeline value (see [`TimelineEntry::encode_value_into`])
/// to `bytes`, with `scratch` as room for the summary line.
pub fn push_timeline_value(bytes: &mut Vec<u8>, event: &Event, scratch: &mut String) {
    scratch.clear();
    write_summary(event, scratch);
    TimelineLine {
        event_type: &event.r#type,
        channel: &event.channel,
        summary: scratch,
    }
    .push_to(bytes);
}

/// Writes the summary of `event` to `out`, which must be empty.
fn write_summary(event: &Event, out: &mut String) {
    use event::Payload;
    use std::fmt::Write as _;
    // Writing to a `String` cannot fail.
    macro_rules! put {
        ($($part:tt)*) => {
            out.write_fmt(format_args!($($part)*)).expect("a String takes any text")
        };
    }
    match &event.payload {
        Some(Payload::CustomerRegistered(profile)) => {
            put!("registered {}", profile.name);
            trim_end(out);
        }
        Some(Payload::CustomerUpdated(_)) => put!("profile updated"),
        Some(Payload::IdentityLinked(_)) => put!("identifiers linked"),
        Some(Payload::WebPageViewed(view)) => put!("viewed {}", view.url),
        Some(Payload::EmailSent(mail)) => put!("email {} sent", mail.message_id),
        Some(Payload::EmailOpened(mail)) => put!("email {} opened", mail.message_id),
        Some(Payload::EmailClicked(mail)) => {
            put!("email {} clicked {}", mail.message_id, mail.url);
            trim_end(out);
        }
        Some(Payload::EmailBounced(mail)) => {
            put!("email {} bounced", mail.message_id);
        }
        Some(Payload::CallCompleted(call)) => {
            put!(
                "{} call, {} s, {}",
                call.direction,
                call.duration_s,
                call.outcome
            );
            while out.ends_with(", ") {
                out.truncate(out.len() - 2);
            }
        }
        Some(Payload::OrderPlaced(order)) => put!(
            "order {} placed, {}",
            order.order_id,
            crate::money::format_minor(order.total_minor, &order.currency)
        ),
        Some(Payload::OrderCancelled(order)) => {
            put!("order {} cancelled", order.order_id);
        }
        Some(Payload::OrderRefunded(refund)) => put!(
            "order {} refunded {} minor units",
            refund.order_id,
            refund.amount_minor
        ),
        Some(Payload::TicketOpened(ticket)) => put!(
            "{} ticket {} opened: {}",
            ticket.category,
            ticket.ticket_id,
            ticket.subject
        ),
        Some(Payload::TicketResolved(ticket)) => {
            put!("ticket {} resolved", ticket.ticket_id);
        }
        Some(Payload::SurveyAnswered(survey)) => {
            put!("survey {}", survey.survey_id);
            if let Some(nps) = survey.nps {
                put!(", NPS {nps}");
            }
            if let Some(csat) = survey.csat {
                put!(", CSAT {csat}");
            }
        }
        Some(Payload::ConsentChanged(consent)) => put!(
            "{} consent {}",
            consent.channel,
            if consent.granted {
                "granted"
            } else {
                "withdrawn"
            }
        ),
        Some(Payload::PointsRedeemed(redeemed)) => {
            put!("redeemed {} points", redeemed.points);
        }
        Some(Payload::CustomTracked(tracked)) => {
            // The name, then as many properties as fit a timeline line.
            let properties: Vec<String> = tracked
                .properties
                .iter()
                .take(TRACKED_PROPERTIES_SHOWN)
                .map(|(key, value)| format!("{key}: {value}"))
                .collect();
            if properties.is_empty() {
                put!("{}", tracked.name);
            } else {
                put!("{} ({})", tracked.name, properties.join(", "));
            }
        }
        None => {}
    }
}

/// Properties of a `custom.tracked` event shown on its timeline line.
const TRACKED_PROPERTIES_SHOWN: usize = 5;

/// Drops trailing whitespace from `out`.
fn trim_end(out: &mut String) {
    let kept = out.trim_end().len();
    out.truncate(kept);
}

/// The JSON document the query API answers for a customer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CustomerDocument {
    pub customer_id: String,
    pub known: bool,
    pub identifiers: BTreeMap<String, Vec<String>>,
    pub profile: BTreeMap<String, String>,
    pub attributes: BTreeMap<String, String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub event_counts: BTreeMap<String, u64>,
    pub channels: BTreeMap<String, ChannelDocument>,
    pub orders: OrdersDocument,
    pub tickets: TicketsDocument,
    pub last_nps: Option<i32>,
    pub average_csat: Option<f64>,
    pub csat_answers: u64,
    pub consent: BTreeMap<String, bool>,
    pub points_redeemed: i64,
    pub merged_ids: Vec<String>,
    pub conflicts: Vec<ConflictDocument>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChannelDocument {
    pub count: u64,
    pub last_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OrdersDocument {
    /// Orders placed and not cancelled.
    pub count: u64,
    pub cancelled: u64,
    /// Placed minus refunded, per currency, in minor units; cancelled orders excluded.
    pub net_spend_minor: BTreeMap<String, i64>,
    pub first_order_at: Option<String>,
    pub last_order_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TicketsDocument {
    pub open: u64,
    pub open_complaints: u64,
    pub total: u64,
    pub complaints: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConflictDocument {
    pub identifier: String,
    pub owner: String,
}

impl CustomerDocument {
    /// Renders the merged state of a person whose root profile is `customer_id`.
    pub fn render(customer_id: &str, state: &ProfileState, merged_ids: Vec<String>) -> Self {
        let mut identifiers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let shown = |value: &str| {
            state
                .display
                .get(value)
                .map_or(value, String::as_str)
                .to_owned()
        };
        for identifier in &state.identifiers {
            identifiers
                .entry(identifier.kind.as_str().to_owned())
                .or_default()
                .push(shown(&identifier.value));
        }
        let fields = &state.fields;
        let profile = [
            ("name", &fields.name),
            ("email", &fields.email),
            ("phone", &fields.phone),
            ("city", &fields.city),
        ]
        .into_iter()
        .filter_map(|(name, slot)| {
            slot.as_ref()
                .map(|stamped| (name.to_owned(), stamped.value.clone()))
        })
        .collect();

        let mut orders = OrdersDocument {
            count: 0,
            cancelled: 0,
            net_spend_minor: BTreeMap::new(),
            first_order_at: None,
            last_order_at: None,
        };
        let (mut first_order, mut last_order) = (None, None);
        for facts in state.orders.values() {
            let Some(placed) = &facts.placed else {
                continue;
            };
            if facts.cancelled_at_ms.is_some() {
                orders.cancelled += 1;
                continue;
            }
            orders.count += 1;
            *orders
                .net_spend_minor
                .entry(placed.value.currency.clone())
                .or_default() += placed.value.total_minor - facts.refunded_minor;
            first_order = min_option(first_order, Some(placed.value.at_ms));
            last_order = max_option(last_order, Some(placed.value.at_ms));
        }
        orders.first_order_at = first_order.map(format_rfc3339);
        orders.last_order_at = last_order.map(format_rfc3339);

        let mut tickets = TicketsDocument {
            open: 0,
            open_complaints: 0,
            total: 0,
            complaints: 0,
        };
        for facts in state.tickets.values() {
            let Some(opened) = &facts.opened else {
                continue;
            };
            let complaint = opened.value.category == "complaint";
            tickets.total += 1;
            tickets.complaints += u64::from(complaint);
            if facts.resolved_at_ms.is_none() {
                tickets.open += 1;
                tickets.open_complaints += u64::from(complaint);
            }
        }

        CustomerDocument {
            customer_id: shown(customer_id),
            known: state
                .identifiers
                .iter()
                .any(|identifier| identifier.kind == crate::identity::IdentifierKind::CustomerId),
            identifiers,
            profile,
            attributes: fields
                .attributes
                .iter()
                .map(|(key, stamped)| (key.clone(), stamped.value.clone()))
                .collect(),
            first_seen: state.first_seen_ms.map(format_rfc3339),
            last_seen: state.last_seen_ms.map(format_rfc3339),
            event_counts: state.event_counts.clone(),
            channels: state
                .channels
                .iter()
                .map(|(name, activity)| {
                    (
                        name.clone(),
                        ChannelDocument {
                            count: activity.count,
                            last_at: format_rfc3339(activity.last_at_ms),
                        },
                    )
                })
                .collect(),
            orders,
            tickets,
            last_nps: state.last_nps.as_ref().map(|stamped| stamped.value),
            average_csat: (state.csat_count > 0)
                .then(|| state.csat_sum as f64 / state.csat_count as f64),
            csat_answers: state.csat_count,
            consent: state
                .consent
                .iter()
                .map(|(channel, stamped)| (channel.clone(), stamped.value))
                .collect(),
            points_redeemed: state.points_redeemed,
            merged_ids,
            conflicts: state
                .conflicts
                .iter()
                .map(|(identifier, owner)| ConflictDocument {
                    identifier: format!(
                        "{}:{}",
                        identifier.kind.as_str(),
                        shown(&identifier.value)
                    ),
                    owner: shown(owner),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rapport_proto::v1::{
        CustomerIdentifiers, EventResolved, OrderCancelled, OrderPlaced, OrderRefunded,
        SourcePosition, SurveyAnswered, TicketOpened, TicketResolved,
    };

    fn record(event_id: &str, at: i64, payload: event::Payload, kind: &str) -> CustomerRecord {
        CustomerRecord {
            customer_id: "c-1".into(),
            source: Some(SourcePosition {
                raw_partition: 1,
                raw_offset: at,
                index: 0,
            }),
            received_at_ms: at + 1,
            body: Some(customer_record::Body::Event(EventResolved {
                event: Some(Event {
                    event_id: event_id.into(),
                    r#type: kind.into(),
                    occurred_at_ms: at,
                    received_at_ms: at + 1,
                    source: "ingest@test".into(),
                    channel: "web".into(),
                    customer: Some(CustomerIdentifiers {
                        customer_id: "c-1".into(),
                        ..Default::default()
                    }),
                    payload: Some(payload),
                }),
                linked: vec![],
            })),
        }
    }

    fn placed(id: &str, at: i64, order: &str, total: i64) -> CustomerRecord {
        let payload = event::Payload::OrderPlaced(OrderPlaced {
            order_id: order.into(),
            total_minor: total,
            currency: "CNY".into(),
            items: vec![],
        });
        record(id, at, payload, "order.placed")
    }

    fn refund(id: &str, at: i64, order: &str, amount_minor: i64) -> CustomerRecord {
        let payload = event::Payload::OrderRefunded(OrderRefunded {
            order_id: order.into(),
            amount_minor,
        });
        record(id, at, payload, "order.refunded")
    }

    fn document(state: &ProfileState) -> CustomerDocument {
        CustomerDocument::render("c-1", state, vec![])
    }

    #[test]
    fn orders_count_net_of_cancellations_and_refunds() {
        let mut state = ProfileState::default();
        state.apply(&placed("e1", 1_000, "o-1", 12_900));
        state.apply(&placed("e2", 2_000, "o-2", 5_000));
        state.apply(&placed("e3", 3_000, "o-3", 700));
        state.apply(&record(
            "e4",
            4_000,
            event::Payload::OrderCancelled(OrderCancelled {
                order_id: "o-3".into(),
            }),
            "order.cancelled",
        ));
        state.apply(&record(
            "e5",
            5_000,
            event::Payload::OrderRefunded(OrderRefunded {
                order_id: "o-1".into(),
                amount_minor: 900,
            }),
            "order.refunded",
        ));
        let orders = document(&state).orders;
        assert_eq!(orders.count, 2);
        assert_eq!(orders.cancelled, 1);
        assert_eq!(
            orders.net_spend_minor.get("CNY"),
            Some(&(12_900 - 900 + 5_000))
        );
        assert_eq!(
            orders.first_order_at.as_deref(),
            Some("1970-01-01T00:00:01.000Z")
        );
        assert_eq!(
            orders.last_order_at.as_deref(),
            Some("1970-01-01T00:00:02.000Z")
        );
    }

    #[test]
    fn custom_events_are_counted_and_shown_with_their_properties() {
        // Given an event type no projection knows by name
        let mut state = ProfileState::default();
        let tracked = |id: &str, properties: &[(&str, &str)]| {
            record(
                id,
                1,
                event::Payload::CustomTracked(rapport_proto::v1::CustomTracked {
                    name: "Wishlist Added".into(),
                    properties: properties
                        .iter()
                        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                        .collect(),
                }),
                "custom.tracked",
            )
        };
        let with = tracked("w1", &[("sku", "tea-1"), ("list", "gifts")]);
        // When it is folded
        state.apply(&with);
        state.apply(&tracked("w2", &[]));
        // Then it counts like any event, and its line names it
        assert_eq!(document(&state).event_counts["custom.tracked"], 2);
        let event = |record: &CustomerRecord| match &record.body {
            Some(customer_record::Body::Event(resolved)) => resolved.event.clone().unwrap(),
            _ => unreachable!("an event record"),
        };
        assert_eq!(
            timeline_entry(&event(&with)).summary,
            "Wishlist Added (list: gifts, sku: tea-1)"
        );
        assert_eq!(
            timeline_entry(&event(&tracked("w3", &[]))).summary,
            "Wishlist Added"
        );
    }

    #[test]
    fn tickets_and_surveys() {
        let mut state = ProfileState::default();
        let open = |id: &str, ticket: &str, category: &str| {
            record(
                id,
                1,
                event::Payload::TicketOpened(TicketOpened {
                    ticket_id: ticket.into(),
                    category: category.into(),
                    subject: "s".into(),
                }),
                "ticket.opened",
            )
        };
        state.apply(&open("t1", "k-1", "complaint"));
        state.apply(&open("t2", "k-2", "inquiry"));
        state.apply(&record(
            "t3",
            2,
            event::Payload::TicketResolved(TicketResolved {
                ticket_id: "k-2".into(),
            }),
            "ticket.resolved",
        ));
        let survey = |id: &str, at: i64, nps: Option<i32>, csat: Option<i32>| {
            record(
                id,
                at,
                event::Payload::SurveyAnswered(SurveyAnswered {
                    survey_id: "s".into(),
                    nps,
                    csat,
                    comment: String::new(),
                }),
                "survey.answered",
            )
        };
        state.apply(&survey("s2", 20, Some(3), Some(2)));
        state.apply(&survey("s1", 10, Some(9), Some(5)));
        let view = document(&state);
        assert_eq!(
            (
                view.tickets.open,
                view.tickets.open_complaints,
                view.tickets.total
            ),
            (1, 1, 2)
        );
        // The later answer wins even though it arrived first.
        assert_eq!(view.last_nps, Some(3));
        assert_eq!(view.average_csat, Some(3.5));
    }

    #[test]
    fn a_merged_person_sees_facts_from_both_profiles() {
        let mut guest = ProfileState::default();
        guest.apply(&placed("e1", 1_000, "o-1", 1_000));
        let mut member = ProfileState::default();
        member.apply(&refund("e2", 2_000, "o-1", 400));
        member.merge(&guest);
        assert_eq!(
            document(&member).orders.net_spend_minor.get("CNY"),
            Some(&600)
        );
    }

    #[test]
    fn state_round_trips_through_its_encoding() {
        let mut state = ProfileState::default();
        state.apply(&placed("e1", 1_000, "o-1", 1_000));
        state.apply(&refund("e2", 2_000, "o-1", 400));
        state.apply(&record(
            "e3",
            3_000,
            event::Payload::PointsRedeemed(rapport_proto::v1::PointsRedeemed {
                points: 7,
                reason: "voucher".into(),
            }),
            "points.redeemed",
        ));
        assert_eq!(state.refunds["e2"].at_ms, 2_000);
        assert_eq!(state.redemptions["e3"].points, 7);
        assert_eq!(ProfileState::decode(&state.encode()).unwrap(), state);
        assert!(ProfileState::decode(&[9, 1, 2]).is_err());
        // Format 2, as releases before display tokens wrote it, decodes
        // without them
        let mut format_two = vec![2];
        format_two.extend(postcard::to_stdvec(&state).unwrap());
        format_two.extend(
            postcard::to_stdvec(&Format2Facts {
                refunds: state.refunds.clone(),
                redemptions: state.redemptions.clone(),
            })
            .unwrap(),
        );
        state
            .display
            .insert("p_1".to_owned(), "sealed:x".to_owned());
        let mut without_display = state.clone();
        without_display.display.clear();
        assert_eq!(ProfileState::decode(&format_two).unwrap(), without_display);
        // Format 3 is format 2 followed by the display tokens
        let mut format_three = vec![3];
        format_three.extend_from_slice(&format_two[1..]);
        format_three.extend(postcard::to_stdvec(&state.display).unwrap());
        assert_eq!(ProfileState::decode(&format_three).unwrap(), state);
        // Format 4 is format 3 followed by the campaign facts
        let mail = |id: &str, at_ms: i64, payload| record(id, at_ms, payload, "email.opened");
        let message = |campaign: &str| rapport_proto::v1::EmailMessage {
            message_id: "m-1".into(),
            campaign_id: campaign.into(),
            url: String::new(),
        };
        state.apply(&mail(
            "e4",
            4_000,
            event::Payload::EmailOpened(message("spring")),
        ));
        state.apply(&mail("e5", 5_000, event::Payload::EmailSent(message(""))));
        state.apply(&record(
            "e6",
            6_000,
            event::Payload::ConsentChanged(rapport_proto::v1::ConsentChanged {
                channel: "email".into(),
                granted: false,
            }),
            "consent.changed",
        ));
        assert_eq!(
            state.mail["e4"],
            MailFact {
                at_ms: 4_000,
                kind: MailKind::Opened,
                campaign_id: "spring".into()
            }
        );
        assert_eq!(state.mail.len(), 1, "mail outside a campaign is not kept");
        assert_eq!(state.email_consent_withdrawn["e6"], 6_000);
        let mut without_campaigns = state.clone();
        without_campaigns.mail.clear();
        without_campaigns.email_consent_withdrawn.clear();
        let mut format_four = vec![4];
        format_four.extend_from_slice(&without_campaigns.encode()[1..]);
        format_four.truncate(format_four.len() - 2);
        format_four.extend(
            postcard::to_stdvec(&Format4Facts {
                mail: state.mail.clone(),
                email_consent_withdrawn: state.email_consent_withdrawn.clone(),
            })
            .unwrap(),
        );
        assert_eq!(state.encode(), format_four);
        assert_eq!(ProfileState::decode(&format_four).unwrap(), state);
    }

    #[test]
    fn format_one_state_still_decodes_without_the_added_facts() {
        // Given state as release 1 wrote it: format byte 1, then the fields
        // format 2 still starts with
        let mut state = ProfileState::default();
        state.apply(&placed("e1", 1_000, "o-1", 1_000));
        state.apply(&refund("e2", 2_000, "o-1", 400));
        let mut format_one = vec![1];
        format_one.extend(postcard::to_stdvec(&state).unwrap());
        // When it is read today
        let decoded = ProfileState::decode(&format_one).unwrap();
        // Then every format-1 fact is there and the refund time is not
        assert_eq!(decoded.orders, state.orders);
        assert!(decoded.refunds.is_empty());
        assert_ne!(decoded, state);
    }

    #[test]
    fn timeline_values_leave_out_what_their_key_holds_and_older_ones_still_read() {
        let entry = timeline_entry(
            placed("e-1", 1_790_842_800_000, "o-7", 1020)
                .body
                .and_then(|body| match body {
                    customer_record::Body::Event(resolved) => resolved.event,
                    _ => None,
                })
                .as_ref()
                .expect("an event"),
        );
        let mut value = Vec::new();
        entry.encode_value_into(&mut value);
        let older = postcard::to_stdvec(&entry).unwrap();
        assert_eq!(
            value.len() + 6 + 4,
            older.len(),
            "time (6 bytes), id (1 + 3)"
        );
        for stored in [&value, &older] {
            let read =
                TimelineEntry::decode_value(entry.occurred_at_ms, entry.event_id.clone(), stored);
            assert_eq!(read.unwrap(), entry);
        }
        assert!(TimelineEntry::decode_value(0, "e-1".into(), &value[..3]).is_err());
    }

    #[test]
    fn timeline_lines_read_as_before_and_drop_only_the_padding_they_always_dropped() {
        use rapport_proto::v1::{CallCompleted, CustomerProfile, EmailMessage, PageViewed};
        let line = |payload: event::Payload| {
            let record = record("e-1", 0, payload, "any");
            let Some(customer_record::Body::Event(resolved)) = record.body else {
                unreachable!("an event record")
            };
            timeline_entry(&resolved.event.expect("an event")).summary
        };
        let call = |outcome: &str| {
            event::Payload::CallCompleted(CallCompleted {
                direction: "inbound".into(),
                duration_s: 30,
                outcome: outcome.into(),
                ..Default::default()
            })
        };
        let registered = |name: &str| {
            event::Payload::CustomerRegistered(CustomerProfile {
                name: name.into(),
                ..Default::default()
            })
        };
        assert_eq!(line(registered("Ann")), "registered Ann");
        assert_eq!(line(registered("")), "registered");
        assert_eq!(line(call("answered")), "inbound call, 30 s, answered");
        assert_eq!(line(call("")), "inbound call, 30 s");
        assert_eq!(
            line(event::Payload::EmailClicked(EmailMessage {
                message_id: "m-1".into(),
                ..Default::default()
            })),
            "email m-1 clicked"
        );
        // Only those three ever trimmed: an empty URL leaves its space.
        assert_eq!(
            line(event::Payload::WebPageViewed(PageViewed::default())),
            "viewed "
        );
        assert_eq!(
            line(event::Payload::TicketOpened(TicketOpened {
                ticket_id: "t-1".into(),
                category: "complaint".into(),
                subject: String::new(),
            })),
            "complaint ticket t-1 opened: "
        );
        assert_eq!(line(placed_payload(-1050)), "order o-1 placed, -10.50 CNY");
        // Yen have no minor unit, dinars three.
        let placed_in = |currency: &str| {
            event::Payload::OrderPlaced(OrderPlaced {
                order_id: "o-2".into(),
                total_minor: 12_900,
                currency: currency.into(),
                items: vec![],
            })
        };
        assert_eq!(line(placed_in("JPY")), "order o-2 placed, 12900 JPY");
        assert_eq!(line(placed_in("BHD")), "order o-2 placed, 12.900 BHD");
        assert_eq!(
            line(event::Payload::SurveyAnswered(SurveyAnswered {
                survey_id: "s-1".into(),
                nps: Some(9),
                csat: None,
                comment: String::new(),
            })),
            "survey s-1, NPS 9"
        );
    }

    fn placed_payload(total_minor: i64) -> event::Payload {
        event::Payload::OrderPlaced(OrderPlaced {
            order_id: "o-1".into(),
            total_minor,
            currency: "CNY".into(),
            items: vec![],
        })
    }

    fn arbitrary_record() -> impl Strategy<Value = CustomerRecord> {
        (0u8..6, 0i64..50, 0u8..4, 1i64..10_000).prop_map(|(kind, at, key, amount)| {
            let id = format!("e{kind}-{at}-{key}-{amount}");
            let order = format!("o-{key}");
            match kind {
                0 => placed(&id, at, &order, amount),
                1 => record(
                    &id,
                    at,
                    event::Payload::OrderCancelled(OrderCancelled { order_id: order }),
                    "order.cancelled",
                ),
                2 => record(
                    &id,
                    at,
                    event::Payload::OrderRefunded(OrderRefunded {
                        order_id: order,
                        amount_minor: amount,
                    }),
                    "order.refunded",
                ),
                3 => record(
                    &id,
                    at,
                    event::Payload::SurveyAnswered(SurveyAnswered {
                        survey_id: "s".into(),
                        nps: Some((amount % 11) as i32),
                        csat: Some(1 + (amount % 5) as i32),
                        comment: String::new(),
                    }),
                    "survey.answered",
                ),
                4 => record(
                    &id,
                    at,
                    event::Payload::TicketOpened(TicketOpened {
                        ticket_id: order,
                        category: "complaint".into(),
                        subject: String::new(),
                    }),
                    "ticket.opened",
                ),
                _ => record(
                    &id,
                    at,
                    event::Payload::TicketResolved(TicketResolved { ticket_id: order }),
                    "ticket.resolved",
                ),
            }
        })
    }

    /// Any record the fold knows, of every body and payload kind, with
    /// times and ids drawn from small ranges so that they collide.
    fn any_kind_of_record() -> impl Strategy<Value = CustomerRecord> {
        use rapport_proto::v1::{
            ConsentChanged, CustomerProfile, CustomersMerged, Identifier as ProtoIdentifier,
            IdentityConflictRecorded, PointsRedeemed, ProfileMergedAway,
        };
        let identifier = |key: u8| ProtoIdentifier {
            kind: if key.is_multiple_of(2) {
                "email"
            } else {
                "phone"
            }
            .into(),
            value: format!("v{key}"),
        };
        (arbitrary_record(), 0u8..10, 0i64..50, 0u8..4).prop_map(move |(simple, kind, at, key)| {
            let id = format!("x{kind}-{at}-{key}");
            let profile = |name: &str| CustomerProfile {
                name: name.into(),
                city: if key.is_multiple_of(2) {
                    String::new()
                } else {
                    format!("city-{key}")
                },
                attributes: [(format!("a{key}"), format!("{at}"))].into(),
                ..Default::default()
            };
            let mut built = match kind {
                0 => record(
                    &id,
                    at,
                    event::Payload::CustomerRegistered(profile("n")),
                    "customer.registered",
                ),
                1 => record(
                    &id,
                    at,
                    event::Payload::CustomerUpdated(profile("m")),
                    "customer.updated",
                ),
                2 => record(
                    &id,
                    at,
                    event::Payload::ConsentChanged(ConsentChanged {
                        channel: format!("c{}", key % 2),
                        granted: at % 2 == 0,
                    }),
                    "consent.changed",
                ),
                3 => record(
                    &id,
                    at,
                    event::Payload::PointsRedeemed(PointsRedeemed {
                        points: at,
                        reason: "r".into(),
                    }),
                    "points.redeemed",
                ),
                4 => CustomerRecord {
                    body: Some(customer_record::Body::Merged(CustomersMerged {
                        absorbed: vec![format!("p-{key}")],
                        cause_event_id: id.clone(),
                    })),
                    ..record(
                        &id,
                        at,
                        event::Payload::IdentityLinked(Default::default()),
                        "identity.linked",
                    )
                },
                5 => CustomerRecord {
                    body: Some(customer_record::Body::MergedAway(ProfileMergedAway {
                        into: format!("p-{key}"),
                        cause_event_id: id.clone(),
                    })),
                    ..record(
                        &id,
                        at,
                        event::Payload::IdentityLinked(Default::default()),
                        "identity.linked",
                    )
                },
                6 => CustomerRecord {
                    body: Some(customer_record::Body::Conflict(IdentityConflictRecorded {
                        identifier: Some(identifier(key)),
                        owner: format!("p-{}", key / 2),
                        claimant: "c-9".into(),
                        cause_event_id: id.clone(),
                    })),
                    ..record(
                        &id,
                        at,
                        event::Payload::IdentityLinked(Default::default()),
                        "identity.linked",
                    )
                },
                _ => simple,
            };
            if let Some(customer_record::Body::Event(resolved)) = &mut built.body
                && kind == 7
            {
                resolved.linked.push(identifier(key));
                // Sealed tokens for display, differing from event to event
                if let Some(customer) = resolved
                    .event
                    .as_mut()
                    .and_then(|event| event.customer.as_mut())
                {
                    customer.email = format!("p_{key}");
                    customer.email_sealed = format!("sealed:{id}");
                }
            }
            built
        })
    }

    proptest! {
        #![proptest_config(rapport_fuzzing::config())]

        /// Whatever bytes a customer-topic record holds, decoding, pruning
        /// and folding it refuse or read it; none panics, and a refused
        /// prune writes nothing.
        #[test]
        fn fuzz_no_record_bytes_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = b"kept".to_vec();
            if rapport_proto::wire::prune_into(&bytes, &UNFOLDED, &mut out).is_err() {
                prop_assert_eq!(&out, b"kept");
            }
            if let Ok(record) = <CustomerRecord as rapport_proto::Message>::decode(bytes.as_slice()) {
                for_each_effect(&record, |_| {});
                let mut state = ProfileState::default();
                state.apply(&record);
            }
            let _ = ProfileState::decode(&bytes);
        }
    }

    proptest! {
        /// Folding records one by one into a state equals folding runs of
        /// them into empty states and appending those, however the runs are
        /// cut and grouped: what lets the store append deltas.
        #[test]
        fn appending_folded_runs_equals_folding_everything(
            records in proptest::collection::vec(any_kind_of_record(), 0..40),
            cuts in proptest::collection::vec(any::<bool>(), 40),
            right_first in any::<bool>(),
        ) {
            let mut whole = ProfileState::default();
            let mut runs = vec![ProfileState::default()];
            for (index, record) in records.iter().enumerate() {
                whole.apply(record);
                if cuts[index] {
                    runs.push(ProfileState::default());
                }
                runs.last_mut().expect("one run at least").apply(record);
            }
            // Left to right, or each run appended to the ones after it first.
            let appended = if right_first {
                runs.into_iter()
                    .rev()
                    .reduce(|later, mut earlier| {
                        earlier.append(&later);
                        earlier
                    })
                    .expect("one run at least")
            } else {
                runs.into_iter()
                    .reduce(|mut earlier, later| {
                        earlier.append(&later);
                        earlier
                    })
                    .expect("one run at least")
            };
            prop_assert_eq!(appended.encode(), whole.encode());
        }

        /// A record without the fields [`UNFOLDED`] names folds exactly as
        /// the whole record, and those fields are all it lacks.
        #[test]
        fn the_fold_never_reads_what_pruning_leaves_out(
            records in proptest::collection::vec(any_kind_of_record(), 0..20),
        ) {
            use rapport_proto::Message as _;
            let (mut whole, mut pruned) = (ProfileState::default(), ProfileState::default());
            for record in &records {
                let mut bytes = Vec::new();
                rapport_proto::wire::prune_into(&record.encode_to_vec(), &UNFOLDED, &mut bytes)
                    .expect("a record prunes");
                let read = CustomerRecord::decode(&bytes[..]).expect("a pruned record decodes");
                let mut cleared = record.clone();
                cleared.customer_id.clear();
                cleared.source = None;
                cleared.received_at_ms = 0;
                if let Some(customer_record::Body::Event(resolved)) = &mut cleared.body
                    && let Some(event) = &mut resolved.event
                {
                    event.received_at_ms = 0;
                    event.source.clear();
                }
                prop_assert_eq!(&read, &cleared);
                prop_assert!(bytes.len() < record.encoded_len());
                whole.fold(record);
                pruned.fold(&read);
            }
            prop_assert_eq!(pruned.encode(), whole.encode());
        }

        /// What a projector stores for a record's timeline line, worked out
        /// from the borrowed event, is the entry's own stored value.
        #[test]
        fn a_timeline_value_from_the_event_equals_the_entrys(
            records in proptest::collection::vec(any_kind_of_record(), 1..20),
        ) {
            let mut scratch = "left over".to_owned();
            for record in &records {
                let mut borrowed = Vec::new();
                let mut owned = Vec::new();
                for_each_effect(record, |effect| {
                    if let EffectOf::Timeline(event) = effect {
                        push_timeline_value(&mut borrowed, event, &mut scratch);
                        timeline_entry(event).encode_value_into(&mut owned);
                    }
                });
                prop_assert_eq!(&borrowed, &owned);
            }
        }

        /// Splitting a person's records over two profiles and merging them
        /// gives the same person as folding everything into one profile.
        #[test]
        fn merge_of_a_split_equals_the_whole(records in proptest::collection::vec(arbitrary_record(), 0..40), split in proptest::collection::vec(any::<bool>(), 40)) {
            let mut whole = ProfileState::default();
            let (mut left, mut right) = (ProfileState::default(), ProfileState::default());
            for (index, record) in records.iter().enumerate() {
                whole.apply(record);
                if split[index] { left.apply(record); } else { right.apply(record); }
            }
            let mut left_then_right = left.clone();
            left_then_right.merge(&right);
            let mut right_then_left = right.clone();
            right_then_left.merge(&left);
            prop_assert_eq!(document(&left_then_right), document(&whole));
            prop_assert_eq!(left_then_right.encode(), right_then_left.encode());
        }
    }
}
