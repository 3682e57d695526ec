//! Local stand-ins for the services certrot talks to, used by `certrot demo`, the tests and
//! the benchmarks. Everything here listens on, or writes to, local places only.

pub mod ca;
pub mod fixtures;
pub mod kube;
pub mod run;
pub mod sm;
pub mod stack;
pub mod token;
