//! The vault: every subject's data keys and the pseudonym key, in a RocksDB
//! of their own (`[identity] vault_dir`). It is the one store that cannot be
//! rebuilt from the log (the log holds only what the keys sealed), and the
//! one place a data key lives: destroying it there, and purging RocksDB's
//! files of it, is what makes an erased person unreadable everywhere.
//! Not on a topic: a broker keeps superseded records' bytes (see
//! docs/broker.md, "Compaction").

use std::path::Path;
use std::sync::Mutex;

use rapport_common::keys;
use rapport_common::privacy::SecretKey;
use rapport_common::store::Store;

/// The vault's column family.
pub const FAMILY: &str = "vault";

pub use rapport_common::privacy::DataKey;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Storage(#[from] rapport_common::Error),
    #[error("the vault holds a key of {0} bytes at {1:02x?}, not 32")]
    Corrupt(usize, Vec<u8>),
}

pub struct Vault {
    store: Store,
    pseudonym_key: SecretKey,
    /// Issuing reads, then writes: one at a time, so a subject gets one key.
    issuing: Mutex<()>,
}

fn secret(value: &[u8], key: &[u8]) -> Result<SecretKey, VaultError> {
    SecretKey::from_bytes(value).ok_or_else(|| VaultError::Corrupt(value.len(), key.to_vec()))
}

impl Vault {
    /// Opens (or creates) the vault at `dir`; a new vault makes its
    /// pseudonym key.
    pub fn open(dir: &Path) -> Result<Self, VaultError> {
        let store = Store::open(dir, &[FAMILY])?;
        let pseudonym_key = match store.get(FAMILY, &keys::pseudonym_key())? {
            Some(value) => secret(&value, &keys::pseudonym_key())?,
            None => {
                let key = SecretKey::random()?;
                let mut batch = store.stage(FAMILY);
                batch.put(keys::pseudonym_key(), key.as_bytes().to_vec());
                batch.commit()?;
                key
            }
        };
        Ok(Self {
            store,
            pseudonym_key,
            issuing: Mutex::new(()),
        })
    }

    /// The key every service computes pseudonyms with.
    pub fn pseudonym_key(&self) -> &SecretKey {
        &self.pseudonym_key
    }

    /// The data key of each subject, made for those that have none yet.
    /// Made keys are on disk (write-ahead log) before this returns.
    pub fn issue(&self, subjects: &[String]) -> Result<Vec<DataKey>, VaultError> {
        let _one_at_a_time = self
            .issuing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut issued = Vec::with_capacity(subjects.len());
        let mut batch = self.store.stage(FAMILY);
        for subject in subjects {
            let prefix = keys::data_key_prefix(subject);
            let existing = match issued.iter().find(|key: &&DataKey| &key.subject == subject) {
                Some(key) => Some(key.clone()),
                None => match self
                    .store
                    .scan_prefix(FAMILY, &prefix, 1)?
                    .into_iter()
                    .next()
                {
                    Some((key, value)) => {
                        let (subject, key_id) = keys::decode_data_key(&key)
                            .map_err(|_| VaultError::Corrupt(value.len(), key.clone()))?;
                        Some(DataKey {
                            subject,
                            key_id,
                            key: secret(&value, &key)?,
                        })
                    }
                    None => None,
                },
            };
            let key = match existing {
                Some(key) => key,
                None => {
                    let key_id = new_key_id()?;
                    let key = SecretKey::random()?;
                    batch.put(keys::data_key(subject, &key_id), key.as_bytes().to_vec());
                    DataKey {
                        subject: subject.clone(),
                        key_id,
                        key,
                    }
                }
            };
            issued.push(key);
        }
        batch.commit()?;
        Ok(issued)
    }

    /// The keys asked for, `None` where the vault has none (never made, or
    /// destroyed).
    pub fn lookup(
        &self,
        wanted: &[(String, String)],
    ) -> Result<Vec<Option<SecretKey>>, VaultError> {
        wanted
            .iter()
            .map(|(subject, key_id)| {
                let key = keys::data_key(subject, key_id);
                self.store
                    .get(FAMILY, &key)?
                    .map(|value| secret(&value, &key))
                    .transpose()
            })
            .collect()
    }

