//! detour's Kubernetes adapter: between the API server and `detour_core`.
//!
//! It holds the Kubernetes client code (kube, kube-runtime, k8s-openapi) and nothing
//! that decides: what a table or a scheme's state is comes from `detour_core`. It must
//! not import the binary (`detour`: CLI, HTTP servers, health probing); what it needs at
//! run time it is handed (the controller's decisions as a watch channel) or owns
//! ([`metrics`]). Files it may read (a CA directory) and write (`detour crds --out`).
//!
//! * [`crds`] — the CRDs of the documents, printed from the Rust types.
//! * [`index`] (pure) — watch events of FailoverSchemes, MemberClusters, kubeconfig
//!   Secrets and each member cluster's Services and EndpointSlices ([`discovery`]) become
//!   the same documents a file would hold, fed to the same [`detour_core::index::Index`].
//! * [`source`] — the watches themselves (kube-runtime), one set per member cluster
//!   through its kubeconfig Secret ([`client`]), pumping events into the index.
//! * [`lease`] — leader election on a `coordination.k8s.io/v1` Lease: every replica
//!   serves tables, only the leader writes.
//! * [`status`] — the leader writes each object's Kubernetes status (server-side apply)
//!   from the controller's decision, and [`events`]: failovers, failbacks, rejections.
//! * [`secrets`] — the leader writes each member cluster's mTLS material as a Secret and
//!   rotates it before it expires; [`issuer`] issues it with `detour certs init`'s CA.
//! * [`register`] — `detour cluster register`: what registering a member cluster takes.
//! * [`run`] — `serve --kubernetes`: the source, and the leader-elected writers (lease,
//!   status, Secrets) as a task group of their own.
//! * [`metrics`] — the `detour_kube_*` metrics, registered by the binary.
#![forbid(unsafe_code)]

pub mod client;
pub mod crds;
pub mod discovery;
pub mod error;
pub mod events;
pub mod index;
pub mod issuer;
pub mod lease;
pub mod metrics;
pub mod register;
pub mod run;
pub mod secrets;
pub mod source;
pub mod status;

#[cfg(test)]
pub(crate) mod testing;

pub use error::Error;

/// `fieldManager` of every server-side apply detour makes.
pub const FIELD_MANAGER: &str = "detour";
/// Label a Secret in the controller's namespace needs for detour to read it as a member
/// cluster's kubeconfig (detour watches only those, not every Secret of its namespace).
pub const KUBECONFIG_LABEL: &str = "detour.dev/kubeconfig";
