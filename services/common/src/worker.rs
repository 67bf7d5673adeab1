//! The thread a version's worker runs on (a projection rebuild, a
//! re-identification): its failure is logged and shown in its status, and
//! the owner learns how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::status::WorkerStatus;
use crate::{Error, Result};

/// Runs `work` on a thread named `name`. When it fails, the error is logged
/// and recorded in `status`; then `ended` is told the outcome, which the
/// thread returns.
pub fn spawn<T: Send + 'static>(
    name: String,
    status: Arc<WorkerStatus>,
    work: impl FnOnce() -> Result<T> + Send + 'static,
    ended: impl FnOnce(&Result<T>) + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    let worker = name.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let outcome = work();
            if let Err(error) = &outcome {
                tracing::error!(%worker, %error, "worker stopped");
                status.record_error(&error.to_string());
            }
            ended(&outcome);
            outcome
        })
        .map_err(|source| Error::Io {
            context: format!("starting the worker thread {name}"),
            source,
        })
}

/// Asks every worker to stop after its current batch, then waits for all of
/// them, so that they wind down together rather than one after another.
pub fn stop_and_join<'a, T: 'a>(
    workers: impl IntoIterator<Item = (&'a AtomicBool, &'a mut Option<JoinHandle<T>>)>,
) {
    let workers: Vec<_> = workers.into_iter().collect();
    for (stop, _) in &workers {
        stop.store(true, Ordering::Relaxed);
    }
    for (_, thread) in workers {
        if let Some(thread) = thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_worker_shows_its_error_and_reports_how_it_ended() {
        let status = WorkerStatus::new("t");
        let (told, seen) = std::sync::mpsc::channel();
        let thread = spawn(
            "apply-test".to_owned(),
            status.clone(),
            || -> Result<()> { Err(Error::Config("the topic went away".to_owned())) },
            move |outcome| told.send(outcome.is_err()).unwrap(),
        )
        .unwrap();
        assert!(thread.join().unwrap().is_err());
        assert!(seen.recv().unwrap());
        assert_eq!(
            status
                .report()
                .last_error
                .map(|error| error.message)
                .as_deref(),
            Some("configuration: the topic went away")
        );
    }
}
