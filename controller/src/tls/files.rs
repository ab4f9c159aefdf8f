//! Reading and writing PEM files. Every error names the file, and none ever quotes its
//! content: a broken key file must not end up in a terminal or a log.

use super::provider;
use detour_core::pki::identity::ClusterRole;
use detour_core::pki::layout::{Layout, Mount};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A path, shown as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown(pub PathBuf);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: cannot read: {source}")]
    Read { path: Shown, source: std::io::Error },
    #[error("{path}: cannot write: {source}")]
    Write { path: Shown, source: std::io::Error },
    #[error("{path}: not a PEM file ({why})")]
    NotPem { path: Shown, why: &'static str },
    #[error("{path}: no certificate in it (expected a PEM block \"BEGIN CERTIFICATE\")")]
    NoCertificate { path: Shown },
    #[error("{path}: not a valid X.509 certificate")]
    BadCertificate { path: Shown },
    #[error("{path}: no private key in it (expected a PEM block \"BEGIN PRIVATE KEY\")")]
    NoKey { path: Shown },
    #[error("{path}: the private key cannot be used ({why})")]
    BadKey { path: Shown, why: String },
    #[error("{key}: this private key does not belong to the certificate in {cert}")]
    KeyMismatch { cert: Shown, key: Shown },
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|source| FileError::Read {
        path: Shown(path.to_path_buf()),
        source,
    })
}

/// Why PEM parsing failed, without the offending text (the pem error would quote it).
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line",
        pem::Error::Base64Decode(_) => "invalid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "unreadable",
    }
}

/// Every certificate of a PEM file, in order; at least one, each a valid X.509
/// certificate.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let shown = || Shown(path.to_path_buf());
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FileError::NotPem {
            path: shown(),
            why: pem_problem(&e),
        })?;
    if certs.is_empty() {
        return Err(FileError::NoCertificate { path: shown() });
    }
    for cert in &certs {
        if X509Certificate::from_der(cert).is_err() {
            return Err(FileError::BadCertificate { path: shown() });
        }
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, FileError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => FileError::NoKey {
            path: Shown(path.to_path_buf()),
        },
        e => FileError::NotPem {
            path: Shown(path.to_path_buf()),
            why: pem_problem(&e),
        },
    })
}

/// A certificate chain and its private key, checked to belong together.
pub fn read_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, FileError> {
    let certs = read_certs(cert)?;
    let der = read_key(key)?;
    let mismatch = || FileError::KeyMismatch {
        cert: Shown(cert.to_path_buf()),
        key: Shown(key.to_path_buf()),
    };
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| FileError::BadKey {
            path: Shown(key.to_path_buf()),
            why: e.to_string(),
        })?;
    let pair = CertifiedKey::new(certs, signing);
    match pair.keys_match() {
        Ok(()) => Ok(Arc::new(pair)),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            // The ring provider knows the public key of every key type it loads; a key
            // it cannot describe is one we cannot vouch for.
            Err(FileError::BadKey {
                path: Shown(key.to_path_buf()),
                why: "cannot tell whether it matches the certificate".into(),
            })
        }
        Err(_) => Err(mismatch()),
    }
}

/// The certificates of a CA file as a trust store.
pub fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, FileError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|_| FileError::BadCertificate {
            path: Shown(path.to_path_buf()),
        })?;
    }
    Ok(Arc::new(roots))
}

