//! Errors of the export registry.

/// A change to the exports was refused.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum NbdError {
    /// no NBD export named {0}
    NotFound(String),
    /// an NBD export named {0} exists already
    Exists(String),
    /// invalid NBD export name {name:?}: {why}
    InvalidName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
}
