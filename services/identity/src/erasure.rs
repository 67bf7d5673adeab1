//! Erasing a person: every identifier identity has linked to them (those of
//! profiles merged into them included) is found in the graph, and the data
//! keys of each are destroyed in the vault, which purges its files of them.
//! Sealed values of the person then stay unreadable on every topic and in
//! every projection, however often they are rebuilt; order facts, which
//! are not personal, stay as they were.
//!
//! A request is written to the vault as pending before anything is
//! destroyed, and marked done after; one found pending at start (a crash in
//! between) is completed then. The record says who asked and when, and
//! names the person only by pseudonyms. It also keeps where the erasure
//! cut the log, so an identifier that comes back afterwards starts a new
//! person, on every replay alike (see [`crate::generations`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rapport_common::keys;
use rapport_common::store::Store;
use rapport_projections::identity::{
    GraphView, Identifier, Profile, generation_of, newest_generation, root_of,
};
use serde::{Deserialize, Serialize};

use crate::FAMILY;
use crate::generations::{ErasedIdentifier, Generations};
use crate::vault::{Vault, VaultError};

/// How long an erasure waits for the live resolver to finish a batch.
const BETWEEN_BATCHES: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErasureState {
    Pending,
    Done,
}

/// What is kept of an erasure: enough to audit it, nothing of the person
/// but their pseudonymous id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRecord {
    pub id: String,
    pub state: ErasureState,
    pub requested_at_ms: i64,
    pub done_at_ms: Option<i64>,
    /// The id of the API key that asked (`None` with auth off).
    pub requested_by: Option<String>,
    /// The person's canonical id: a pseudonym or a prospect id.
    pub person: String,
    /// Identifiers of the person whose keys were destroyed.
    pub identifiers: usize,
    pub keys_destroyed: usize,
    /// The live resolver's last committed raw offset per partition when
    /// the erasure was taken (-1: none yet).
    #[serde(default)]
    pub cut: Vec<i64>,
    /// Each identifier of the person and the generation it starts.
    #[serde(default)]
    pub erased: Vec<ErasedIdentifier>,
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("no person has this identifier")]
    UnknownPerson,
    #[error("the resolver has not finished its batch for {0:?}: is the broker down? Try again")]
    Busy(Duration),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Storage(#[from] rapport_common::Error),
    #[error("a stored erasure record does not decode: {0}")]
    Corrupt(String),
}

pub struct Erasures {
    graph: Store,
    vault: Arc<Vault>,
    generations: Arc<Generations>,
}

/// The graph as identity's store holds it, read outside a batch.
struct StoredGraph<'a>(&'a Store);

impl GraphView for StoredGraph<'_> {
    fn owner(&self, identifier: &Identifier) -> Option<String> {
        let bytes = self.0.get(FAMILY, &keys::identifier(identifier)).ok()??;
        String::from_utf8(bytes).ok()
    }

    fn profile(&self, id: &str) -> Option<Profile> {
        let bytes = self.0.get(FAMILY, &keys::graph_node(id)).ok()??;
        postcard::from_bytes(&bytes).ok()
    }

    fn conflict_recorded(&self, _: &Identifier, _: &str) -> bool {
        false
    }
}

impl Erasures {
    /// Erasures over `graph` (the live one) and `vault`, with every
    /// erasure on record known to [`generations`](Self::generations).
    pub fn open(graph: Store, vault: Arc<Vault>) -> Result<Self, ErasureError> {
        let erasures = Self {
            graph,
            vault,
            generations: Arc::default(),
        };
        for record in erasures.all()? {
            erasures.generations.record(&record.erased, &record.cut);
        }
        Ok(erasures)
    }

    /// The erased identifiers, for the resolvers.
    pub fn generations(&self) -> Arc<Generations> {
        self.generations.clone()
    }

    /// The key identifiers are pseudonymised with.
    pub fn pseudonym_key(&self) -> &rapport_common::privacy::SecretKey {
        self.vault.pseudonym_key()
    }

