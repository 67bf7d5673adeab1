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
//! names the person only by their pseudonymous id.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rapport_common::keys;
use rapport_common::store::Store;
use rapport_projections::identity::{GraphView, Identifier, Profile, root_of};
use serde::{Deserialize, Serialize};

use crate::FAMILY;
use crate::vault::{Vault, VaultError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("no person has this identifier")]
    UnknownPerson,
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
    pub fn new(graph: Store, vault: Arc<Vault>) -> Self {
        Self { graph, vault }
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
        let graph = StoredGraph(&self.graph);
        let owner = graph.owner(identifier).ok_or(ErasureError::UnknownPerson)?;
        let person = root_of(&graph, &owner).map_or(owner, |profile| profile.id);
        let record = ErasureRecord {
            id,
            state: ErasureState::Pending,
            requested_at_ms: now_ms,
            done_at_ms: None,
            requested_by,
            person,
            identifiers: 0,
            keys_destroyed: 0,
        };
        self.vault.put_erasure(&record.id, &encode(&record)?)?;
        self.complete(record, &rapport_common::now_ms)
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
        let subjects = self.identifiers_of(&record.person)?;
        record.identifiers = subjects.len();
        record.keys_destroyed += self
            .vault
            .destroy(&subjects.into_iter().collect::<Vec<_>>())?;
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

    /// The pseudonyms of every identifier whose owner belongs to `person`
    /// now. A scan of the graph's identifiers: erasures are rare.
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
    use rapport_projections::identity::{IdentifierKind, ReadPosition};

    fn graph_with_ada(dir: &std::path::Path) -> Store {
        let store = Store::open(&dir.join("graph"), &[FAMILY]).unwrap();
        let mut batch = store.stage(FAMILY);
        let born = ReadPosition {
            received_at_ms: 1,
            raw_partition: 0,
            raw_offset: 0,
        };
        for (id, merged_into) in [
            ("p_ada", None),
            ("prospect-guest", Some("p_ada".to_owned())),
            ("p_bob", None),
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
            (IdentifierKind::CustomerId, "p_ada", "p_ada"),
            (IdentifierKind::Email, "p_ada_email", "prospect-guest"),
            (IdentifierKind::CustomerId, "p_bob", "p_bob"),
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
            .issue(&["p_ada".into(), "p_ada_email".into(), "p_bob".into()])
            .unwrap();
        let erasures = Erasures::new(graph_with_ada(dir.path()), vault.clone());
        let email = Identifier::new(IdentifierKind::Email, "p_ada_email");
        let record = erasures
            .erase(&email, Some("k1".into()), "e1".into(), 10)
            .unwrap();
        assert_eq!(record.state, ErasureState::Done);
        assert_eq!(
            record.person, "p_ada",
            "the guest's root is the known customer"
        );
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
        let unknown = Identifier::new(IdentifierKind::Email, "p_nobody");
        assert!(matches!(
            erasures.erase(&unknown, None, "e2".into(), 11),
            Err(ErasureError::UnknownPerson)
        ));
    }

    #[test]
    fn an_erasure_a_crash_left_pending_completes_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(Vault::open(&dir.path().join("vault")).unwrap());
        let issued = vault.issue(&["p_ada".into()]).unwrap();
        let pending = ErasureRecord {
            id: "e1".into(),
            state: ErasureState::Pending,
            requested_at_ms: 10,
            done_at_ms: None,
            requested_by: None,
            person: "p_ada".into(),
            identifiers: 0,
            keys_destroyed: 0,
        };
        vault.put_erasure("e1", &encode(&pending).unwrap()).unwrap();
        let erasures = Erasures::new(graph_with_ada(dir.path()), vault.clone());
        assert_eq!(erasures.resume(&|| 20).unwrap(), 1);
        let done = erasures.get("e1").unwrap().unwrap();
        assert_eq!(
            (done.state, done.done_at_ms),
            (ErasureState::Done, Some(20))
        );
        assert_eq!(
            vault
                .lookup(&[("p_ada".into(), issued[0].key_id.clone())])
                .unwrap(),
            vec![None]
        );
        assert_eq!(
            erasures.resume(&|| 30).unwrap(),
            0,
            "nothing is left pending"
        );
    }
}
