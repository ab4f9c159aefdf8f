//! Where documents come from. Files now; Kubernetes watches (issue 5) feed the same
//! [`crate::index::Index`].

pub mod files;
