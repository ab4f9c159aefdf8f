//! Who a certificate speaks for. Every certificate detour issues carries exactly one
//! identity as a URI subject alternative name in the SPIFFE form
//! `spiffe://detour.dev/<subject>/<role>`:
//!
//! | identity | URI SAN |
//! |---|---|
//! | gateway of cluster C (server) | `spiffe://detour.dev/cluster/C/gateway` |
//! | C's Envoy calling other gateways (client) | `spiffe://detour.dev/cluster/C/envoy` |
//! | C's Envoy fetching its table (client) | `spiffe://detour.dev/cluster/C/table` |
//! | the controller's table API (server) | `spiffe://detour.dev/controller/server` |
//! | the controller's health probes (client) | `spiffe://detour.dev/controller/probe` |
//!
//! The common name repeats it for people (`C gateway`, `detour controller probe`); only
//! the URI is ever used to decide anything. Cluster names are DNS subdomains (validated),
//! so they never contain `/`.

use std::fmt;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The SPIFFE trust domain of every detour federation.
pub const TRUST_DOMAIN: &str = "detour.dev";

/// What a member cluster's certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClusterRole {
    /// The east-west gateway's server certificate.
    Gateway,
    /// The cluster's Envoy calling other clusters' gateways.
    Envoy,
    /// The cluster's Envoy fetching its table from the controller.
    Table,
}

/// What a controller certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ControllerRole {
    /// The table API's server certificate.
    Server,
    /// Health probes through the gateways.
    Probe,
}

impl ClusterRole {
    pub const ALL: [ClusterRole; 3] =
        [ClusterRole::Gateway, ClusterRole::Envoy, ClusterRole::Table];

    pub fn as_str(self) -> &'static str {
        match self {
            ClusterRole::Gateway => "gateway",
            ClusterRole::Envoy => "envoy",
            ClusterRole::Table => "table",
        }
    }

    fn parse(text: &str) -> Option<ClusterRole> {
        ClusterRole::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl ControllerRole {
    pub const ALL: [ControllerRole; 2] = [ControllerRole::Server, ControllerRole::Probe];

    pub fn as_str(self) -> &'static str {
        match self {
            ControllerRole::Server => "server",
            ControllerRole::Probe => "probe",
        }
    }

    fn parse(text: &str) -> Option<ControllerRole> {
        ControllerRole::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    Cluster { cluster: String, role: ClusterRole },
    Controller(ControllerRole),
}

impl Identity {
    pub fn cluster(cluster: &str, role: ClusterRole) -> Identity {
        Identity::Cluster {
            cluster: cluster.to_string(),
            role,
        }
    }

    /// `spiffe://detour.dev/...`
    pub fn uri(&self) -> String {
        match self {
            Identity::Cluster { cluster, role } => {
                format!(
                    "spiffe://{TRUST_DOMAIN}/cluster/{cluster}/{}",
                    role.as_str()
                )
            }
            Identity::Controller(role) => {
                format!("spiffe://{TRUST_DOMAIN}/controller/{}", role.as_str())
            }
        }
    }

    /// The subject's common name, for people reading the certificate.
    pub fn common_name(&self) -> String {
        match self {
            Identity::Cluster { cluster, role } => format!("{cluster} {}", role.as_str()),
            Identity::Controller(role) => format!("detour controller {}", role.as_str()),
        }
    }

    /// Whether a server or a client presents this certificate.
    pub fn is_server(&self) -> bool {
        matches!(
            self,
            Identity::Cluster {
                role: ClusterRole::Gateway,
                ..
            } | Identity::Controller(ControllerRole::Server)
        )
    }

    /// Parses a URI made by [`Identity::uri`]; anything else is `None`.
    pub fn parse(uri: &str) -> Option<Identity> {
        let path = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?;
        let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        match parts[..] {
            ["cluster", cluster, role] if !cluster.is_empty() => Some(Identity::Cluster {
                cluster: cluster.to_string(),
                role: ClusterRole::parse(role)?,
            }),
            ["controller", role] => Some(Identity::Controller(ControllerRole::parse(role)?)),
            _ => None,
        }
    }

    /// The detour identity of a DER certificate: its one `spiffe://detour.dev/` URI SAN.
    /// `None` when it has none, several, or cannot be parsed.
    pub fn of_certificate(der: &[u8]) -> Option<Identity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut found = uri_sans(&cert)
            .into_iter()
            .filter(|u| u.starts_with("spiffe://"));
        let first = found.next()?;
        if found.next().is_some() {
            return None;
        }
        Identity::parse(&first)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// Every URI subject alternative name of a certificate.
pub fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        let all = [
            Identity::cluster("west", ClusterRole::Gateway),
            Identity::cluster("east.dc1", ClusterRole::Envoy),
            Identity::cluster("south", ClusterRole::Table),
            Identity::Controller(ControllerRole::Server),
            Identity::Controller(ControllerRole::Probe),
        ];
        for id in all {
            assert_eq!(Identity::parse(&id.uri()), Some(id.clone()), "{id}");
        }
        assert_eq!(
            Identity::cluster("west", ClusterRole::Table).uri(),
            "spiffe://detour.dev/cluster/west/table"
        );
    }

    #[test]
    fn foreign_uris_are_no_identity() {
        for bad in [
            "spiffe://example.org/cluster/west/table",
            "spiffe://detour.dev/cluster/west/admin",
            "spiffe://detour.dev/cluster//table",
            "spiffe://detour.dev/cluster/a/b/table",
            "spiffe://detour.dev.evil/cluster/west/table",
            "https://detour.dev/cluster/west/table",
            "spiffe://detour.dev/controller/root",
        ] {
            assert_eq!(Identity::parse(bad), None, "{bad}");
        }
    }
}
