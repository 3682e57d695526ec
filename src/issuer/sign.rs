//! What every signer is given and how it fails: the contract between the `csr` issuer and
//! the signers (`local-ca`, `vault`, `command`).

/// Why a CSR was not signed.
#[derive(Debug, thiserror::Error)]
#[error("signer {signer}: {message}")]
pub struct SignError {
    pub signer: String,
    pub message: String,
}

/// What a signer may tell the outside about the request.
#[derive(Clone, Debug)]
pub struct SignRequest<'a> {
    pub csr_pem: &'a str,
    pub credential: &'a str,
    /// The requested subject (RFC 4514, as configured).
    pub subject: &'a str,
    /// When it is signed (the caller's clock): a local CA's validity starts here.
    pub now: time::OffsetDateTime,
}
