//! Reading a projection version: the version one request reads, and the
//! person a customer id belongs to, gathered across the profiles merged
//! into them. Shared by the query API and the scoreboard.
//!
//! A person is read as the merge of their root profile and every profile
//! absorbed into it (see `ProfileState::merge`), so a merge never has to move
//! data between partitions. Profiles on partitions another projector
//! process serves are read from it (see `cluster`): every key a profile's
//! records write lives on that profile's partition.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use rapport_common::store::Store;
use rapport_common::{Error, Result, keys};
use rapport_projections::analytics::population::PopulationShare;
use rapport_projections::customer_view::ProfileState;
use rapport_proto::internal::{
    PrefixScan, ReadAnswer, ReadRequest, SegmentAnswer, SegmentAsk, ShareAsk,
};

use crate::cluster::Cluster;
use crate::cluster::ownership::Route;

/// The projection version one request reads.
pub(crate) struct View<'a> {
    pub(crate) store: &'a Store,
    pub(crate) family: String,
    /// The version's name (the live one when the request named none).
    pub(crate) version: String,
    /// Where reads of partitions other processes serve go; `None` when
    /// every partition is read here.
    pub(crate) peers: Option<Peers>,
    /// Values of other processes' keys read beforehand in one request each
    /// (see [`View::prefetch`]); `None` for a found key without value.
    pub(crate) prefetched: Option<Arc<Prefetched>>,
}

/// Keys of other processes read ahead, with what they held.
pub(crate) type Prefetched = std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>;

/// The other projector processes, for one request.
#[derive(Clone)]
pub(crate) struct Peers {
    pub(crate) cluster: Arc<Cluster>,
    /// The routes as the request began: every read and fan-out of one
    /// request follows the same routes, so a figure gathered while a
    /// partition moves counts its people once.
    pub(crate) routes: Arc<crate::cluster::ownership::Routes>,
    /// The version as the request named it; empty for each process's live
    /// one.
    pub(crate) asked: String,
}

/// The people an answer about the population counts: those whose root
/// profile lies on some partitions, so that every person is counted by
/// exactly one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Served {
    partition_count: i32,
    /// `None`: every partition.
    partitions: Option<HashSet<i32>>,
}

impl Served {
    pub(crate) fn everyone() -> Self {
        Served {
            partition_count: 1,
            partitions: None,
        }
    }

    pub(crate) fn partitions(partitions: &[i32], partition_count: i32) -> Self {
        Served {
            partition_count: partition_count.max(1),
            partitions: Some(partitions.iter().copied().collect()),
        }
    }

    pub(crate) fn is_everyone(&self) -> bool {
        self.partitions.is_none()
    }

    /// Whether the person whose root profile is `id` is counted.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.partitions.as_ref().is_none_or(|partitions| {
            partitions.contains(&rapport_common::partitioning::partition_of(
                id.as_bytes(),
                self.partition_count,
            ))
        })
    }
}

/// Most point reads one `POST /v1/internal/reads` may hold.
pub(crate) const MAX_GETS: usize = 10_000;
/// Most scans one request may hold, and most entries one scan may return.
pub(crate) const MAX_SCANS: usize = 1_000;
pub(crate) const MAX_SCAN_LIMIT: u32 = 10_000;

/// One other process's answer, with its URL.
type Asked = Result<(String, ReadAnswer)>;

/// Where the keys of one profile are read.
enum Place {
    Here,
    There { url: String, partition: i32 },
}

