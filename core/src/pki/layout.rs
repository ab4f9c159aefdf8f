//! Where `detour certs init` puts each file, and where `render envoy --certs`,
//! `serve --certs` and `explain --certs` look for them:
//!
//! ```text
//! DIR/ca.crt                        the federation CA (everyone trusts it)
//! DIR/ca.key                        its key (0600; only `certs init` needs it)
//! DIR/controller/server.{crt,key}   the controller's table API (server)
//! DIR/controller/probe.{crt,key}    the controller's health probes through gateways (client)
//! DIR/clusters/C/gateway.{crt,key}  cluster C's east-west gateway (server)
//! DIR/clusters/C/envoy.{crt,key}    C's Envoy calling other clusters' gateways (client)
//! DIR/clusters/C/table.{crt,key}    C's Envoy fetching its table from the controller (client)
//! ```
//!
//! Keys are 0600, certificates 0644. A member cluster needs only `ca.crt` and its own
//! `clusters/C/`; the controller needs `ca.crt` and `controller/`.

use super::identity::{ClusterRole, ControllerRole, Identity};
use std::path::{Path, PathBuf};

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

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ca(&self) -> Pair {
        Pair {
            cert: self.root.join("ca.crt"),
            key: self.root.join("ca.key"),
        }
    }

    /// The files of one identity.
    pub fn leaf(&self, identity: &Identity) -> Pair {
        let (dir, stem) = match identity {
            Identity::Cluster { cluster, role } => {
                (self.root.join("clusters").join(cluster), role.as_str())
            }
            Identity::Controller(role) => (self.root.join("controller"), role.as_str()),
        };
        Pair {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        }
    }

    pub fn cluster(&self, cluster: &str, role: ClusterRole) -> Pair {
        self.leaf(&Identity::cluster(cluster, role))
    }

    pub fn controller(&self, role: ControllerRole) -> Pair {
        self.leaf(&Identity::Controller(role))
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
    }
}
