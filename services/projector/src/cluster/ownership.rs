//! The fold of the projectors topic, and who answers for each partition.
//! Pure: the caller passes the time, so the rules are tested without a
//! clock or a broker.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use rapport_common::admin::{Ownership, PartitionOwners, ProjectorReport};
use rapport_projections::time::format_rfc3339;
use rapport_proto::v1::ProjectorAnnounced;

/// The latest announcement of every projector, by URL.
#[derive(Debug, Default, Clone)]
pub struct Announcements {
    by_url: BTreeMap<String, ProjectorAnnounced>,
}

impl Announcements {
    /// Folds one record of the projectors topic. An empty payload (a
    /// tombstone) or an announcement owning nothing removes its process.
    pub fn apply(&mut self, key: &[u8], payload: &[u8]) -> Result<(), String> {
        let url = std::str::from_utf8(key).map_err(|_| "a key that is not UTF-8".to_owned())?;
        if payload.is_empty() {
            self.by_url.remove(url);
            return Ok(());
        }
        let announced = ProjectorAnnounced::decode(payload)
            .map_err(|error| format!("an announcement that does not decode: {error}"))?;
        if announced.url != url {
            return Err(format!(
                "an announcement of {} under the key {url}",
                announced.url
            ));
        }
        self.insert(announced);
        Ok(())
    }

    /// Takes `announced` as its process's latest word.
    pub fn insert(&mut self, announced: ProjectorAnnounced) {
        if announced.owned.is_empty() {
            self.by_url.remove(&announced.url);
        } else {
            self.by_url.insert(announced.url.clone(), announced);
        }
    }

    /// The announcements whose lease holds at `now_ms` and that read
    /// `customer_topic`, with `mine` in place of whatever the topic last
    /// said of its process.
    fn holding<'a>(
        &'a self,
        mine: &'a ProjectorAnnounced,
        customer_topic: &str,
        now_ms: i64,
    ) -> impl Iterator<Item = &'a ProjectorAnnounced> {
        self.by_url
            .values()
            .filter(move |other| other.url != mine.url)
            .filter(move |other| {
                other.customer_topic == customer_topic
                    && other.announced_at_ms.saturating_add(other.lease_ms) > now_ms
            })
            .chain(std::iter::once(mine))
    }

    /// Who answers for each of `mine.partition_count` partitions at
    /// `now_ms`: among the processes serving a partition (read to its end),
    /// the one started last, so that starting a new owner moves a
    /// partition; a partition no one serves yet is read here if this
    /// process owns it (as a single process reads while it catches up).
    pub fn ownership(&self, mine: &ProjectorAnnounced, now_ms: i64) -> Routes {
        let count = mine.partition_count.max(0);
        let mut owners: Vec<Vec<&ProjectorAnnounced>> = vec![Vec::new(); count as usize];
        let mut holding: Vec<&ProjectorAnnounced> =
            self.holding(mine, &mine.customer_topic, now_ms).collect();
        holding.sort_by(|left, right| left.url.cmp(&right.url));
        for announced in &holding {
            for partition in &announced.owned {
                if let Some(slot) = owners.get_mut(*partition as usize) {
                    slot.push(announced);
                }
            }
        }
        let mut routes = Vec::with_capacity(count as usize);
        let mut report = Ownership {
            me: mine.url.clone(),
            partition_count: count,
            projectors: holding.iter().map(|a| report_of(a)).collect(),
            ..Ownership::default()
        };
        for (partition, owners) in owners.iter().enumerate() {
            let partition = partition as i32;
            let served_by = owners
                .iter()
                .filter(|owner| owner.serving.contains(&partition))
                .max_by_key(|owner| (owner.started_at_ms, owner.url.as_str()));
            let route = match served_by {
                Some(owner) if owner.url == mine.url => Route::Local,
                Some(owner) => Route::Remote(owner.url.clone()),
                None if owners.iter().any(|owner| owner.url == mine.url) => Route::Local,
                None if owners.is_empty() => Route::Unowned,
                None => Route::CatchingUp(owners.iter().map(|owner| owner.url.clone()).collect()),
            };
            match &route {
                Route::Unowned => report.unowned.push(partition),
                Route::CatchingUp(_) => report.catching_up.push(partition),
                Route::Local | Route::Remote(_) => {}
            }
            if owners.len() > 1 {
                report.overlapping.push(partition);
            }
            report.partitions.push(PartitionOwners {
                partition,
                owners: owners.iter().map(|owner| owner.url.clone()).collect(),
                served_by: match &route {
                    Route::Local => Some(mine.url.clone()),
                    Route::Remote(url) => Some(url.clone()),
                    Route::Unowned | Route::CatchingUp(_) => None,
                },
            });
            routes.push(route);
        }
        Routes { routes, report }
    }
}

fn report_of(announced: &ProjectorAnnounced) -> ProjectorReport {
    ProjectorReport {
        url: announced.url.clone(),
        owned: sorted(&announced.owned),
        serving: sorted(&announced.serving),
        live_version: announced.live_version.clone(),
        started_at: format_rfc3339(announced.started_at_ms),
        announced_at: format_rfc3339(announced.announced_at_ms),
    }
}

fn sorted(partitions: &[i32]) -> Vec<i32> {
    partitions
        .iter()
        .copied()
        .collect::<BTreeSet<i32>>()
        .into_iter()
        .collect()
}

