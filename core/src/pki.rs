//! Certificates, as values: who a certificate speaks for ([`identity`]: the
//! `spiffe://detour.dev/...` URI SANs), where `detour certs init` puts each file
//! ([`layout`]: paths only, nothing is read), and the federation CA that issues leaves
//! and decides when to renew them ([`issue`]: PEM in, PEM out; storing them is the
//! caller's, as files or as Kubernetes Secrets).

pub mod identity;
pub mod issue;
pub mod layout;
pub mod sds;
