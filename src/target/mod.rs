//! Targets: where the current generation lives for its consumers.
//!
//! Only the directory target exists so far; it is the reference for the others (a
//! consumer never sees a certificate of one generation with the key of another).

pub mod directory;

pub use directory::{DirectoryTarget, TargetError};
