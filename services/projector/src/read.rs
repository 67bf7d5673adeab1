//! Reading a projection version: the version one request reads, and the
//! person a customer id belongs to, gathered across the profiles merged
//! into them. Shared by the query API and the scoreboard.
//!
//! A person is read as the merge of their root profile and every profile
//! absorbed into it (see `ProfileState::merge`), so a merge never has to move
//! data between partitions.

use std::collections::{BTreeSet, VecDeque};

use rapport_common::store::Store;
use rapport_common::{Result, keys};
use rapport_projections::customer_view::ProfileState;

/// The projection version one request reads.
pub(crate) struct View<'a> {
    pub(crate) store: &'a Store,
    pub(crate) family: String,
    /// The version's name (the live one when the request named none).
    pub(crate) version: String,
}

fn load_profile(state: &View<'_>, id: &str) -> Result<Option<ProfileState>> {
    match state.store.get(&state.family, &keys::profile(id))? {
        Some(bytes) => Ok(Some(ProfileState::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// One person: the root profile id and every profile that belongs to them.
pub(crate) struct Person {
    pub(crate) root: String,
    pub(crate) members: Vec<(String, ProfileState)>,
}

impl Person {
    /// What to show for `id` (a profile id or identifier of this person):
    /// the sealed token ingest stored beside a pseudonym, the smallest of
    /// the profiles' as their merge keeps it, else `id` itself.
    pub(crate) fn shown(&self, id: &str) -> String {
        self.members
            .iter()
            .filter_map(|(_, profile)| profile.display.get(id))
            .min()
            .map_or_else(|| id.to_owned(), Clone::clone)
    }
}

/// Follows merges from `id` to the person it belongs to now, then gathers
/// every profile absorbed into that person.
pub(crate) fn person_of(state: &View<'_>, id: &str) -> Result<Option<Person>> {
    let Some(mut current) = load_profile(state, id)? else {
        return Ok(None);
    };
    let mut root = id.to_owned();
    let mut chain = vec![(root.clone(), current.clone())];
    // Bounded: merge chains are short, and a cycle would be a bug.
    for _ in 0..64 {
        let Some(next) = current.merged_into.clone() else {
            break;
        };
        root = next;
        match load_profile(state, &root)? {
            Some(profile) => {
                current = profile;
                chain.push((root.clone(), current.clone()));
            }
            // The survivor's partition has not caught up yet.
            None => break,
        }
    }
    let mut members = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<(String, ProfileState)> = chain.into_iter().rev().collect();
    while let Some((member_id, profile)) = queue.pop_front() {
        if !seen.insert(member_id.clone()) {
            continue;
        }
        for absorbed in &profile.absorbed {
            if !seen.contains(absorbed)
                && let Some(absorbed_profile) = load_profile(state, absorbed)?
            {
                queue.push_back((absorbed.clone(), absorbed_profile));
            }
        }
        members.push((member_id, profile));
    }
    Ok(Some(Person { root, members }))
}
