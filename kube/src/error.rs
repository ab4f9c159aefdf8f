//! Errors of the Kubernetes side, each with a short label for metrics.

/// What went wrong talking to a Kubernetes API (or preparing to).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("this replica does not hold the lease: it does not write")]
    NotLeader,
    #[error("kubeconfig of member cluster {cluster}: {why}")]
    Kubeconfig { cluster: String, why: String },
    #[error("mTLS material for member cluster {cluster}: {why}")]
    Material { cluster: String, why: String },
}

impl Error {
    /// Short stable label for `detour_kube_errors_total{error=...}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api(kube::Error::Api(_)) => "api_status",
            Error::Api(_) => "api_transport",
            Error::NotLeader => "not_leader",
            Error::Kubeconfig { .. } => "kubeconfig",
            Error::Material { .. } => "material",
        }
    }

    /// The HTTP status the API server answered with, if it answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Error::Api(kube::Error::Api(status)) => Some(status.code),
            _ => None,
        }
    }
}
