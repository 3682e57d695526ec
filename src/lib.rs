//! certrot: keeps X.509 client credentials for SAP BTP alive.
//!
//! See `docs/architecture.md` for the code map and the invariants each module upholds.

pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
#[cfg(feature = "sandbox")]
pub(crate) mod demo;
pub mod dn;
pub(crate) mod fsutil;
pub mod generation;
pub(crate) mod health;
pub(crate) mod hooks;
pub mod inputs;
pub mod issuer;
pub mod lock;
pub(crate) mod logging;
pub mod manual;
pub(crate) mod names;
pub(crate) mod net;
pub mod policy;
pub mod rotate;
pub mod rt;
#[cfg(feature = "sandbox")]
pub(crate) mod sandbox;
pub mod servicekey;
pub mod state;
pub(crate) mod status;
pub mod store;
pub(crate) mod system_roots;
pub(crate) mod text;
pub mod units;
pub(crate) mod vault;
pub mod x509;