/// Whether a file is readable (`false` when it does not exist).
pub fn exists(path: &Path) -> bool {
    path.is_file()
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, then a
/// rename), so that a reader never sees half a key. `private` files are 0600 from the
/// moment they exist; others 0644.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), FileError> {
    let failed = |source| FileError::Write {
        path: Shown(path.to_path_buf()),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(failed)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aside = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let result = (|| {
        let mut file = options.open(&aside)?;
        // A leftover temporary file keeps its old mode: set it again.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if private { 0o600 } else { 0o644 };
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&aside, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    result.map_err(failed)
}

/// The symlink through which a swapped directory's files are read.
pub const DATA_LINK: &str = "..data";

/// Makes `dir` hold exactly `files` (name → content, all private), all replaced at once,
/// as the kubelet writes a Secret volume: the new version in a fresh `..VERSION/`, the
/// symlink [`DATA_LINK`] swapped to it with one rename, and each `NAME` a symlink to
/// `..data/NAME`. A reader (an Envoy watching `dir`) sees the old set or the new set,
/// never a mix, and the rename is the one event that tells it to reload. Nothing is
/// written when the content is already there. Returns whether it changed.
pub fn write_swapped(dir: &Path, files: &[(String, String)]) -> Result<bool, FileError> {
    let current = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    if files
        .iter()
        .all(|(name, text)| current(name).as_deref() == Some(text.as_str()))
    {
        return Ok(false);
    }
    let failed = |path: &Path| {
        let path = Shown(path.to_path_buf());
        move |source| FileError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(failed(dir))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let version = format!("..{stamp}.{}", std::process::id());
    let version_dir = dir.join(&version);
    std::fs::create_dir(&version_dir).map_err(failed(&version_dir))?;
    for (name, text) in files {
        write_atomic(&version_dir.join(name), text.as_bytes(), true)?;
    }
    swap_link(dir, DATA_LINK, Path::new(&version))?;
    for (name, _) in files {
        let target = Path::new(DATA_LINK).join(name);
        if std::fs::read_link(dir.join(name)).ok().as_deref() != Some(target.as_path()) {
            swap_link(dir, name, &target)?;
        }
    }
    // Older versions: no link reaches them any more.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = name.starts_with("..")
                && name != version
                && name != DATA_LINK
                && entry.file_type().is_ok_and(|t| t.is_dir());
            if old {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(true)
}

/// Points the symlink `dir/name` at `target`, replacing whatever was there by a rename.
fn swap_link(dir: &Path, name: &str, target: &Path) -> Result<(), FileError> {
    let link = dir.join(name);
    let aside = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let _ = std::fs::remove_file(&aside);
        #[cfg(unix)]
        std::os::unix::fs::symlink(target, &aside)?;
        #[cfg(not(unix))]
        std::fs::copy(dir.join(target), &aside).map(|_| ())?;
        std::fs::rename(&aside, &link)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    result.map_err(|source| FileError::Write {
        path: Shown(link),
        source,
    })
}

/// Checks that the files a config rendered with `--certs` for `cluster` names are there
/// and usable (PEM, each key matching its certificate), so that a bad file is reported
/// now, by name, rather than by Envoy at start.
pub fn check_certs(layout: &Layout, cluster: &str) -> Result<(), FileError> {
    read_roots(&layout.ca().cert)?;
    for role in ClusterRole::ALL {
        let pair = layout.cluster(cluster, role);
        read_pair(&pair.cert, &pair.key)?;
        // What the Envoy actually loads (written by `certs init` since SDS).
        read(&layout.sds_certificate(cluster, role))?;
    }
    for mount in Mount::ALL {
        read(&layout.sds_trust(cluster, mount))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// A self-signed certificate and key, PEM.
    fn self_signed(name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![format!("{name}.test")])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `DIR/STEM.crt` and `DIR/STEM.key`.
    fn write_pair(dir: &Path, stem: &str, pair: &(String, String)) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &pair.0).unwrap();
        std::fs::write(&key, &pair.1).unwrap();
        (cert, key)
    }

    #[test]
    fn errors_name_the_file_and_never_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let err = read_certs(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: cannot read", missing.display())),
            "{err}"
        );

        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nsecret!!\n").unwrap();
        let err = read_key(&garbage).unwrap_err().to_string();
        assert!(err.starts_with(&garbage.display().to_string()), "{err}");
        assert!(!err.contains("secret"), "{err}");

        let text = dir.path().join("text.crt");
        std::fs::write(&text, "just some words\n").unwrap();
        let err = read_certs(&text).unwrap_err().to_string();
        assert!(err.contains("no certificate in it"), "{err}");
        let err = read_key(&text).unwrap_err().to_string();
        assert!(err.contains("no private key in it"), "{err}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a_cert, a_key) = write_pair(dir.path(), "a", &self_signed("a"));
        let (b_cert, b_key) = write_pair(dir.path(), "b", &self_signed("b"));
        assert!(read_pair(&a_cert, &a_key).is_ok());
        assert!(read_pair(&b_cert, &b_key).is_ok());
        let err = read_pair(&a_cert, &b_key).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: this private key does not belong to the certificate in {}",
                b_key.display(),
                a_cert.display()
            )
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_swapped_directory_changes_all_its_files_with_one_rename() {
        let dir = tempfile::tempdir().unwrap();
        let sds = dir.path().join("sds");
        let v1 = [
            ("a.json".to_string(), "A1".to_string()),
            ("b.json".to_string(), "B1".to_string()),
        ];
        assert!(write_swapped(&sds, &v1).unwrap());
        let read = |n: &str| std::fs::read_to_string(sds.join(n)).unwrap();
        assert_eq!((read("a.json"), read("b.json")), ("A1".into(), "B1".into()));
        // Readers go through `..data`, so one rename of it replaces both.
        assert_eq!(
            std::fs::read_link(sds.join("a.json")).unwrap(),
            Path::new("..data/a.json")
        );
        let first = std::fs::read_link(sds.join(DATA_LINK)).unwrap();
        // The same content again: nothing moves (a watching Envoy reloads nothing).
        assert!(!write_swapped(&sds, &v1).unwrap());
        assert_eq!(std::fs::read_link(sds.join(DATA_LINK)).unwrap(), first);

        let v2 = [
            ("a.json".to_string(), "A2".to_string()),
            ("b.json".to_string(), "B2".to_string()),
        ];
        assert!(write_swapped(&sds, &v2).unwrap());
        assert_eq!((read("a.json"), read("b.json")), ("A2".into(), "B2".into()));
        assert_ne!(std::fs::read_link(sds.join(DATA_LINK)).unwrap(), first);
        // The old version is gone; the new one is private.
        let mut names: Vec<String> = std::fs::read_dir(&sds)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sds.join("a.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sub/x.key");
        write_atomic(&key, b"k", true).unwrap();
        let cert = dir.path().join("sub/x.crt");
        write_atomic(&cert, b"c", false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644);
        // Overwriting keeps the mode and leaves nothing aside.
        write_atomic(&key, b"k2", true).unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            2
        );
    }
}
