//! `detour certs init`: the federation CA and every leaf of [`leaves`], as files in the
//! [`Layout`]. Idempotent: an existing CA is kept (replacing it would break every
//! Envoy's trust at once), and each leaf is kept unless [`CertAuthority::assess`] says
//! why it must be renewed: missing, not matching its key or the CA, names no longer
//! those of the configuration, or near expiry.

use super::files::{FileError, Shown, write_atomic, write_swapped};
use detour_core::model::{Host, Model};
use detour_core::pki::identity::{ClusterRole, ControllerRole, Identity};
use detour_core::pki::issue::{
    CertAuthority, Date, IssueError, LeafSpec, Reason, Verdict, push_pem,
};
use detour_core::pki::layout::{
    Layout, Mount, Pair, SDS_TRUST, sds_certificate_file, sds_trust_file,
};
use detour_core::pki::sds;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Every leaf a federation needs: per member cluster a gateway server certificate
/// (naming its gateway's hosts), an Envoy client certificate and a table client
/// certificate; the controller's server certificate (naming `controller_hosts`) and its
/// probe client certificate. Sorted by identity.
pub fn leaves(model: &Model, controller_hosts: &[Host]) -> Vec<LeafSpec> {
    let mut out = Vec::new();
    for cluster in model.clusters.values() {
        for role in ClusterRole::ALL {
            let hosts = match role {
                // Every instance presents the same certificate, naming them all.
                ClusterRole::Gateway => {
                    let mut hosts: Vec<Host> = Vec::new();
                    for g in cluster.gateways() {
                        if !hosts.contains(&g.host) {
                            hosts.push(g.host.clone());
                        }
                    }
                    hosts
                }
                ClusterRole::Envoy | ClusterRole::Table => vec![],
            };
            out.push(LeafSpec::new(Identity::cluster(&cluster.name, role), hosts));
        }
    }
    out.push(LeafSpec::new(
        Identity::Controller(ControllerRole::Server),
        controller_hosts.to_vec(),
    ));
    out.push(LeafSpec::new(
        Identity::Controller(ControllerRole::Probe),
        vec![],
    ));
    out.sort_by(|a, b| a.identity.cmp(&b.identity));
    out
}

/// The names the controller's server certificate carries unless told otherwise.
pub fn default_controller_hosts() -> Vec<Host> {
    vec![
        Host::Name("localhost".into()),
        Host::Ip(std::net::Ipv4Addr::LOCALHOST.into()),
        Host::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
    ]
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub out: PathBuf,
    pub controller_hosts: Vec<Host>,
    pub ca_lifetime: Duration,
    pub leaf_lifetime: Duration,
    /// A step of a change of CA, done before anything else.
    pub ca_change: Option<CaChange>,
}

/// A change of CA with an overlap, in three runs of `certs init`, each reaching every
/// Envoy (and the controller) before the next: a peer always trusts the CA of what the
/// other side presents, whichever of the two it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaChange {
    /// Make the next CA (`ca-next.{crt,key}`) and trust it beside the current one;
    /// nothing is issued from it yet.
    Begin,
    /// The next CA becomes the CA and reissues every certificate; the one before
    /// (`ca-previous.crt`) is still trusted, for peers that have not reloaded yet.
    Switch,
    /// Stop trusting the CA before.
    Finish,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {source}")]
    Issue { path: Shown, source: IssueError },
    #[error(
        "{present} exists but {missing} does not; restore it, or remove both to make a new CA (every certificate is then reissued)"
    )]
    HalfCa { present: Shown, missing: Shown },
    #[error(
        "--ca-change switch: there is no next CA ({missing}); run --ca-change begin first, and let every Envoy load it"
    )]
    NoNextCa { missing: Shown },
}

/// What happened to one file pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Created,
    Renewed(Reason),
    Kept,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// The certificate file, relative to the output directory.
    pub file: PathBuf,
    pub what: String,
    pub action: Action,
    pub not_after: Date,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub entries: Vec<Entry>,
    /// Said once, after the list (e.g. the CA nearing its end).
    pub warnings: Vec<String>,
}

