//! Identity resolution: which profile an event belongs to, and which profiles
//! it proves to be one person.
//!
//! The graph lives in the identity service's store; this module only reads it
//! through [`GraphView`] and answers with a [`Resolution`] that says, as data,
//! what to write and what to publish. Rules (also in docs/identity.md):
//!
//! * the storefront's `customer_id` is canonical and never merged into anything;
//! * an identifier seen for the first time joins the profile the event
//!   resolves to, or starts a prospect whose id derives from the identifier;
//! * when one event ties several profiles, prospects merge into the known
//!   customer, or into the oldest prospect when none is known;
//! * two known customers are never merged: the identifier stays with its first
//!   owner and the clash is recorded as a conflict.

use serde::{Deserialize, Serialize};

/// Kinds of identifier, strongest first: the order decides which identifier
/// keys an event and names a prospect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IdentifierKind {
    CustomerId,
    Email,
    Phone,
    AnonymousId,
}

impl IdentifierKind {
    pub const ALL: [IdentifierKind; 4] = [
        Self::CustomerId,
        Self::Email,
        Self::Phone,
        Self::AnonymousId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CustomerId => "customer_id",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::AnonymousId => "anonymous_id",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// A stable one-byte tag for storage keys.
    pub fn tag(self) -> u8 {
        match self {
            Self::CustomerId => b'c',
            Self::Email => b'e',
            Self::Phone => b'p',
            Self::AnonymousId => b'a',
        }
    }

    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.tag() == tag)
    }
}

/// A normalised identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identifier {
    pub kind: IdentifierKind,
    pub value: String,
}

impl Identifier {
    pub fn new(kind: IdentifierKind, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }

    /// Normalises a raw value of the given kind; `None` when nothing is left.
    pub fn normalised(kind: IdentifierKind, raw: &str) -> Option<Self> {
        // A pseudonym (`p_` and 32 lowercase hex digits, as ingest makes
        // them of normalised values) is compared as it is.
        if is_pseudonym(raw) {
            return Some(Self {
                kind,
                value: raw.to_owned(),
            });
        }
        let value = match kind {
            IdentifierKind::Email => normalise_email(raw),
            IdentifierKind::Phone => normalise_phone(raw),
            IdentifierKind::CustomerId | IdentifierKind::AnonymousId => raw.trim().to_owned(),
        };
        (!value.is_empty()).then_some(Self { kind, value })
    }

    pub fn to_proto(&self) -> rapport_proto::v1::Identifier {
        rapport_proto::v1::Identifier {
            kind: self.kind.as_str().to_owned(),
            value: self.value.clone(),
        }
    }

    pub fn from_proto(proto: &rapport_proto::v1::Identifier) -> Option<Self> {
        Some(Self {
            kind: IdentifierKind::parse(&proto.kind)?,
            value: proto.value.clone(),
        })
    }
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}:{}", self.kind.as_str(), self.value)
    }
}

/// Whether `text` is a pseudonym: `p_` and 32 lowercase hex digits,
/// perhaps with a [generation](generation_of) after them.
pub fn is_pseudonym(text: &str) -> bool {
    let (base, _) = generation_of(text);
    base.strip_prefix("p_").is_some_and(|digits| {
        digits.len() == 32
            && digits
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// What separates a pseudonym from its generation.
const GENERATION_MARK: char = '~';

/// An identifier value and its generation: `p_…~2` is generation 2 of the
/// pseudonym `p_…`. Identity gives an erased identifier that comes back a
/// new generation, so it starts a new, separate person instead of linking
/// to the erased one (see docs/privacy.md). Generation 0 has no mark.
pub fn generation_of(value: &str) -> (&str, u32) {
    if let Some((base, digits)) = value.rsplit_once(GENERATION_MARK)
        && !digits.is_empty()
        && !digits.starts_with('0')
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && let Ok(generation) = digits.parse()
    {
        return (base, generation);
    }
    (value, 0)
}

/// `base` in generation `generation`.
pub fn in_generation(base: &str, generation: u32) -> String {
    match generation {
        0 => base.to_owned(),
        _ => format!("{base}{GENERATION_MARK}{generation}"),
    }
}

/// The newest generation of `identifier` that `known` knows, probing
/// generations 1, 2, … while they are known; `identifier` itself (whatever
/// its generation) when none is. Generations are dense: identity makes
/// generation n + 1 only by erasing a person who held generation n.
pub fn newest_generation(
    identifier: &Identifier,
    mut known: impl FnMut(&Identifier) -> bool,
) -> Identifier {
    let (base, start) = generation_of(&identifier.value);
    let mut newest = identifier.clone();
    for generation in start.saturating_add(1)..u32::MAX {
        let next = Identifier::new(identifier.kind, in_generation(base, generation));
        if !known(&next) {
            break;
        }
        newest = next;
    }
    newest
}

/// Emails are trimmed and lower-cased.
pub fn normalise_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// Phones keep a leading `+` and their digits, nothing else.
pub fn normalise_phone(raw: &str) -> String {
    let trimmed = raw.trim();
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return String::new();
    }
    if trimmed.starts_with('+') {
        format!("+{digits}")
    } else {
        digits
    }
}

/// The normalised identifiers of an envelope, strongest first, without duplicates.
pub fn identifiers_of(customer: &rapport_proto::v1::CustomerIdentifiers) -> Vec<Identifier> {
    let raw = [
        (IdentifierKind::CustomerId, customer.customer_id.as_str()),
        (IdentifierKind::Email, customer.email.as_str()),
        (IdentifierKind::Phone, customer.phone.as_str()),
        (IdentifierKind::AnonymousId, customer.anonymous_id.as_str()),
    ];
    raw.into_iter()
        .filter_map(|(kind, value)| Identifier::normalised(kind, value))
        .collect()
}

/// The id a prospect gets when `identifier` is the first thing seen of it:
/// a UUIDv5 of the identifier, so a replay yields the same id.
pub fn prospect_id(identifier: &Identifier) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5f0c_7e7a_51d4_4c8e_9a3b_8d2e_1f6a_c0de);
    let name = format!("{}:{}", identifier.kind.as_str(), identifier.value);
    format!(
        "prospect-{}",
        uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).simple()
    )
}