impl View<'_> {
    /// Whether the profile `id` lies on a partition this process owns
    /// (every one, when no other process serves any).
    pub(crate) fn owns(&self, id: &str) -> bool {
        self.peers
            .as_ref()
            .is_none_or(|peers| peers.cluster.owns(peers.cluster.partition_of(id)))
    }

    /// Whether this process owns every partition: its store holds every
    /// profile it is asked about.
    pub(crate) fn owns_everything(&self) -> bool {
        self.peers.as_ref().is_none_or(|peers| {
            let count = peers.routes.partition_count();
            (0..count).all(|partition| peers.cluster.owns(partition))
        })
    }

    /// Whether other processes serve some partitions: population figures
    /// then gather their shares.
    pub(crate) fn shared(&self) -> bool {
        self.peers.is_some()
    }

    /// The people this process counts in population figures: those on the
    /// partitions it serves.
    pub(crate) fn served_here(&self) -> Served {
        let Some(peers) = &self.peers else {
            return Served::everyone();
        };
        let routes = &peers.routes;
        let local: Vec<i32> = (0..routes.partition_count())
            .filter(|partition| *routes.route(*partition) == Route::Local)
            .collect();
        Served::partitions(&local, routes.partition_count())
    }

    /// The other processes' shares of the population at `as_of`, merged;
    /// `None` when no other process serves any partition. Fails, naming
    /// them, when some partitions cannot be asked: a figure over part of
    /// the population is never given as the whole's.
    pub(crate) fn others_share(&self, as_of: i64) -> Result<Option<PopulationShare>> {
        if self.peers.is_none() {
            return Ok(None);
        }
        let answers = self.ask_everyone(|request| {
            request.share = Some(ShareAsk { as_of_day: as_of });
        })?;
        let mut merged = PopulationShare::new(as_of);
        for (url, answer) in answers {
            let share = answer
                .share
                .ok_or_else(|| Error::Unavailable(format!("{url} answered without its share")))?;
            let share = PopulationShare::from_wire(&share).map_err(|why| {
                Error::Unavailable(format!("{url} sent a share that is not one: {why}"))
            })?;
            if share.as_of != as_of {
                return Err(Error::Unavailable(format!(
                    "{url} sent its share of another day"
                )));
            }
            merged.merge(&share);
        }
        Ok(Some(merged))
    }

    /// The other processes' segment figures for `ask`; empty when no other
    /// process serves any partition.
    pub(crate) fn others_segments(&self, ask: &SegmentAsk) -> Result<Vec<SegmentAnswer>> {
        if self.peers.is_none() {
            return Ok(Vec::new());
        }
        self.ask_everyone(|request| request.segments = Some(ask.clone()))?
            .into_iter()
            .map(|(url, answer)| {
                answer.segments.ok_or_else(|| {
                    Error::Unavailable(format!("{url} answered without its segments"))
                })
            })
            .collect()
    }

    /// Every other process's answer to the figure `ask` (encoded), with
    /// its URL; empty when no other process serves any partition.
    pub(crate) fn others_figures(&self, ask: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
        if self.peers.is_none() {
            return Ok(Vec::new());
        }
        Ok(self
            .ask_everyone(|request| request.figure = ask.to_vec())?
            .into_iter()
            .map(|(url, answer)| (url, answer.figure))
            .collect())
    }

    /// Sends a request made by `fill` to every other process serving
    /// partitions; every answer, or the first failure (partitions no one
    /// serves included).
    fn ask_everyone(&self, fill: impl Fn(&mut ReadRequest)) -> Result<Vec<(String, ReadAnswer)>> {
        let (answers, unreachable) = self.fan_out(fill);
        unreachable?;
        answers.into_iter().collect()
    }

    fn place_of(&self, id: &str) -> Result<Place> {
        let Some(peers) = &self.peers else {
            return Ok(Place::Here);
        };
        let partition = peers.cluster.partition_of(id);
        match peers.routes.route(partition) {
            Route::Local => Ok(Place::Here),
            Route::Remote(url) => Ok(Place::There {
                url: url.clone(),
                partition,
            }),
            Route::Unowned => Err(Error::Unavailable(format!(
                "partition {partition} of the customer topic has no projector serving it; reads of people with a profile there answer 503 until one owns it (see /v1/admin/status)"
            ))),
            Route::CatchingUp(urls) => Err(Error::Unavailable(format!(
                "partition {partition} of the customer topic is still being read to its end by {}; ask again once it is (see /v1/admin/status)",
                urls.join(", ")
            ))),
        }
    }

    fn request(&self, partitions: Vec<i32>) -> ReadRequest {
        ReadRequest {
            version: self
                .peers
                .as_ref()
                .map(|peers| peers.asked.clone())
                .unwrap_or_default(),
            partitions,
            ..ReadRequest::default()
        }
    }

    fn ask(&self, url: &str, request: &ReadRequest) -> Result<ReadAnswer> {
        let peers = self.peers.as_ref().ok_or_else(|| {
            Error::Unavailable("a read for another process without peers".to_owned())
        })?;
        peers.cluster.ask(url, request)
    }

    /// The same view, with `prefetched` answering reads of other
    /// processes' keys it holds.
    pub(crate) fn with_prefetched(&self, prefetched: Prefetched) -> View<'_> {
        View {
            store: self.store,
            family: self.family.clone(),
            version: self.version.clone(),
            peers: self.peers.clone(),
            prefetched: Some(Arc::new(prefetched)),
        }
    }

    /// The values of `keys`, each written by the records of a profile
    /// (`(profile id, key)`) that other processes hold, read with one
    /// request per process (of at most `MAX_GETS` keys each). Keys read
    /// here are left out.
    pub(crate) fn prefetch(&self, keys: &[(String, Vec<u8>)]) -> Result<Prefetched> {
        let mut by_server: std::collections::BTreeMap<(String, i32), Vec<Vec<u8>>> =
            std::collections::BTreeMap::new();
        for (id, key) in keys {
            if let Place::There { url, partition } = self.place_of(id)? {
                by_server
                    .entry((url, partition))
                    .or_default()
                    .push(key.clone());
            }
        }
        let mut by_url: std::collections::BTreeMap<String, (Vec<i32>, Vec<Vec<u8>>)> =
            std::collections::BTreeMap::new();
        for ((url, partition), keys) in by_server {
            let (partitions, all) = by_url.entry(url).or_default();
            partitions.push(partition);
            all.extend(keys);
        }
        let mut prefetched = Prefetched::new();
        for (url, (partitions, keys)) in by_url {
            for chunk in keys.chunks(MAX_GETS) {
                let mut request = self.request(partitions.clone());
                request.gets = chunk.to_vec();
                let answer = self.ask(&url, &request)?;
                if answer.values.len() != chunk.len() {
                    return Err(Error::Unavailable(format!(
                        "{url} answered {} of {} reads",
                        answer.values.len(),
                        chunk.len()
                    )));
                }
                for (key, value) in chunk.iter().zip(answer.values) {
                    prefetched.insert(key.clone(), value.found.then_some(value.value));
                }
            }
        }
        Ok(prefetched)
    }

    /// The value of `key`, which records of the profile `id` write.
    pub(crate) fn get_of(&self, id: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.place_of(id)? {
            Place::Here => self.store.get(&self.family, key),
            Place::There { .. }
                if let Some(value) = self
                    .prefetched
                    .as_ref()
                    .and_then(|prefetched| prefetched.get(key)) =>
            {
                Ok(value.clone())
            }
            Place::There { url, partition } => {
                let mut request = self.request(vec![partition]);
                request.gets.push(key.to_vec());
                let answer = self.ask(&url, &request)?;
                let value = answer.values.into_iter().next().ok_or_else(|| {
                    Error::Unavailable(format!("{url} answered a read without its value"))
                })?;
                Ok(value.found.then_some(value.value))
            }
        }
    }

    /// Keys under `prefix`, which records of the profile `id` write, largest
    /// first, before `before`, at most `limit` (see
    /// [`Store::scan_prefix_reverse`]).
    pub(crate) fn scan_of(
        &self,
        id: &str,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.place_of(id)? {
            Place::Here => self
                .store
                .scan_prefix_reverse(&self.family, prefix, before, limit),
            Place::There { url, partition } => {
                let mut request = self.request(vec![partition]);
                request.scans.push(PrefixScan {
                    prefix: prefix.to_vec(),
                    before: before.map(<[u8]>::to_vec).unwrap_or_default(),
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                });
                let answer = self.ask(&url, &request)?;
                let scan = answer.scans.into_iter().next().ok_or_else(|| {
                    Error::Unavailable(format!("{url} answered a scan without its entries"))
                })?;
                Ok(scan
                    .entries
                    .into_iter()
                    .map(|entry| (entry.key, entry.value))
                    .collect())
            }
        }
    }

    /// The value of `key`, which a record on any partition may have
    /// written (the identifier index: the record that first linked an
    /// identifier writes it, whichever profile that was). Read here first,
    /// then from every process serving other partitions at once; not found
    /// only when every partition could be asked.
    pub(crate) fn get_anywhere(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.store.get(&self.family, key)?
            && held(key, &value, |id| self.owns(id))
        {
            return Ok(Some(value));
        }
        let (answers, unreachable) = self.fan_out(|request| request.gets.push(key.to_vec()));
        let mut failure = None;
        for answer in answers {
            match answer {
                // A key is written on one partition only: found is final.
                Ok((_, answer)) => {
                    if let Some(value) = answer.values.into_iter().find(|value| value.found) {
                        return Ok(Some(value.value));
                    }
                }
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => unreachable.map(|()| None),
        }
    }

    /// The `limit` largest keys under `prefix` on every partition: a list
    /// every partition adds to (identifier conflicts).
    pub(crate) fn scan_everywhere(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = scan_held(self.store, &self.family, prefix, None, limit, |id| {
            self.owns(id)
        })?;
        let (answers, unreachable) = self.fan_out(|request| {
            request.scans.push(PrefixScan {
                prefix: prefix.to_vec(),
                before: Vec::new(),
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
            });
        });
        unreachable?;
        for answer in answers {
            for scan in answer?.1.scans {
                entries.extend(
                    scan.entries
                        .into_iter()
                        .map(|entry| (entry.key, entry.value)),
                );
            }
        }
        entries.sort_by(|left, right| right.0.cmp(&left.0));
        entries.dedup_by(|left, right| left.0 == right.0);
        entries.truncate(limit);
        Ok(entries)
    }

    /// Sends a request made by `fill` to every other process serving
    /// partitions, at once; their answers, and an error naming the
    /// partitions no one serves, if any.
    fn fan_out(&self, fill: impl Fn(&mut ReadRequest)) -> (Vec<Asked>, Result<()>) {
        let Some(peers) = &self.peers else {
            return (Vec::new(), Ok(()));
        };
        let routes = &peers.routes;
        let unreachable: Vec<i32> = (0..routes.partition_count())
            .filter(|partition| {
                matches!(
                    routes.route(*partition),
                    Route::Unowned | Route::CatchingUp(_)
                )
            })
            .collect();
        let asks: Vec<(String, ReadRequest)> = crate::cluster::servers(routes)
            .into_iter()
            .map(|(url, partitions)| {
                let mut request = self.request(partitions);
                fill(&mut request);
                (url, request)
            })
            .collect();
        let answers = std::thread::scope(|scope| {
            let asking: Vec<_> = asks
                .iter()
                .map(|(url, request)| {
                    scope.spawn(|| self.ask(url, request).map(|answer| (url.clone(), answer)))
                })
                .collect();
            asking
                .into_iter()
                .map(|asked| {
                    asked.join().unwrap_or_else(|_| {
                        Err(Error::Unavailable(
                            "a read of another process broke".to_owned(),
                        ))
                    })
                })
                .collect()
        });
        let reachable = if unreachable.is_empty() {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "partitions {unreachable:?} of the customer topic have no projector serving them yet, so the answer would miss what they hold (see /v1/admin/status)"
            )))
        };
        (answers, reachable)
    }
}