impl Report {
    pub fn changed(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.action != Action::Kept)
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .entries
            .iter()
            .map(|e| e.file.display().to_string().len())
            .max()
            .unwrap_or(0);
        for e in &self.entries {
            let action = match &e.action {
                Action::Created => "created".to_string(),
                Action::Renewed(why) => format!("renewed ({why})"),
                Action::Kept => "kept".to_string(),
            };
            writeln!(
                f,
                "{:<width$}  {action}: {}; valid until {}",
                e.file.display().to_string(),
                e.what,
                e.not_after
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// A file's content, `None` when it does not exist. Not UTF-8 reads as empty, which
/// no check accepts.
fn read_optional(path: &Path) -> Result<Option<String>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8(bytes).unwrap_or_default())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Read {
            path: Shown(path.to_path_buf()),
            source,
        }),
    }
}

fn write_pair(pair: &Pair, cert_pem: &str, key_pem: &str) -> Result<(), FileError> {
    // The key first: a run stopped in between leaves a pair that does not match, which
    // the next run renews.
    write_atomic(&pair.key, key_pem.as_bytes(), true)?;
    write_atomic(&pair.cert, cert_pem.as_bytes(), false)
}

/// Loads the CA of `layout`, or makes one when neither file exists.
fn ca(
    layout: &Layout,
    opts: &InitOptions,
    now: SystemTime,
    report: &mut Report,
) -> Result<CertAuthority, InitError> {
    let files = layout.ca();
    let cert = read_optional(&files.cert)?;
    let key = read_optional(&files.key)?;
    let issue_error = |source| InitError::Issue {
        path: Shown(files.cert.clone()),
        source,
    };
    let (ca, action) = match (cert, key) {
        (Some(cert), Some(key)) => {
            let ca = CertAuthority::from_pem(&cert, &key).map_err(|e| match e {
                IssueError::BadCaKey | IssueError::CaKeyMismatch => InitError::Issue {
                    path: Shown(files.key.clone()),
                    source: e,
                },
                e => issue_error(e),
            })?;
            (ca, Action::Kept)
        }
        (None, None) => {
            let ca = CertAuthority::generate(opts.ca_lifetime, now).map_err(issue_error)?;
            write_pair(&files, ca.cert_pem(), ca.key_pem())?;
            (ca, Action::Created)
        }
        (Some(_), None) => {
            return Err(InitError::HalfCa {
                present: Shown(files.cert),
                missing: Shown(files.key),
            });
        }
        (None, Some(_)) => {
            return Err(InitError::HalfCa {
                present: Shown(files.key),
                missing: Shown(files.cert),
            });
        }
    };
    if ca.not_after() <= now {
        return Err(issue_error(IssueError::CaExpired(Date(ca.not_after()))));
    }
    if ca.near_expiry(now) {
        report.warnings.push(format!(
            "the CA expires on {}; new leaves end with it. To replace it, remove {} and {} \
             and run again: every certificate is reissued, and every Envoy and the \
             controller must load the new ones",
            Date(ca.not_after()),
            files.cert.display(),
            files.key.display()
        ));
    }
    report.entries.push(Entry {
        file: layout.relative(&files.cert).to_path_buf(),
        what: "detour federation CA".into(),
        action,
        not_after: Date(ca.not_after()),
    });
    Ok(ca)
}

/// The step `change` of a change of CA, on the files of `layout`.
fn change_ca(
    layout: &Layout,
    change: CaChange,
    opts: &InitOptions,
    now: SystemTime,
    report: &mut Report,
) -> Result<(), InitError> {
    let next = layout.ca_next();
    let moved = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|source| FileError::Write {
            path: Shown(to.to_path_buf()),
            source,
        })
    };
    match change {
        CaChange::Begin => {
            if read_optional(&next.cert)?.is_none() {
                let ca = CertAuthority::generate(opts.ca_lifetime, now).map_err(|source| {
                    InitError::Issue {
                        path: Shown(next.cert.clone()),
                        source,
                    }
                })?;
                write_pair(&next, ca.cert_pem(), ca.key_pem())?;
            }
            report.warnings.push(format!(
                "the next CA ({}) is trusted beside the current one; once every Envoy and the \
                 controller have loaded it, run --ca-change switch",
                layout.relative(&next.cert).display()
            ));
        }
        CaChange::Switch => {
            if read_optional(&next.cert)?.is_none() || read_optional(&next.key)?.is_none() {
                return Err(InitError::NoNextCa {
                    missing: Shown(next.cert),
                });
            }
            let current = layout.ca();
            moved(&current.cert, &layout.ca_previous())?;
            // Nothing is issued from it any more.
            let _ = std::fs::remove_file(&current.key);
            moved(&next.key, &current.key)?;
            moved(&next.cert, &current.cert)?;
            report.warnings.push(format!(
                "every certificate is reissued by the new CA; the previous one ({}) is still \
                 trusted: once every Envoy and the controller have loaded the new \
                 certificates, run --ca-change finish",
                layout.relative(&layout.ca_previous()).display()
            ));
        }
        CaChange::Finish => match std::fs::remove_file(layout.ca_previous()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(FileError::Write {
                    path: Shown(layout.ca_previous()),
                    source: e,
                }
                .into());
            }
            _ => {}
        },
    }
    Ok(())
}