/// Where reads of one partition go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This process's own store.
    Local,
    /// The query API of the process at this URL.
    Remote(String),
    /// No process owns the partition.
    Unowned,
    /// Owned by these processes, none of which has read it to its end yet.
    CatchingUp(Vec<String>),
}

/// Every partition's route, and the report the status shows.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
    pub report: Ownership,
}

impl Routes {
    /// Where reads of `partition` go; a partition past the count is
    /// nobody's.
    pub fn route(&self, partition: i32) -> &Route {
        usize::try_from(partition)
            .ok()
            .and_then(|index| self.routes.get(index))
            .unwrap_or(&Route::Unowned)
    }

    pub fn partition_count(&self) -> i32 {
        self.report.partition_count
    }

    /// Whether every partition is read here.
    pub fn all_local(&self) -> bool {
        (0..self.partition_count()).all(|partition| *self.route(partition) == Route::Local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "rapport.events.customer.v1";

    fn announced(
        url: &str,
        owned: &[i32],
        serving: &[i32],
        started_at_ms: i64,
    ) -> ProjectorAnnounced {
        ProjectorAnnounced {
            url: url.into(),
            owned: owned.to_vec(),
            serving: serving.to_vec(),
            partition_count: 4,
            customer_topic: TOPIC.into(),
            live_version: "v1".into(),
            started_at_ms,
            announced_at_ms: 10_000,
            lease_ms: 5_000,
        }
    }

    fn fold(records: &[ProjectorAnnounced]) -> Announcements {
        let mut announcements = Announcements::default();
        for record in records {
            announcements
                .apply(record.url.as_bytes(), &record.encode_to_vec())
                .expect("folds");
        }
        announcements
    }

    #[test]
    fn each_partition_is_read_where_it_is_served() {
        let me = announced("http://a", &[0, 1], &[0, 1], 1);
        let others = fold(&[announced("http://b", &[2, 3], &[2, 3], 2)]);
        let routes = others.ownership(&me, 12_000);
        assert_eq!(routes.route(0), &Route::Local);
        assert_eq!(routes.route(3), &Route::Remote("http://b".into()));
        assert_eq!(routes.route(4), &Route::Unowned);
        assert_eq!(routes.route(-1), &Route::Unowned);
        let report = &routes.report;
        assert!(report.unowned.is_empty() && report.overlapping.is_empty());
        assert_eq!(report.partitions[2].served_by.as_deref(), Some("http://b"));
        assert_eq!(report.projectors.len(), 2);
    }

    #[test]
    fn a_lapsed_lease_or_a_stop_leaves_partitions_unowned() {
        let me = announced("http://a", &[0, 1], &[0, 1], 1);
        let others = fold(&[
            announced("http://b", &[2], &[2], 2),
            announced("http://c", &[3], &[3], 2),
        ]);
        // b's lease ends at 15 000.
        let routes = others.ownership(&me, 15_000);
        assert_eq!(routes.report.unowned, vec![2, 3]);
        // c stops: an announcement owning nothing.
        let mut others = others;
        others.insert(announced("http://c", &[], &[], 2));
        let routes = others.ownership(&me, 12_000);
        assert_eq!(routes.route(2), &Route::Remote("http://b".into()));
        assert_eq!(routes.report.unowned, vec![3]);
        // A tombstone removes b too.
        others.apply(b"http://b", b"").expect("a tombstone folds");
        assert_eq!(others.ownership(&me, 12_000).report.unowned, vec![2, 3]);
    }

    #[test]
    fn the_latest_serving_process_answers_and_overlaps_are_reported() {
        // b owns 1 too but has not read it to its end: a still answers.
        let me = announced("http://a", &[0, 1], &[0, 1], 1);
        let others = fold(&[announced("http://b", &[1, 2, 3], &[2, 3], 2)]);
        let routes = others.ownership(&me, 12_000);
        assert_eq!(routes.route(1), &Route::Local);
        assert_eq!(routes.report.overlapping, vec![1]);
        // Once b serves it, b (started later) answers.
        let others = fold(&[announced("http://b", &[1, 2, 3], &[1, 2, 3], 2)]);
        assert_eq!(
            others.ownership(&me, 12_000).route(1),
            &Route::Remote("http://b".into())
        );
    }

    #[test]
    fn a_partition_only_others_catch_up_on_is_not_read() {
        let me = announced("http://a", &[0, 1], &[0], 1);
        let others = fold(&[announced("http://b", &[2, 3], &[3], 2)]);
        let routes = others.ownership(&me, 12_000);
        // a reads its own partition while it catches up, as one process does.
        assert_eq!(routes.route(1), &Route::Local);
        assert_eq!(routes.route(2), &Route::CatchingUp(vec!["http://b".into()]));
        assert_eq!(routes.report.catching_up, vec![2]);
    }

    #[test]
    fn other_topics_and_bad_records_are_not_owners() {
        let me = announced("http://a", &[0, 1], &[0, 1], 1);
        let mut elsewhere = announced("http://b", &[2, 3], &[2, 3], 2);
        elsewhere.customer_topic = "another.customer.topic".into();
        let mut others = fold(&[elsewhere]);
        assert_eq!(others.ownership(&me, 12_000).report.unowned, vec![2, 3]);
        assert!(others.apply(b"http://c", b"\xff\xff\xff").is_err());
        let wrong_key = announced("http://d", &[2], &[2], 2).encode_to_vec();
        assert!(others.apply(b"http://e", &wrong_key).is_err());
        assert!(others.apply(&[0xff], &wrong_key).is_err());
    }
}
