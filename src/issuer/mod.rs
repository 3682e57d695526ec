//! Issuers: how a new generation of a credential is obtained. `service_manager` holds the
//! Service Manager API client (the pipeline creates a binding per generation with it);
//! `csr` makes self-managed keys and CSRs (RFC 4514 subjects); `signer` signs them with a
//! local CA, `vault` (Vault / OpenBao PKI) or `command` (an external program).

pub mod command;
pub mod csr;
pub mod service_manager;
pub mod signer;
pub mod vault;