/// Every CA to trust, PEM: the CA, then the next or the previous one during a change.
fn trust_bundle(layout: &Layout, ca: &CertAuthority) -> Result<String, InitError> {
    let mut bundle = ca.cert_pem().to_string();
    for other in [layout.ca_next().cert, layout.ca_previous()] {
        if let Some(pem) = read_optional(&other)? {
            push_pem(&mut bundle, &pem);
        }
    }
    Ok(bundle)
}

/// Creates or renews what is needed in `opts.out` for `model` at `now`.
pub fn init(model: &Model, opts: &InitOptions, now: SystemTime) -> Result<Report, InitError> {
    let layout = Layout::new(&opts.out);
    let mut report = Report::default();
    if let Some(change) = opts.ca_change {
        change_ca(&layout, change, opts, now, &mut report)?;
    }
    let ca = ca(&layout, opts, now, &mut report)?;
    for spec in leaves(model, &opts.controller_hosts) {
        let files = layout.leaf(&spec.identity);
        let cert = read_optional(&files.cert)?;
        let key = read_optional(&files.key)?;
        let what = spec.sans().join(", ");
        let (action, not_after) = match ca.assess(&spec, cert.as_deref(), key.as_deref(), now) {
            Verdict::Keep { not_after } => (Action::Kept, not_after),
            Verdict::Renew(reason) => {
                let issued = ca.issue(&spec, opts.leaf_lifetime, now).map_err(|source| {
                    InitError::Issue {
                        path: Shown(files.cert.clone()),
                        source,
                    }
                })?;
                write_pair(&files, &issued.cert_pem, &issued.key_pem)?;
                let action = match reason {
                    Reason::Missing if cert.is_none() && key.is_none() => Action::Created,
                    reason => Action::Renewed(reason),
                };
                (action, Date(issued.not_after))
            }
        };
        report.entries.push(Entry {
            file: layout.relative(&files.cert).to_path_buf(),
            what,
            action,
            not_after,
        });
    }
    let trust = trust_bundle(&layout, &ca)?;
    if read_optional(&layout.trust())?.as_deref() != Some(trust.as_str()) {
        write_atomic(&layout.trust(), trust.as_bytes(), false)?;
    }
    write_sds(model, &layout, &trust)?;
    Ok(report)
}