/// Where an event sits in the order the identity service reads the raw topic.
/// Earlier positions are older; prospects are ranked by the position of the
/// event that created them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadPosition {
    pub received_at_ms: i64,
    pub raw_partition: i32,
    pub raw_offset: i64,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub id: String,
    /// Holds a storefront `customer_id`.
    pub known: bool,
    pub born: ReadPosition,
    /// Set once the profile has been absorbed; it never changes again.
    pub merged_into: Option<String>,
}

/// Read access to the identifier graph.
pub trait GraphView {
    /// The profile that first received `identifier`, if any.
    fn owner(&self, identifier: &Identifier) -> Option<String>;
    fn profile(&self, id: &str) -> Option<Profile>;
    /// Whether this identifier/claimant clash was already recorded.
    fn conflict_recorded(&self, identifier: &Identifier, claimant: &str) -> bool;
}

/// A write the store must make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphChange {
    PutProfile(Profile),
    PutOwner(Identifier, String),
    PutConflict(Conflict),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub identifier: Identifier,
    pub owner: String,
    pub claimant: String,
}

/// What resolving one event decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    /// The canonical profile the event belongs to.
    pub customer_id: String,
    /// Profiles absorbed into `customer_id` by this event.
    pub absorbed: Vec<String>,
    pub conflicts: Vec<Conflict>,
    /// Identifiers that join `customer_id` for the first time.
    pub linked: Vec<Identifier>,
    pub changes: Vec<GraphChange>,
}

/// Follows merge links to the profile that stands for the person now.
pub fn root_of(view: &impl GraphView, id: &str) -> Option<Profile> {
    let mut profile = view.profile(id)?;
    // Merges only point at profiles that are not themselves merged at the time,
    // so chains are short; the bound protects against a corrupt store.
    for _ in 0..64 {
        match profile.merged_into.clone() {
            Some(next) => profile = view.profile(&next)?,
            None => return Some(profile),
        }
    }
    None
}

