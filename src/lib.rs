//! certrot: keeps X.509 client credentials for SAP BTP alive.
//!
//! See `docs/architecture.md` for the code map and the invariants each module upholds.

pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
#[cfg(feature = "sandbox")]
pub mod demo;
pub mod dn;
pub mod fsutil;
pub mod generation;
pub mod health;
pub mod hooks;
pub mod inputs;
pub mod issuer;
pub mod lock;
pub mod logging;
pub mod manual;
pub mod names;
pub mod net;
pub mod policy;
pub mod rotate;
pub mod rt;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod servicekey;
pub mod state;
pub mod status;
pub mod store;
pub mod text;
pub mod units;
pub mod x509;
