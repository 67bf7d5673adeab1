//! The feed of profiles changed by committed batches, which views derived
//! in memory from a projection (the analytics scoreboard) follow.

use std::sync::Arc;

/// Profiles changed by committed batches, for views derived in memory from a
/// projection (the analytics scoreboard). Nothing accumulates until someone
/// [`subscribe`](Changes::subscribe)s, so a version nobody scores costs nothing.
#[derive(Clone, Default)]
pub struct Changes(Arc<std::sync::Mutex<Option<std::collections::HashSet<String>>>>);

impl Changes {
    /// Starts collecting changed profile ids (from now on).
    pub fn subscribe(&self) {
        let mut pending = self.0.lock().expect("changes lock");
        pending.get_or_insert_with(Default::default);
    }

    /// Profile ids changed since the last call; empty before `subscribe`.
    pub fn take(&self) -> Vec<String> {
        let mut pending = self.0.lock().expect("changes lock");
        pending
            .as_mut()
            .map(|ids| ids.drain().collect())
            .unwrap_or_default()
    }

    /// Whether someone [`subscribe`](Changes::subscribe)d: until then a
    /// worker does not list what its batches change.
    pub(crate) fn subscribed(&self) -> bool {
        self.0.lock().expect("changes lock").is_some()
    }

    /// Whether anything changed since the last [`take`](Changes::take).
    pub fn pending(&self) -> bool {
        let pending = self.0.lock().expect("changes lock");
        pending.as_ref().is_some_and(|ids| !ids.is_empty())
    }

    /// Whether both are the same feed (of the same worker).
    pub fn same_feed(&self, other: &Changes) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn record(&self, profiles: Vec<String>) {
        if let Some(pending) = self.0.lock().expect("changes lock").as_mut() {
            pending.extend(profiles);
        }
    }
}