    /// Erases the person `identifier` (a pseudonym) belongs to; returns
    /// the record, done.
    pub fn erase(
        &self,
        identifier: &Identifier,
        requested_by: Option<String>,
        id: String,
        now_ms: i64,
    ) -> Result<ErasureRecord, ErasureError> {
        // now_ms is when it was asked; done_at is read after the work.
        // Between two batches of the live resolver, so that the cut and
        // the person agree: every event at or before it is resolved.
        let between_batches = self
            .generations
            .between_batches(BETWEEN_BATCHES)
            .ok_or(ErasureError::Busy(BETWEEN_BATCHES))?;
        let graph = StoredGraph(&self.graph);
        let identifier = newest_generation(identifier, |probe| graph.owner(probe).is_some());
        let owner = graph
            .owner(&identifier)
            .ok_or(ErasureError::UnknownPerson)?;
        let person = root_of(&graph, &owner).map_or(owner, |profile| profile.id);
        let mut next_generation: BTreeMap<String, u32> = BTreeMap::new();
        // Only pseudonyms: with sealing off there is nothing to erase, and
        // a clear value is not renamed.
        for value in self.identifiers_of(&person)? {
            let (base, generation) = generation_of(&value);
            if !rapport_projections::identity::is_pseudonym(base) {
                continue;
            }
            let next = next_generation.entry(base.to_owned()).or_default();
            *next = (*next).max(generation + 1);
        }
        let erased: Vec<ErasedIdentifier> = next_generation
            .into_iter()
            .map(|(pseudonym, generation)| ErasedIdentifier {
                pseudonym,
                generation,
            })
            .collect();
        let record = ErasureRecord {
            id,
            state: ErasureState::Pending,
            requested_at_ms: now_ms,
            done_at_ms: None,
            requested_by,
            person,
            identifiers: erased.len(),
            keys_destroyed: 0,
            cut: self.committed_cut()?,
            erased,
        };
        self.vault.put_erasure(&record.id, &encode(&record)?)?;
        self.generations.record(&record.erased, &record.cut);
        drop(between_batches);
        self.complete(record, &rapport_common::now_ms)
    }

    /// The live resolver's committed raw offsets, by partition.
    fn committed_cut(&self) -> Result<Vec<i64>, ErasureError> {
        let mut cut = Vec::new();
        for (key, value) in self
            .graph
            .scan_prefix(FAMILY, &[keys::OFFSET], usize::MAX)?
        {
            let partition = keys::decode_offset(&key)
                .ok()
                .and_then(|partition| usize::try_from(partition).ok())
                .ok_or_else(|| ErasureError::Corrupt(format!("offset key {key:02x?}")))?;
            let offset = <[u8; 8]>::try_from(value.as_slice())
                .map(i64::from_be_bytes)
                .map_err(|_| ErasureError::Corrupt(format!("offset of partition {partition}")))?;
            if cut.len() <= partition {
                cut.resize(partition + 1, -1);
            }
            cut[partition] = offset;
        }
        Ok(cut)
    }

    /// Destroys the keys of every identifier of the record's person and
    /// marks the record done at `clock`'s time. Doing it twice destroys
    /// nothing more: `keys_destroyed` counts what the run that completed it
    /// destroyed (none, when a crash came after the keys went).
    pub fn complete(
        &self,
        mut record: ErasureRecord,
        clock: &dyn Fn() -> i64,
    ) -> Result<ErasureRecord, ErasureError> {
        let subjects: BTreeSet<String> = if record.erased.is_empty() {
            // A record from before erasures kept their identifiers
            self.identifiers_of(&record.person)?
                .iter()
                .map(|value| generation_of(value).0.to_owned())
                .collect()
        } else {
            record
                .erased
                .iter()
                .map(|identifier| identifier.pseudonym.clone())
                .collect()
        };
        let subjects: Vec<String> = subjects.into_iter().collect();
        record.keys_destroyed += self.vault.destroy(&subjects)?;
        record.state = ErasureState::Done;
        record.done_at_ms = Some(clock());
        self.vault.put_erasure(&record.id, &encode(&record)?)?;
        Ok(record)
    }

    /// Completes every erasure a crash left pending; returns how many.
    pub fn resume(&self, clock: &dyn Fn() -> i64) -> Result<usize, ErasureError> {
        let pending: Vec<ErasureRecord> = self
            .all()?
            .into_iter()
            .filter(|record| record.state == ErasureState::Pending)
            .collect();
        let count = pending.len();
        for record in pending {
            tracing::info!(erasure = %record.id, "completing an erasure a stop interrupted");
            self.complete(record, clock)?;
        }
        Ok(count)
    }