/// Each member cluster's Envoy SDS directories ([`Layout::sds_dir`], one per [`Mount`]):
/// the trust bundle and that mount's certificates with their keys, all swapped in at
/// once ([`write_swapped`]) and only when something changed, so that a watching Envoy
/// reloads the renewed set whole.
fn write_sds(model: &Model, layout: &Layout, trust: &str) -> Result<(), InitError> {
    for cluster in model.clusters.keys() {
        for mount in Mount::ALL {
            let mut files = vec![(sds_trust_file(), sds::trust(SDS_TRUST, trust))];
            for &role in mount.roles() {
                let pair = layout.cluster(cluster, role);
                let (Some(cert), Some(key)) =
                    (read_optional(&pair.cert)?, read_optional(&pair.key)?)
                else {
                    continue;
                };
                files.push((
                    sds_certificate_file(role),
                    sds::certificate(role.as_str(), &cert, &key),
                ));
            }
            write_swapped(&layout.sds_dir(cluster, mount), &files)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::files;
    use detour_core::docs::load::parse_file;
    use detour_core::testing::EXAMPLE;
    use detour_core::validate::build_model;

    const DAY: Duration = Duration::from_secs(86_400);

    fn model(text: &str) -> Model {
        let (docs, problems) = parse_file("t.yaml", text);
        assert!(problems.is_empty(), "{problems:?}");
        build_model(&docs).unwrap()
    }

    fn opts(out: &Path) -> InitOptions {
        InitOptions {
            out: out.to_path_buf(),
            controller_hosts: default_controller_hosts(),
            ca_lifetime: 3650 * DAY,
            leaf_lifetime: 90 * DAY,
            ca_change: None,
        }
    }

    fn actions(r: &Report) -> Vec<(String, String)> {
        r.entries
            .iter()
            .map(|e| {
                let a = match &e.action {
                    Action::Created => "created".to_string(),
                    Action::Kept => "kept".to_string(),
                    Action::Renewed(r) => format!("renewed: {r}"),
                };
                (e.file.display().to_string(), a)
            })
            .collect()
    }

    #[test]
    fn creates_everything_then_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = model(EXAMPLE);
        let now = SystemTime::now();
        let first = init(&m, &opts(dir.path()), now).unwrap();
        let files: Vec<String> = actions(&first).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            files,
            [
                "ca.crt",
                "clusters/east/gateway.crt",
                "clusters/east/envoy.crt",
                "clusters/east/table.crt",
                "clusters/south/gateway.crt",
                "clusters/south/envoy.crt",
                "clusters/south/table.crt",
                "clusters/west/gateway.crt",
                "clusters/west/envoy.crt",
                "clusters/west/table.crt",
                "controller/server.crt",
                "controller/probe.crt",
            ]
        );
        assert!(first.entries.iter().all(|e| e.action == Action::Created));
        let text = first.to_string();
        assert!(
            text.lines().any(|l| l.starts_with("clusters/west/gateway.crt ")
                && l.contains(" created: IP:127.0.2.1, URI:spiffe://detour.dev/cluster/west/gateway; valid until 20")),
            "{text}"
        );
        assert!(!text.contains("BEGIN"), "{text}");

        let again = init(&m, &opts(dir.path()), now + DAY).unwrap();
        assert_eq!(again.changed(), 0, "{again}");
        let ca_before = std::fs::read(dir.path().join("ca.crt")).unwrap();

        // 61 days later every leaf has less than a third of its 90 days left; the CA stays.
        let later = init(&m, &opts(dir.path()), now + 61 * DAY).unwrap();
        assert_eq!(later.entries[0].action, Action::Kept);
        assert!(
            later.entries[1..]
                .iter()
                .all(|e| matches!(e.action, Action::Renewed(Reason::NearExpiry(_)))),
            "{later}"
        );
        assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca_before);
    }

    /// What each Envoy loads: per mount, the trust bundle and that mount's certificates
    /// with their keys, and never another mount's key; a renewal changes the mount
    /// holding the renewed certificate (one swap), and leaves the other alone.
    #[test]
    fn each_mount_holds_its_own_keys_and_a_renewal_swaps_it() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let m = model(EXAMPLE);
        init(&m, &opts(dir.path()), now).unwrap();
        let layout = Layout::new(dir.path());
        let secrets = |mount: Mount| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(layout.sds_dir("west", mount))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with(".."))
                .collect();
            names.sort();
            names
        };
        assert_eq!(secrets(Mount::Gateway), ["ca.json", "gateway.json"]);
        assert_eq!(
            secrets(Mount::Client),
            ["ca.json", "envoy.json", "table.json"]
        );
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        let gateway_key = read(layout.cluster("west", ClusterRole::Gateway).key);
        let gateway_sds = read(layout.sds_certificate("west", ClusterRole::Gateway));
        let json_key = gateway_key.replace('\n', "\\n");
        assert!(gateway_sds.contains(&json_key), "{gateway_sds}");
        for role in [ClusterRole::Envoy, ClusterRole::Table] {
            assert!(!read(layout.sds_certificate("west", role)).contains(&json_key));
        }
        let ca = read(layout.ca().cert).replace('\n', "\\n");
        assert!(read(layout.sds_trust("west", Mount::Gateway)).contains(&ca));

        let client_before =
            std::fs::read_link(layout.sds_dir("west", Mount::Client).join(files::DATA_LINK))
                .unwrap();
        std::fs::remove_file(layout.cluster("west", ClusterRole::Gateway).key).unwrap();
        init(&m, &opts(dir.path()), now).unwrap();
        let renewed = read(layout.sds_certificate("west", ClusterRole::Gateway));
        assert_ne!(renewed, gateway_sds);
        let new_cert = read(layout.cluster("west", ClusterRole::Gateway).cert);
        assert!(renewed.contains(&new_cert.replace('\n', "\\n")));
        assert_eq!(
            std::fs::read_link(layout.sds_dir("west", Mount::Client).join(files::DATA_LINK))
                .unwrap(),
            client_before,
            "the client mount did not change"
        );
    }

    /// A change of CA in three steps: the next CA trusted first, then issuing, then the
    /// old one dropped; at every step each Envoy trusts what any other presents.
    #[test]
    fn a_change_of_ca_overlaps_the_two() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let m = model(EXAMPLE);
        let layout = Layout::new(dir.path());
        let step = |change| {
            let mut o = opts(dir.path());
            o.ca_change = change;
            init(&m, &o, now)
        };
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        let cas_in = |p: PathBuf| read(p).matches("BEGIN CERTIFICATE").count();
        step(None).unwrap();
        let old_ca = read(layout.ca().cert);
        assert_eq!(cas_in(layout.trust()), 1);
        // Switching needs a next CA every Envoy already trusts.
        assert!(matches!(
            step(Some(CaChange::Switch)),
            Err(InitError::NoNextCa { .. })
        ));
        assert_eq!(read(layout.ca().cert), old_ca);

        let begun = step(Some(CaChange::Begin)).unwrap();
        assert_eq!(begun.changed(), 0, "nothing is issued from the next CA yet");
        let next_ca = read(layout.ca_next().cert);
        let trust = read(layout.trust());
        assert!(trust.contains(&old_ca) && trust.contains(&next_ca));
        let sds_trust = read(layout.sds_trust("west", Mount::Gateway));
        assert!(sds_trust.contains(&next_ca.replace('\n', "\\n")));

        let switched = step(Some(CaChange::Switch)).unwrap();
        assert_eq!(read(layout.ca().cert), next_ca);
        assert_eq!(read(layout.ca_previous()), old_ca);
        assert!(!layout.ca_next().cert.exists());
        assert!(
            switched.entries[1..]
                .iter()
                .all(|e| matches!(e.action, Action::Renewed(_))),
            "{switched}"
        );
        let trust = read(layout.trust());
        assert!(trust.contains(&old_ca) && trust.contains(&next_ca));
        let issuer = CertAuthority::from_pem(&next_ca, &read(layout.ca().key)).unwrap();
        let west = LeafSpec::new(
            Identity::cluster("west", ClusterRole::Gateway),
            vec![Host::Ip("127.0.2.1".parse().unwrap())],
        );
        let files = layout.cluster("west", ClusterRole::Gateway);
        assert!(matches!(
            issuer.assess(&west, Some(&read(files.cert)), Some(&read(files.key)), now),
            Verdict::Keep { .. }
        ));

        step(Some(CaChange::Finish)).unwrap();
        assert_eq!(read(layout.trust()), next_ca);
        assert_eq!(cas_in(layout.sds_trust("east", Mount::Client)), 1);
    }

    #[test]
    fn renews_only_what_changed_or_went_missing() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        init(&model(EXAMPLE), &opts(dir.path()), now).unwrap();
        std::fs::remove_file(dir.path().join("clusters/east/table.key")).unwrap();
        let moved = model(&EXAMPLE.replace("127.0.2.1", "west-gw.example.com"));
        let mut o = opts(dir.path());
        o.controller_hosts = vec![Host::Name("detour.example.com".into())];
        let r = init(&moved, &o, now).unwrap();
        let changed: Vec<(String, String)> = actions(&r)
            .into_iter()
            .filter(|(_, a)| a != "kept")
            .collect();
        assert_eq!(
            changed,
            [
                ("clusters/east/table.crt".to_string(), "renewed: missing".to_string()),
                (
                    "clusters/west/gateway.crt".to_string(),
                    "renewed: names changed from [IP:127.0.2.1, URI:spiffe://detour.dev/cluster/west/gateway] \
                     to [DNS:west-gw.example.com, URI:spiffe://detour.dev/cluster/west/gateway]"
                        .to_string()
                ),
                (
                    "controller/server.crt".to_string(),
                    "renewed: names changed from [DNS:localhost, IP:127.0.0.1, IP:::1, URI:spiffe://detour.dev/controller/server] \
                     to [DNS:detour.example.com, URI:spiffe://detour.dev/controller/server]"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_half_ca_is_an_error_not_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        init(&model(EXAMPLE), &opts(dir.path()), now).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        let err = init(&model(EXAMPLE), &opts(dir.path()), now)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{} exists but {} does not",
                dir.path().join("ca.crt").display(),
                dir.path().join("ca.key").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn a_new_ca_reissues_every_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        init(&model(EXAMPLE), &opts(dir.path()), now).unwrap();
        std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        let r = init(&model(EXAMPLE), &opts(dir.path()), now).unwrap();
        assert_eq!(r.entries[0].action, Action::Created);
        assert!(
            r.entries[1..]
                .iter()
                .all(|e| e.action == Action::Renewed(Reason::OtherIssuer))
        );
    }
}
