//! The real [`Issuer`] of member clusters' mTLS Secrets: the federation CA of
//! `detour certs init` (issue 4), read from the `--certs` directory (a mounted Secret in
//! Kubernetes) when it holds the CA's key.
//!
//! A member cluster's Secret holds what `certs init` writes for it: `ca.crt`, and
//! `gateway.{crt,key}` (server, naming the gateway's host), `envoy.{crt,key}` (client of
//! other gateways) and `table.{crt,key}` (client of the table API) — the files of
//! `clusters/C/` plus the CA, as one directory when the Secret is mounted.

use super::secrets::{Issuer, Material};
use detour_core::model::Host;
use detour_core::pki::identity::{ClusterRole, Identity};
use detour_core::pki::issue::{CertAuthority, LeafSpec};
use detour_core::pki::layout::{Layout, SDS_TRUST, sds_certificate_file, sds_trust_file};
use detour_core::pki::sds;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Lifetime of the leaves it issues: `certs init`'s default.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

pub struct CaIssuer {
    ca: CertAuthority,
    /// Names the CA in what material was issued for: a new CA means new material.
    ca_id: String,
    leaf_lifetime: Duration,
}

impl CaIssuer {
    pub fn new(ca: CertAuthority, leaf_lifetime: Duration) -> CaIssuer {
        let ca_id = format!(
            "{:016x}",
            detour_core::tables::fnv1a(ca.cert_pem().as_bytes())
        );
        CaIssuer {
            ca,
            ca_id,
            leaf_lifetime,
        }
    }

    /// The CA of a `certs init` directory; `None` when it has no CA key (the controller
    /// then does not issue). Errors name the file.
    pub fn from_dir(dir: &Path, leaf_lifetime: Duration) -> anyhow::Result<Option<CaIssuer>> {
        let files = Layout::new(dir).ca();
        if !files.key.exists() {
            return Ok(None);
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))
        };
        let ca = CertAuthority::from_pem(&read(&files.cert)?, &read(&files.key)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", files.key.display()))?;
        Ok(Some(CaIssuer::new(ca, leaf_lifetime)))
    }

    fn leaves(cluster: &str, gateway: &Host) -> Vec<(ClusterRole, LeafSpec)> {
        ClusterRole::ALL
            .into_iter()
            .map(|role| {
                let hosts = match role {
                    ClusterRole::Gateway => vec![gateway.clone()],
                    ClusterRole::Envoy | ClusterRole::Table => vec![],
                };
                (role, LeafSpec::new(Identity::cluster(cluster, role), hosts))
            })
            .collect()
    }
}

impl Issuer for CaIssuer {
    fn subject(&self, cluster: &str, gateway: &Host) -> String {
        format!("cluster {cluster}, gateway {gateway}, CA {}", self.ca_id)
    }

    fn issue(&self, cluster: &str, gateway: &Host, now: SystemTime) -> Result<Material, String> {
        // The PEM files, and the SDS files a rendered Envoy loads (`certs init`'s sds/).
        let mut data = BTreeMap::from([
            ("ca.crt".to_string(), self.ca.cert_pem().as_bytes().to_vec()),
            (
                sds_trust_file(),
                sds::trust(SDS_TRUST, self.ca.cert_pem()).into_bytes(),
            ),
        ]);
        let mut not_after = self.ca.not_after();
        for (role, spec) in CaIssuer::leaves(cluster, gateway) {
            let issued = self
                .ca
                .issue(&spec, self.leaf_lifetime, now)
                .map_err(|e| e.to_string())?;
            not_after = not_after.min(issued.not_after);
            data.insert(
                sds_certificate_file(role),
                sds::certificate(role.as_str(), &issued.cert_pem, &issued.key_pem).into_bytes(),
            );
            data.insert(
                format!("{}.crt", role.as_str()),
                issued.cert_pem.into_bytes(),
            );
            data.insert(
                format!("{}.key", role.as_str()),
                issued.key_pem.into_bytes(),
            );
        }
        Ok(Material {
            data,
            // Counted from now, not from the back-dated start: renewal comes two thirds
            // into the lifetime asked for.
            not_before: now,
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detour_core::pki::issue::Verdict;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn issues_what_certs_init_writes_for_a_cluster() {
        let now = SystemTime::now();
        let ca = CertAuthority::generate(3650 * DAY, now).unwrap();
        let check = CertAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let issuer = CaIssuer::new(ca, LEAF_LIFETIME);
        let gateway = Host::Name("gw.west.example".into());
        let m = issuer.issue("west", &gateway, now).unwrap();
        let keys: Vec<&str> = m.data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "ca.crt",
                "ca.json",
                "envoy.crt",
                "envoy.json",
                "envoy.key",
                "gateway.crt",
                "gateway.json",
                "gateway.key",
                "table.crt",
                "table.json",
                "table.key"
            ]
        );
        assert_eq!(m.not_before, now);
        let lifetime = m.not_after.duration_since(now).unwrap();
        assert!(lifetime <= LEAF_LIFETIME && lifetime > LEAF_LIFETIME - DAY);
        // Each leaf is exactly what `certs init` would keep for that cluster.
        for (role, spec) in CaIssuer::leaves("west", &gateway) {
            let text = |ext: &str| {
                String::from_utf8(m.data[&format!("{}.{ext}", role.as_str())].clone()).unwrap()
            };
            let verdict = check.assess(&spec, Some(&text("crt")), Some(&text("key")), now);
            assert!(
                matches!(verdict, Verdict::Keep { .. }),
                "{role:?}: {verdict:?}"
            );
        }
        // What it is issued for names the gateway and the CA.
        let other = Host::Name("gw2.west.example".into());
        assert_ne!(
            issuer.subject("west", &gateway),
            issuer.subject("west", &other)
        );
        let another_ca = CaIssuer::new(CertAuthority::generate(DAY, now).unwrap(), LEAF_LIFETIME);
        assert_ne!(
            issuer.subject("west", &gateway),
            another_ca.subject("west", &gateway)
        );
    }

    #[test]
    fn a_directory_without_the_ca_key_issues_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            CaIssuer::from_dir(dir.path(), LEAF_LIFETIME)
                .unwrap()
                .is_none()
        );
        let now = SystemTime::now();
        let ca = CertAuthority::generate(DAY, now).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("ca.key"), "not a key").unwrap();
        let e = CaIssuer::from_dir(dir.path(), LEAF_LIFETIME)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ca.key"), "{e}");
        std::fs::write(dir.path().join("ca.key"), ca.key_pem()).unwrap();
        assert!(
            CaIssuer::from_dir(dir.path(), LEAF_LIFETIME)
                .unwrap()
                .is_some()
        );
    }
}
