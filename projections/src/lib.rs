//! Pure folds of the Rapport log. Nothing here does I/O or reads the clock:
//! the services feed records in and store what comes out, so the same records
//! in the same order always give byte-identical state.

pub mod analytics;
pub mod customer_view;
pub mod identity;
pub mod money;
pub mod time;

/// Errors of the pure layer: only decoding stored state can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stored state has unknown format version {0}")]
    UnknownFormat(u8),
    #[error("stored state is corrupt: {0}")]
    Corrupt(#[from] postcard::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
