//! Issuers: how a new generation of a credential is obtained. `service_manager` holds the
//! Service Manager API client (the pipeline creates a binding per generation with it);
//! `csr` makes self-managed keys and CSRs; `signer` signs them with a local CA, `vault`
//! (Vault / OpenBao PKI) or `command` (an external program), all under the contract in
//! `sign`.

pub(crate) mod command;
pub mod csr;
pub mod service_manager;
pub(crate) mod sign;
pub(crate) mod signer;
pub(crate) mod vault;
