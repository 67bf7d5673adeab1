//! Generations of erased identifiers: what keeps an erased person erased
//! when one of their identifiers comes back.
//!
//! An erasure records, for every identifier of the person, the generation
//! it starts (one past the generation the person held) and its *cut*: the
//! live resolver's committed raw offset of every partition at that moment.
//! An event whose raw position lies past the cut of its partition carries
//! the identifier in the new generation (`p_…~1`, see
//! [`rapport_projections::identity::generation_of`]), which owns nothing
//! yet, so it starts a new, separate person. Events at or before the cut
//! keep the old generation and stay with the erased person.
//!
//! The rule depends only on raw positions and on erasure records (kept in
//! the vault), never on when a resolver runs, so a re-identification or a
//! replay gives every event the generation the live resolver gave it. That
//! needs the cut taken between two batches of the live resolver: it holds
//! [`Generations::batch`] from resolving a batch until the batch is
//! committed, and an erasure takes it to read the offsets.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use rapport_projections::identity::{generation_of, in_generation};
use rapport_proto::v1 as proto;
use serde::{Deserialize, Serialize};

/// One identifier of an erased person, as the erasure record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasedIdentifier {
    /// The pseudonym, without a generation.
    pub pseudonym: String,
    /// The generation it is in after the cut.
    pub generation: u32,
}

/// Where one erasure cuts one identifier's history.
#[derive(Debug, Clone)]
struct Cut {
    /// Per raw partition, the last offset before the cut (-1: none).
    offsets: Vec<i64>,
    generation: u32,
}

impl Cut {
    fn passed(&self, partition: i32, offset: i64) -> bool {
        let last = usize::try_from(partition)
            .ok()
            .and_then(|partition| self.offsets.get(partition))
            .copied()
            .unwrap_or(-1);
        offset > last
    }
}

/// The erased identifiers by pseudonym, and the lock that orders erasures
/// between the live resolver's batches.
#[derive(Debug, Default)]
pub struct Generations {
    erased: RwLock<HashMap<String, Vec<Cut>>>,
    batch: Mutex<()>,
}

/// Erased identifiers, read once per batch.
pub struct ErasedView<'a>(std::sync::RwLockReadGuard<'a, HashMap<String, Vec<Cut>>>);

impl Generations {
    /// Adds what one erasure record says.
    pub fn record(&self, erased: &[ErasedIdentifier], cut: &[i64]) {
        let mut map = self.erased.write().unwrap_or_else(|e| e.into_inner());
        for identifier in erased {
            map.entry(identifier.pseudonym.clone())
                .or_default()
                .push(Cut {
                    offsets: cut.to_vec(),
                    generation: identifier.generation,
                });
        }
    }

    pub fn view(&self) -> ErasedView<'_> {
        ErasedView(self.erased.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Held by the live resolver over one batch, from resolving it to
    /// committing it.
    pub fn batch(&self) -> MutexGuard<'_, ()> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The batch lock, if the live resolver lets go of it within
    /// `patience` (it keeps it while a broker does not take a batch).
    pub fn between_batches(&self, patience: Duration) -> Option<MutexGuard<'_, ()>> {
        let deadline = Instant::now() + patience;
        loop {
            match self.batch.try_lock() {
                Ok(guard) => return Some(guard),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                    return Some(poisoned.into_inner());
                }
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        }
    }
}

impl ErasedView<'_> {
    /// The generation `value` is in at raw position (`partition`, `offset`).
    pub fn generation(&self, value: &str, partition: i32, offset: i64) -> u32 {
        self.0.get(value).map_or(0, |cuts| {
            cuts.iter()
                .filter(|cut| cut.passed(partition, offset))
                .map(|cut| cut.generation)
                .max()
                .unwrap_or(0)
        })
    }

    /// Puts every identifier of an event read at (`partition`, `offset`)
    /// into the generation it is in there. Sealed display copies stay: they
    /// name the key they were sealed with themselves.
    pub fn rename(&self, customer: &mut proto::CustomerIdentifiers, partition: i32, offset: i64) {
        if self.0.is_empty() {
            return;
        }
        for value in [
            &mut customer.customer_id,
            &mut customer.email,
            &mut customer.phone,
            &mut customer.anonymous_id,
        ] {
            let (base, _) = generation_of(value);
            let generation = self.generation(base, partition, offset);
            if generation > 0 {
                *value = in_generation(base, generation);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identifier_is_in_the_generation_of_the_last_cut_its_position_passed() {
        let generations = Generations::default();
        let ada = "p_".to_owned() + &"a".repeat(32);
        let bob = "p_".to_owned() + &"b".repeat(32);
        let erased = |generation| {
            [ErasedIdentifier {
                pseudonym: ada.clone(),
                generation,
            }]
        };
        generations.record(&erased(1), &[10, 4]);
        generations.record(&erased(2), &[20, 9]);
        let view = generations.view();
        assert_eq!(view.generation(&ada, 0, 10), 0, "at the cut");
        assert_eq!(view.generation(&ada, 0, 11), 1);
        assert_eq!(view.generation(&ada, 1, 5), 1);
        assert_eq!(view.generation(&ada, 1, 10), 2);
        assert_eq!(
            view.generation(&ada, 2, 0),
            2,
            "a partition the cut had not seen"
        );
        assert_eq!(view.generation(&bob, 0, 99), 0);
        let mut customer = proto::CustomerIdentifiers {
            email: ada.clone(),
            customer_id: bob.clone(),
            email_sealed: "sealed:x".into(),
            ..Default::default()
        };
        view.rename(&mut customer, 0, 15);
        assert_eq!(customer.email, format!("{ada}~1"));
        assert_eq!(
            (
                customer.customer_id.as_str(),
                customer.email_sealed.as_str()
            ),
            (bob.as_str(), "sealed:x")
        );
        // Renaming again is the same
        view.rename(&mut customer, 0, 15);
        assert_eq!(customer.email, format!("{ada}~1"));
    }

    #[test]
    fn an_erasure_waits_for_the_batch_in_progress_or_gives_up() {
        let generations = Generations::default();
        let held = generations.batch();
        assert!(
            generations
                .between_batches(Duration::from_millis(20))
                .is_none()
        );
        drop(held);
        assert!(
            generations
                .between_batches(Duration::from_millis(20))
                .is_some()
        );
    }
}