/// Resolves an event carrying `identifiers` (normalised, strongest first) read
/// at `position`. Pure: the caller applies `changes` to the store before
/// resolving the next event.
pub fn resolve(
    view: &impl GraphView,
    identifiers: &[Identifier],
    position: ReadPosition,
) -> Resolution {
    let mut resolution = Resolution::default();
    // The roots the event's identifiers already point at, in identifier order.
    let mut roots: Vec<(Identifier, Profile)> = Vec::new();
    let mut unowned: Vec<Identifier> = Vec::new();
    for identifier in identifiers {
        match view
            .owner(identifier)
            .and_then(|owner| root_of(view, &owner))
        {
            Some(root) => roots.push((identifier.clone(), root)),
            None => unowned.push(identifier.clone()),
        }
    }

    let claimed_customer_id = identifiers
        .iter()
        .find(|identifier| identifier.kind == IdentifierKind::CustomerId);
    let target: Profile = if let Some(customer_id) = claimed_customer_id {
        match roots
            .iter()
            .find(|(identifier, _)| identifier == customer_id)
        {
            Some((_, root)) => root.clone(),
            None => {
                let profile = Profile {
                    id: customer_id.value.clone(),
                    known: true,
                    born: position,
                    merged_into: None,
                };
                resolution
                    .changes
                    .push(GraphChange::PutProfile(profile.clone()));
                profile
            }
        }
    } else if let Some((_, known)) = roots.iter().find(|(_, root)| root.known) {
        // The strongest identifier with a known owner decides.
        known.clone()
    } else if let Some((_, oldest)) = roots
        .iter()
        .min_by(|(_, left), (_, right)| (left.born, &left.id).cmp(&(right.born, &right.id)))
    {
        oldest.clone()
    } else {
        let first = identifiers
            .first()
            .expect("ingest guarantees at least one identifier");
        let profile = Profile {
            id: prospect_id(first),
            known: false,
            born: position,
            merged_into: None,
        };
        resolution
            .changes
            .push(GraphChange::PutProfile(profile.clone()));
        profile
    };
    resolution.customer_id = target.id.clone();

    for (identifier, root) in &roots {
        if root.id == target.id || resolution.absorbed.contains(&root.id) {
            continue;
        }
        if root.known {
            // Never merge two known customers: the identifier stays put.
            let conflict = Conflict {
                identifier: identifier.clone(),
                owner: root.id.clone(),
                claimant: target.id.clone(),
            };
            if !view.conflict_recorded(identifier, &target.id)
                && !resolution.conflicts.contains(&conflict)
            {
                resolution
                    .changes
                    .push(GraphChange::PutConflict(conflict.clone()));
                resolution.conflicts.push(conflict);
            }
        } else {
            resolution.absorbed.push(root.id.clone());
            resolution.changes.push(GraphChange::PutProfile(Profile {
                merged_into: Some(target.id.clone()),
                ..root.clone()
            }));
        }
    }
    // The absorbed list is sorted so that the merge record is the same
    // whatever order the identifiers came in.
    resolution.absorbed.sort();

    for identifier in unowned {
        resolution
            .changes
            .push(GraphChange::PutOwner(identifier.clone(), target.id.clone()));
        resolution.linked.push(identifier);
    }
    resolution
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn generations_round_trip_and_the_newest_known_one_is_found() {
        let base = format!("p_{}", "ab".repeat(16));
        assert_eq!(generation_of(&base), (base.as_str(), 0));
        let second = in_generation(&base, 2);
        assert_eq!(second, format!("{base}~2"));
        assert_eq!(generation_of(&second), (base.as_str(), 2));
        assert!(is_pseudonym(&base) && is_pseudonym(&second));
        for odd in ["~", "~0", "~01", "~x", "~-1", "~99999999999"] {
            let value = format!("{base}{odd}");
            assert_eq!(generation_of(&value), (value.as_str(), 0), "{value}");
            assert!(!is_pseudonym(&value), "{value}");
        }
        assert_eq!(in_generation(&base, 0), base);
        let email = Identifier::new(IdentifierKind::Email, base.clone());
        let known = [in_generation(&base, 1), in_generation(&base, 2)];
        let newest = newest_generation(&email, |probe| known.contains(&probe.value));
        assert_eq!(newest.value, known[1]);
        assert_eq!(newest.kind, IdentifierKind::Email);
        assert_eq!(newest_generation(&email, |_| false), email);
        // Dense: a gap ends the probe
        let gapped = [in_generation(&base, 2)];
        assert_eq!(
            newest_generation(&email, |probe| gapped.contains(&probe.value)),
            email
        );
    }

    /// An in-memory graph for tests of the pure rules.
    #[derive(Default)]
    pub(crate) struct MemoryGraph {
        owners: BTreeMap<Identifier, String>,
        profiles: BTreeMap<String, Profile>,
        conflicts: BTreeSet<(Identifier, String)>,
        next_offset: i64,
    }

    impl GraphView for MemoryGraph {
        fn owner(&self, identifier: &Identifier) -> Option<String> {
            self.owners.get(identifier).cloned()
        }
        fn profile(&self, id: &str) -> Option<Profile> {
            self.profiles.get(id).cloned()
        }
        fn conflict_recorded(&self, identifier: &Identifier, claimant: &str) -> bool {
            self.conflicts
                .contains(&(identifier.clone(), claimant.to_owned()))
        }
    }

    impl MemoryGraph {
        pub(crate) fn event(&mut self, identifiers: &[(IdentifierKind, &str)]) -> Resolution {
            let identifiers: Vec<Identifier> = identifiers
                .iter()
                .filter_map(|(kind, value)| Identifier::normalised(*kind, value))
                .collect();
            self.next_offset += 1;
            let position = ReadPosition {
                received_at_ms: 1_000 + self.next_offset,
                raw_partition: 0,
                raw_offset: self.next_offset,
            };
            let resolution = resolve(self, &identifiers, position);
            for change in &resolution.changes {
                match change {
                    GraphChange::PutProfile(profile) => {
                        self.profiles.insert(profile.id.clone(), profile.clone());
                    }
                    GraphChange::PutOwner(identifier, owner) => {
                        self.owners.insert(identifier.clone(), owner.clone());
                    }
                    GraphChange::PutConflict(conflict) => {
                        self.conflicts
                            .insert((conflict.identifier.clone(), conflict.claimant.clone()));
                    }
                }
            }
            resolution
        }
    }

    use IdentifierKind::*;

    #[test]
    fn normalises_emails_and_phones() {
        assert_eq!(normalise_email("  A@B.com "), "a@b.com");
        assert_eq!(normalise_phone("+86 138-0000 (0000)"), "+8613800000000");
        assert_eq!(normalise_phone("0138 0000"), "01380000");
        assert_eq!(normalise_phone(" - "), "");
    }

    #[test]
    fn a_new_identifier_starts_a_prospect_with_a_derived_id() {
        let mut graph = MemoryGraph::default();
        let first = graph.event(&[(AnonymousId, "anon-7")]);
        assert!(first.customer_id.starts_with("prospect-"));
        assert_eq!(
            first.customer_id,
            prospect_id(&Identifier::new(AnonymousId, "anon-7"))
        );
        assert_eq!(
            graph.event(&[(AnonymousId, "anon-7")]).customer_id,
            first.customer_id
        );
    }

    #[test]
    fn guest_then_registration_merges_every_prospect_into_the_customer() {
        let mut graph = MemoryGraph::default();
        let guest = graph.event(&[(Email, "A@B.com")]).customer_id;
        let visitor = graph.event(&[(AnonymousId, "anon-7")]).customer_id;
        let registration = graph.event(&[
            (CustomerId, "c-42"),
            (Email, "a@b.com"),
            (AnonymousId, "anon-7"),
        ]);
        assert_eq!(registration.customer_id, "c-42");
        let mut expected = vec![guest, visitor];
        expected.sort();
        assert_eq!(registration.absorbed, expected);
        assert!(
            registration
                .linked
                .iter()
                .any(|identifier| identifier.kind == CustomerId)
        );
        assert_eq!(graph.event(&[(AnonymousId, "anon-7")]).customer_id, "c-42");
        assert_eq!(graph.event(&[(Email, "a@b.com ")]).customer_id, "c-42");
    }

    #[test]
    fn the_younger_prospect_merges_into_the_older() {
        let mut graph = MemoryGraph::default();
        let older = graph.event(&[(Phone, "+1 555 0100")]).customer_id;
        let younger = graph.event(&[(AnonymousId, "device-9")]).customer_id;
        let link = graph.event(&[(AnonymousId, "device-9"), (Phone, "+15550100")]);
        assert_eq!(link.customer_id, older);
        assert_eq!(link.absorbed, vec![younger]);
    }

    #[test]
    fn two_known_customers_are_never_merged() {
        let mut graph = MemoryGraph::default();
        graph.event(&[(CustomerId, "c-1"), (Email, "shared@example.com")]);
        let second = graph.event(&[(CustomerId, "c-2"), (Email, "shared@example.com")]);
        assert_eq!(second.customer_id, "c-2");
        assert!(second.absorbed.is_empty());
        assert_eq!(
            second.conflicts,
            vec![Conflict {
                identifier: Identifier::new(Email, "shared@example.com"),
                owner: "c-1".into(),
                claimant: "c-2".into()
            }]
        );
        // The identifier stays with its first owner, and the clash is recorded once.
        assert_eq!(
            graph.event(&[(Email, "shared@example.com")]).customer_id,
            "c-1"
        );
        assert!(
            graph
                .event(&[(CustomerId, "c-2"), (Email, "shared@example.com")])
                .conflicts
                .is_empty()
        );
    }

    #[test]
    fn a_prospect_already_merged_into_one_customer_is_not_taken_by_another() {
        let mut graph = MemoryGraph::default();
        graph.event(&[(AnonymousId, "tablet")]);
        graph.event(&[(CustomerId, "c-1"), (AnonymousId, "tablet")]);
        let other = graph.event(&[(CustomerId, "c-2"), (AnonymousId, "tablet")]);
        assert!(other.absorbed.is_empty());
        assert_eq!(other.conflicts.len(), 1);
        assert_eq!(other.conflicts[0].owner, "c-1");
    }
}