/// The profile whose record wrote an entry that any partition may hold
/// (an identifier's owner, a conflict's claimant); `None` for entries
/// read by the profile they belong to.
fn writer_of(key: &[u8], value: &[u8]) -> Option<String> {
    match key.first() {
        Some(&keys::IDENTIFIER) => Some(String::from_utf8_lossy(value).into_owned()),
        Some(&keys::CONFLICT) => keys::decode_conflict(key)
            .ok()
            .map(|(_, claimant, _)| claimant),
        _ => None,
    }
}

/// Whether this process answers for an entry of its store: one whose
/// writer's partition it owns (`owns`). A process keeps the entries of
/// partitions it gave up (see `partitions_http`); they are no longer its
/// to answer, and may be out of date.
pub(crate) fn held(key: &[u8], value: &[u8], owns: impl Fn(&str) -> bool) -> bool {
    writer_of(key, value).is_none_or(|writer| owns(&writer))
}

/// Keys under `prefix` this process answers for (see [`held`]), largest
/// first, before `before`, at most `limit`.
pub(crate) fn scan_held(
    store: &Store,
    family: &str,
    prefix: &[u8],
    before: Option<&[u8]>,
    limit: usize,
    owns: impl Fn(&str) -> bool,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut kept = Vec::new();
    let mut cursor = before.map(<[u8]>::to_vec);
    while kept.len() < limit {
        let page = store.scan_prefix_reverse(family, prefix, cursor.as_deref(), limit)?;
        let exhausted = page.len() < limit;
        cursor = page.last().map(|(key, _)| key.clone());
        kept.extend(
            page.into_iter()
                .filter(|(key, value)| held(key, value, &owns)),
        );
        if exhausted || cursor.is_none() {
            break;
        }
    }
    kept.truncate(limit);
    Ok(kept)
}

fn load_profile(state: &View<'_>, id: &str) -> Result<Option<ProfileState>> {
    match state.get_of(id, &keys::profile(id))? {
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
