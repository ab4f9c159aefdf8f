//! Where `detour certs init` puts each file, and where `render envoy --certs`,
//! `serve --certs` and `explain --certs` look for them:
//!
//! ```text
//! DIR/ca.crt                        the federation CA (everyone trusts it)
//! DIR/ca.key                        its key (0600; only `certs init` needs it)
//! DIR/trust.crt                     every CA to trust: ca.crt, and during a change of CA
//!                                   the next or the previous one too
//! DIR/ca-next.{crt,key}             the next CA, trusted before it issues anything
//!                                   (`certs init --ca-change begin`)
//! DIR/ca-previous.crt               the CA before, trusted until `--ca-change finish`
//! DIR/controller/server.{crt,key}   the controller's table API (server)
//! DIR/controller/probe.{crt,key}    the controller's health probes through gateways (client)
//! DIR/clusters/C/gateway.{crt,key}  cluster C's east-west gateway (server)
//! DIR/clusters/C/envoy.{crt,key}    C's Envoy calling other clusters' gateways (client)
//! DIR/clusters/C/table.{crt,key}    C's Envoy fetching its table from the controller (client)
//! DIR/clusters/C/sds/gateway/     what C's gateway Envoy mounts: gateway.json, ca.json
//! DIR/clusters/C/sds/client/      what C's ingress Envoy mounts: envoy.json, table.json,
//!                                   ca.json
//! ```
//!
//! Each `sds/` directory holds Envoy SDS `Secret`s (`ROLE.json`: a certificate with its
//! key; `ca.json`: the trust bundle) for one kind of Envoy, so that the gateway's server
//! key is never where only a client needs its own. The rendered Envoy config reads its
//! certificates from them and watches the directory. They are written as Kubernetes
//! writes a Secret volume: the files of one version in a fresh `..VERSION/`, reached
//! through the symlink `..data` (each `NAME.json` is a symlink to `..data/NAME.json`), and
//! a renewal swaps `..data` with one rename. Envoy sees that move and reloads every
//! `Secret` of the directory at once, so it never holds a certificate without its key,
//! nor a new certificate without the trust bundle that goes with it; a Kubernetes Secret
//! mounted there works the same way.
//!
//! Keys and SDS files are 0600, certificates 0644. A member cluster's gateway Envoy
//! needs only `clusters/C/sds/gateway/`, its ingress Envoy only `clusters/C/sds/client/`;
//! the controller needs `ca.crt` and `controller/`.

use super::identity::{ClusterRole, ControllerRole, Identity};
use std::path::{Path, PathBuf};

/// The name of the trust bundle's SDS `Secret` (a certificate's is its role's name).
pub const SDS_TRUST: &str = "ca";

/// What one kind of Envoy of a member cluster mounts: its own certificates and the trust
/// bundle, and nothing of another role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mount {
    /// The east-west gateway: its server certificate.
    Gateway,
    /// The ingress Envoy: its client certificates, to other gateways and to the table API.
    Client,
}

impl Mount {
    pub const ALL: [Mount; 2] = [Mount::Gateway, Mount::Client];

    pub fn as_str(self) -> &'static str {
        match self {
            Mount::Gateway => "gateway",
            Mount::Client => "client",
        }
    }

    /// The certificates it holds.
    pub fn roles(self) -> &'static [ClusterRole] {
        match self {
            Mount::Gateway => &[ClusterRole::Gateway],
            Mount::Client => &[ClusterRole::Envoy, ClusterRole::Table],
        }
    }

    /// The mount holding `role`'s certificate.
    pub fn of(role: ClusterRole) -> Mount {
        match role {
            ClusterRole::Gateway => Mount::Gateway,
            ClusterRole::Envoy | ClusterRole::Table => Mount::Client,
        }
    }
}

/// The file name of `role`'s SDS `Secret` in its mount.
pub fn sds_certificate_file(role: ClusterRole) -> String {
    format!("{}.json", role.as_str())
}

/// The file name of the trust bundle's SDS `Secret` in every mount.
pub fn sds_trust_file() -> String {
    format!("{SDS_TRUST}.json")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

/// A certificate file and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    /// `DIR/STEM.crt` and `DIR/STEM.key`.
    fn of(dir: &Path, stem: &str) -> Pair {
        Pair {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ca(&self) -> Pair {
        Pair::of(&self.root, "ca")
    }

    /// The next CA during a change of CA ([`Layout`]).
    pub fn ca_next(&self) -> Pair {
        Pair::of(&self.root, "ca-next")
    }

    /// The CA before, still trusted after a change of CA until it is finished.
    pub fn ca_previous(&self) -> PathBuf {
        self.root.join("ca-previous.crt")
    }

    /// Every CA to trust (`certs init` writes it).
    pub fn trust(&self) -> PathBuf {
        self.root.join("trust.crt")
    }

    /// The files of one identity.
    pub fn leaf(&self, identity: &Identity) -> Pair {
        let (dir, stem) = match identity {
            Identity::Cluster { cluster, role } => {
                (self.root.join("clusters").join(cluster), role.as_str())
            }
            Identity::Controller(role) => (self.root.join("controller"), role.as_str()),
        };
        Pair::of(&dir, stem)
    }

    pub fn cluster(&self, cluster: &str, role: ClusterRole) -> Pair {
        self.leaf(&Identity::cluster(cluster, role))
    }

    pub fn controller(&self, role: ControllerRole) -> Pair {
        self.leaf(&Identity::Controller(role))
    }

    /// The SDS directory of cluster `cluster`'s `mount` (an Envoy watches it).
    pub fn sds_dir(&self, cluster: &str, mount: Mount) -> PathBuf {
        self.root
            .join("clusters")
            .join(cluster)
            .join("sds")
            .join(mount.as_str())
    }

    /// The SDS file of cluster `cluster`'s `role` certificate.
    pub fn sds_certificate(&self, cluster: &str, role: ClusterRole) -> PathBuf {
        self.sds_dir(cluster, Mount::of(role))
            .join(sds_certificate_file(role))
    }

    /// The SDS file of the trust bundle in cluster `cluster`'s `mount`.
    pub fn sds_trust(&self, cluster: &str, mount: Mount) -> PathBuf {
        self.sds_dir(cluster, mount).join(sds_trust_file())
    }

    /// `path` relative to the root, for messages.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let l = Layout::new("/certs");
        assert_eq!(l.ca().key, Path::new("/certs/ca.key"));
        assert_eq!(
            l.cluster("west", ClusterRole::Table).cert,
            Path::new("/certs/clusters/west/table.crt")
        );
        assert_eq!(
            l.controller(ControllerRole::Probe).key,
            Path::new("/certs/controller/probe.key")
        );
        // The gateway's key is never in the client's mount, nor the other way round.
        for (role, path) in [
            (
                ClusterRole::Gateway,
                "/certs/clusters/west/sds/gateway/gateway.json",
            ),
            (
                ClusterRole::Envoy,
                "/certs/clusters/west/sds/client/envoy.json",
            ),
            (
                ClusterRole::Table,
                "/certs/clusters/west/sds/client/table.json",
            ),
        ] {
            assert_eq!(l.sds_certificate("west", role), Path::new(path));
        }
        assert_eq!(
            l.sds_trust("west", Mount::Client),
            Path::new("/certs/clusters/west/sds/client/ca.json")
        );
    }
}
