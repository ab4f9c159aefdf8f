//! Where documents come from. Files now; Kubernetes watches (issue 5) feed the same
//! [`detour_core::index::Index`].

pub mod files;