    pub fn get(&self, id: &str) -> Result<Option<ErasureRecord>, ErasureError> {
        self.vault
            .erasure(id)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Every erasure on record, oldest first.
    pub fn all(&self) -> Result<Vec<ErasureRecord>, ErasureError> {
        self.vault
            .erasures()?
            .iter()
            .map(|bytes| decode(bytes))
            .collect()
    }

    /// The values (pseudonyms, perhaps of a later generation) of every
    /// identifier whose owner belongs to `person` now. A scan of the
    /// graph's identifiers: erasures are rare.
    fn identifiers_of(&self, person: &str) -> Result<BTreeSet<String>, ErasureError> {
        let graph = StoredGraph(&self.graph);
        let mut roots: HashMap<String, Option<String>> = HashMap::new();
        let mut found = BTreeSet::new();
        for (key, owner) in self
            .graph
            .scan_prefix(FAMILY, &[keys::IDENTIFIER], usize::MAX)?
        {
            let Ok(identifier) = keys::decode_identifier(&key) else {
                continue;
            };
            let owner = String::from_utf8_lossy(&owner).into_owned();
            let root = roots
                .entry(owner.clone())
                .or_insert_with(|| root_of(&graph, &owner).map(|profile| profile.id));
            if root.as_deref() == Some(person) {
                found.insert(identifier.value);
            }
        }
        Ok(found)
    }
}

fn encode(record: &ErasureRecord) -> Result<Vec<u8>, ErasureError> {
    serde_json::to_vec(record).map_err(|error| ErasureError::Corrupt(error.to_string()))
}

fn decode(bytes: &[u8]) -> Result<ErasureRecord, ErasureError> {
    serde_json::from_slice(bytes).map_err(|error| ErasureError::Corrupt(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_projections::identity::{IdentifierKind, ReadPosition, in_generation};

    const ADA: &str = "p_000000000000000000000000000000a1";
    const ADA_EMAIL: &str = "p_000000000000000000000000000000a2";
    const BOB: &str = "p_000000000000000000000000000000b1";
    const NOBODY: &str = "p_000000000000000000000000000000ff";

    fn commit_offsets(store: &Store, offsets: &[i64]) {
        let mut batch = store.stage(FAMILY);
        for (partition, offset) in offsets.iter().enumerate() {
            batch.put(
                keys::offset(partition as i32),
                offset.to_be_bytes().to_vec(),
            );
        }
        batch.commit().unwrap();
    }

    fn graph_with_ada(dir: &std::path::Path) -> Store {
        let store = Store::open(&dir.join("graph"), &[FAMILY]).unwrap();
        let mut batch = store.stage(FAMILY);
        let born = ReadPosition {
            received_at_ms: 1,
            raw_partition: 0,
            raw_offset: 0,
        };
        for (id, merged_into) in [
            (ADA, None),
            ("prospect-guest", Some(ADA.to_owned())),
            (BOB, None),
        ] {
            let profile = Profile {
                id: id.to_owned(),
                known: id.starts_with("p_"),
                born,
                merged_into,
            };
            batch.put(keys::graph_node(id), postcard::to_stdvec(&profile).unwrap());
        }
        for (kind, value, owner) in [
            (IdentifierKind::CustomerId, ADA, ADA),
            (IdentifierKind::Email, ADA_EMAIL, "prospect-guest"),
            (IdentifierKind::CustomerId, BOB, BOB),
        ] {
            batch.put(
                keys::identifier(&Identifier::new(kind, value)),
                owner.as_bytes().to_vec(),
            );
        }
        batch.commit().unwrap();
        store
    }

    #[test]
    fn an_erasure_destroys_the_keys_of_every_identifier_merged_into_the_person() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(Vault::open(&dir.path().join("vault")).unwrap());
        let issued = vault
            .issue(&[ADA.into(), ADA_EMAIL.into(), BOB.into()])
            .unwrap();
        let erasures = Erasures::open(graph_with_ada(dir.path()), vault.clone()).unwrap();
        let email = Identifier::new(IdentifierKind::Email, ADA_EMAIL);
        let record = erasures
            .erase(&email, Some("k1".into()), "e1".into(), 10)
            .unwrap();
        assert_eq!(record.state, ErasureState::Done);
        assert_eq!(record.person, ADA, "the guest's root is the known customer");
        assert_eq!((record.identifiers, record.keys_destroyed), (2, 2));
        let left = vault
            .lookup(
                &issued
                    .iter()
                    .map(|key| (key.subject.clone(), key.key_id.clone()))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        assert_eq!(
            left.iter().map(Option::is_some).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(erasures.get("e1").unwrap(), Some(record));
        let unknown = Identifier::new(IdentifierKind::Email, NOBODY);
        assert!(matches!(
            erasures.erase(&unknown, None, "e2".into(), 11),
            Err(ErasureError::UnknownPerson)
        ));
    }

    #[test]
    fn an_erasure_a_crash_left_pending_completes_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(Vault::open(&dir.path().join("vault")).unwrap());
        let issued = vault.issue(&[ADA.into()]).unwrap();
        let pending = ErasureRecord {
            id: "e1".into(),
            state: ErasureState::Pending,
            requested_at_ms: 10,
            done_at_ms: None,
            requested_by: None,
            person: ADA.into(),
            identifiers: 0,
            keys_destroyed: 0,
            cut: Vec::new(),
            erased: Vec::new(),
        };
        vault.put_erasure("e1", &encode(&pending).unwrap()).unwrap();
        let erasures = Erasures::open(graph_with_ada(dir.path()), vault.clone()).unwrap();
        assert_eq!(erasures.resume(&|| 20).unwrap(), 1);
        let done = erasures.get("e1").unwrap().unwrap();
        assert_eq!(
            (done.state, done.done_at_ms),
            (ErasureState::Done, Some(20))
        );
        assert_eq!(
            vault
                .lookup(&[(ADA.into(), issued[0].key_id.clone())])
                .unwrap(),
            vec![None]
        );
        assert_eq!(
            erasures.resume(&|| 30).unwrap(),
            0,
            "nothing is left pending"
        );
    }

    #[test]
    fn an_identifier_back_after_an_erasure_is_a_new_generation_that_can_be_erased_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(Vault::open(&dir.path().join("vault")).unwrap());
        vault.issue(&[ADA.into(), ADA_EMAIL.into()]).unwrap();
        let graph = graph_with_ada(dir.path());
        commit_offsets(&graph, &[41, 7]);
        let erasures = Erasures::open(graph.clone(), vault.clone()).unwrap();
        let email = Identifier::new(IdentifierKind::Email, ADA_EMAIL);
        let first = erasures.erase(&email, None, "e1".into(), 10).unwrap();
        assert_eq!(first.cut, [41, 7], "the live resolver's committed offsets");
        let erased = |pseudonym: &str, generation| ErasedIdentifier {
            pseudonym: pseudonym.to_owned(),
            generation,
        };
        assert_eq!(first.erased, [erased(ADA, 1), erased(ADA_EMAIL, 1)]);
        {
            let generations = erasures.generations();
            let view = generations.view();
            assert_eq!(view.generation(ADA_EMAIL, 0, 41), 0);
            assert_eq!(view.generation(ADA_EMAIL, 0, 42), 1);
            assert_eq!(view.generation(BOB, 0, 42), 0);
        }

        // The email comes back on a guest of its own, and the resolver
        // moves on; a new key was issued for it
        let returned = in_generation(ADA_EMAIL, 1);
        let mut batch = graph.stage(FAMILY);
        let guest = Profile {
            id: "prospect-back".into(),
            known: false,
            born: ReadPosition {
                received_at_ms: 20,
                raw_partition: 0,
                raw_offset: 42,
            },
            merged_into: None,
        };
        batch.put(
            keys::graph_node("prospect-back"),
            postcard::to_stdvec(&guest).unwrap(),
        );
        batch.put(
            keys::identifier(&Identifier::new(IdentifierKind::Email, returned.clone())),
            b"prospect-back".to_vec(),
        );
        batch.commit().unwrap();
        commit_offsets(&graph, &[50, 7]);
        let new_key = vault.issue(&[ADA_EMAIL.into()]).unwrap().remove(0);

        // Erasing by the clear email's pseudonym finds the newest
        // generation: the guest, not the person erased before
        let second = erasures.erase(&email, None, "e2".into(), 30).unwrap();
        assert_eq!(second.person, "prospect-back");
        assert_eq!(second.erased, [erased(ADA_EMAIL, 2)]);
        assert_eq!(
            (second.cut.as_slice(), second.keys_destroyed),
            (&[50, 7][..], 1)
        );
        assert_eq!(
            vault
                .lookup(&[(ADA_EMAIL.into(), new_key.key_id.clone())])
                .unwrap(),
            vec![None]
        );

        // The generations are rebuilt from the records at the next start
        let reopened = Erasures::open(graph, vault).unwrap();
        let generations = reopened.generations();
        let view = generations.view();
        assert_eq!(view.generation(ADA_EMAIL, 0, 45), 1);
        assert_eq!(view.generation(ADA_EMAIL, 0, 51), 2);
        assert_eq!(view.generation(ADA, 0, 51), 1);
    }
}
