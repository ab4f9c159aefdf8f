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
use detour_core::pki::issue::{CertAuthority, LeafSpec, push_pem};
use detour_core::pki::layout::{Layout, SDS_TRUST, sds_certificate_file, sds_trust_file};
use detour_core::pki::sds;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Lifetime of the leaves it issues: `certs init`'s default.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

pub struct CaIssuer {
    ca: CertAuthority,
    /// Every CA the member clusters trust, PEM: the CA, and during a change of CA the
    /// next or the previous one (`certs init`'s `trust.crt`).
    trust: String,
    /// Names the CA and the trust in what material was issued for: a new CA, or a CA
    /// trusted or no longer trusted beside it, means new material.
    ca_id: String,
    leaf_lifetime: Duration,
}

impl CaIssuer {
    /// Issues from `ca`, and gives trust in `ca` alone.
    pub fn new(ca: CertAuthority, leaf_lifetime: Duration) -> CaIssuer {
        let trust = ca.cert_pem().to_string();
        CaIssuer::trusting(ca, trust, leaf_lifetime)
    }

    /// Issues from `ca`, and gives trust in every CA of `trust` (PEM), `ca` always
    /// among them.
    pub fn trusting(ca: CertAuthority, mut trust: String, leaf_lifetime: Duration) -> CaIssuer {
        if !trust.contains(ca.cert_pem().trim()) {
            push_pem(&mut trust, ca.cert_pem());
        }
        let ca_id = format!(
            "{:016x}",
            detour_core::tables::fnv1a(format!("{}{trust}", ca.cert_pem()).as_bytes())
        );
        CaIssuer {
            ca,
            trust,
            ca_id,
            leaf_lifetime,
        }
    }

    /// The CA of a `certs init` directory, trusting what its `trust.crt` lists (during
    /// a change of CA, the next or the previous CA too); `None` when it has no CA key
    /// (the controller then does not issue). Errors name the file.
    pub fn from_dir(dir: &Path, leaf_lifetime: Duration) -> anyhow::Result<Option<CaIssuer>> {
        let layout = Layout::new(dir);
        let files = layout.ca();
        if !files.key.exists() {
            return Ok(None);
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))
        };
        let ca = CertAuthority::from_pem(&read(&files.cert)?, &read(&files.key)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", files.key.display()))?;
        let trust_file = layout.trust();
        let trust = if trust_file.exists() {
            read(&trust_file)?
        } else {
            String::new()
        };
        Ok(Some(CaIssuer::trusting(ca, trust, leaf_lifetime)))
    }

    /// What [`CaIssuer::from_dir`] reads, as it is now: a change of any of it (a CA
    /// change step, a renewed CA) means the issuer must be read again.
    pub fn dir_stamp(dir: &Path) -> Vec<Option<Vec<u8>>> {
        let layout = Layout::new(dir);
        let ca = layout.ca();
        [ca.cert, ca.key, layout.trust()]
            .iter()
            .map(|path| std::fs::read(path).ok())
            .collect()
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
            ("ca.crt".to_string(), self.trust.as_bytes().to_vec()),
            (
                sds_trust_file(),
                sds::trust(SDS_TRUST, &self.trust).into_bytes(),
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
    fn during_a_change_of_ca_the_secrets_trust_both_and_each_step_issues_again() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ca = CertAuthority::generate(DAY, now).unwrap();
        let next = CertAuthority::generate(DAY, now).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("ca.key"), ca.key_pem()).unwrap();
        let gateway = Host::Name("gw.west.example".into());
        let read = || {
            CaIssuer::from_dir(dir.path(), LEAF_LIFETIME)
                .unwrap()
                .unwrap()
        };
        let alone = read();
        let trusted = |issuer: &CaIssuer| {
            String::from_utf8(issuer.issue("west", &gateway, now).unwrap().data["ca.crt"].clone())
                .unwrap()
        };
        assert_eq!(trusted(&alone), ca.cert_pem());
        let stamp = CaIssuer::dir_stamp(dir.path());

        // `certs init --ca-change begin`: the next CA is trusted beside the current one.
        let both = format!("{}{}", ca.cert_pem(), next.cert_pem());
        std::fs::write(dir.path().join("trust.crt"), &both).unwrap();
        assert_ne!(CaIssuer::dir_stamp(dir.path()), stamp);
        let begun = read();
        assert_eq!(trusted(&begun), both);
        let sds =
            String::from_utf8(begun.issue("west", &gateway, now).unwrap().data["ca.json"].clone())
                .unwrap();
        assert!(
            sds.contains(&next.cert_pem().trim().replace('\n', "\\n")),
            "{sds}"
        );
        assert_ne!(
            begun.subject("west", &gateway),
            alone.subject("west", &gateway),
            "a new trust is new material"
        );

        // A trust file that leaves out the CA issuing: the CA is trusted all the same.
        std::fs::write(dir.path().join("trust.crt"), next.cert_pem()).unwrap();
        let text = trusted(&read());
        assert!(text.contains(ca.cert_pem().trim()) && text.contains(next.cert_pem().trim()));
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