    /// Destroys every data key of each subject and purges RocksDB's files
    /// of them. Returns how many keys were destroyed.
    pub fn destroy(&self, subjects: &[String]) -> Result<usize, VaultError> {
        let _one_at_a_time = self
            .issuing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut batch = self.store.stage(FAMILY);
        let mut destroyed = 0;
        for subject in subjects {
            for (key, _) in
                self.store
                    .scan_prefix(FAMILY, &keys::data_key_prefix(subject), usize::MAX)?
            {
                batch.delete(key);
                destroyed += 1;
            }
        }
        batch.commit()?;
        self.store.purge(FAMILY)?;
        Ok(destroyed)
    }
}

impl Vault {
    /// Writes erasure `id`'s record (durably, before it returns).
    pub fn put_erasure(&self, id: &str, record: &[u8]) -> Result<(), VaultError> {
        let mut batch = self.store.stage(FAMILY);
        batch.put(keys::erasure(id), record.to_vec());
        batch.commit()?;
        Ok(())
    }

    pub fn erasure(&self, id: &str) -> Result<Option<Vec<u8>>, VaultError> {
        Ok(self.store.get(FAMILY, &keys::erasure(id))?)
    }

    /// Every erasure record.
    pub fn erasures(&self) -> Result<Vec<Vec<u8>>, VaultError> {
        Ok(self
            .store
            .scan_prefix(FAMILY, &[keys::ERASURE], usize::MAX)?
            .into_iter()
            .map(|(_, value)| value)
            .collect())
    }
}

fn new_key_id() -> Result<String, VaultError> {
    let key = SecretKey::random()?;
    let mut id = String::with_capacity(16);
    rapport_common::privacy::push_hex(&mut id, &key.as_bytes()[..8]);
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(index: u8) -> String {
        format!("p_{index:032x}")
    }

    /// How often `needle` occurs in the files under `dir`.
    fn occurrences(dir: &Path, needle: &[u8]) -> usize {
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                count += bytes
                    .windows(needle.len())
                    .filter(|window| *window == needle)
                    .count();
            }
        }
        count
    }

    #[test]
    fn a_subject_keeps_one_key_across_requests_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (first, pseudonym_key) = {
            let vault = Vault::open(dir.path()).unwrap();
            let issued = vault.issue(&[subject(1), subject(2), subject(1)]).unwrap();
            assert_eq!(issued[0], issued[2], "one key per subject within a request");
            assert_ne!(issued[0].key, issued[1].key);
            (issued[0].clone(), vault.pseudonym_key().clone())
        };
        let vault = Vault::open(dir.path()).unwrap();
        assert_eq!(vault.pseudonym_key(), &pseudonym_key);
        assert_eq!(vault.issue(&[subject(1)]).unwrap()[0], first);
        assert_eq!(
            vault
                .lookup(&[
                    (subject(1), first.key_id.clone()),
                    (subject(1), "0000".to_owned()),
                    (subject(3), first.key_id.clone()),
                ])
                .unwrap(),
            vec![Some(first.key.clone()), None, None]
        );
    }

    #[test]
    fn a_destroyed_key_leaves_no_bytes_in_the_vault_files() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let doomed = vault.issue(&[subject(1)]).unwrap().remove(0);
        let kept = vault.issue(&[subject(2)]).unwrap().remove(0);
        // On disk in the write-ahead log first, then in a flushed file
        assert!(occurrences(dir.path(), doomed.key.as_bytes()) > 0);
        vault.store.flush(FAMILY).unwrap();
        assert!(occurrences(dir.path(), doomed.key.as_bytes()) > 0);
        assert_eq!(vault.destroy(&[subject(1)]).unwrap(), 1);
        assert_eq!(
            occurrences(dir.path(), doomed.key.as_bytes()),
            0,
            "the destroyed key is still in the vault's files"
        );
        assert!(
            occurrences(dir.path(), kept.key.as_bytes()) > 0,
            "the scan finds a key that was kept"
        );
        assert_eq!(
            vault
                .lookup(&[(subject(1), doomed.key_id.clone())])
                .unwrap(),
            vec![None]
        );
        // The subject gets a new, different key afterwards
        let again = vault.issue(&[subject(1)]).unwrap().remove(0);
        assert_ne!(again.key, doomed.key);
        assert_ne!(again.key_id, doomed.key_id);
    }
}
