//! Issuers: how a new generation of a credential is obtained. `service_manager` holds the
//! Service Manager API client; the issuer that creates a binding per generation builds on it.

pub mod service_manager;
