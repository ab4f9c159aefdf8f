//! Reading and writing PEM files. Every error names the file, and none ever quotes its
//! content: a broken key file must not end up in a terminal or a log.

use super::provider;
use detour_core::pki::identity::ClusterRole;
use detour_core::pki::layout::Layout;
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

/// Checks that the files a config rendered with `--certs` for `cluster` names are there
/// and usable (PEM, each key matching its certificate), so that a bad file is reported
/// now, by name, rather than by Envoy at start.
pub fn check_certs(layout: &Layout, cluster: &str) -> Result<(), FileError> {
    read_roots(&layout.ca().cert)?;
    for role in ClusterRole::ALL {
        let pair = layout.cluster(cluster, role);
        read_pair(&pair.cert, &pair.key)?;
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
