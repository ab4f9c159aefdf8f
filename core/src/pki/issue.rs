//! Issuing and judging certificates: a federation CA and the leaves it signs. Storage is
//! not this module's business (files written by `detour certs init`; Kubernetes Secrets), so
//! everything here works on PEM strings and takes the current time as an argument.
//!
//! Keys are ECDSA P-256; leaves are valid from an hour before they are made (clock skew
//! between clusters) until their lifetime ends, never past the CA's own end. A leaf is
//! renewed when less than a third of its lifetime is left ([`RENEW_WHEN_LEFT`]), so a
//! monthly run keeps 90-day certificates valid with two months to spare.

use super::identity::Identity;
use crate::model::Host;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Renew a leaf when less than this fraction of its lifetime is left.
pub const RENEW_WHEN_LEFT: f64 = 1.0 / 3.0;
/// How far back a new certificate's validity starts.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the CA certificate is not valid X.509")]
    BadCaCertificate,
    #[error("the CA certificate is not a CA (no basicConstraints CA:TRUE)")]
    NotACa,
    #[error("the CA private key cannot be used (expected an unencrypted PKCS#8 key)")]
    BadCaKey,
    #[error("the CA private key does not belong to the CA certificate")]
    CaKeyMismatch,
    #[error(
        "the CA expired on {0}; remove it to make a new one (every certificate is then reissued)"
    )]
    CaExpired(Date),
    #[error("time {0:?} cannot be written in a certificate")]
    Time(SystemTime),
}

/// A point in time shown as a UTC date and time, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(pub SystemTime);

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match to_offset(self.0) {
            Ok(t) => write!(
                f,
                "{}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            ),
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}

fn to_offset(t: SystemTime) -> Result<time::OffsetDateTime, IssueError> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).map_err(|_| IssueError::Time(t))?,
        Err(e) => -i64::try_from(e.duration().as_secs()).map_err(|_| IssueError::Time(t))?,
    };
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| IssueError::Time(t))
}

fn from_timestamp(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// What a leaf must say: its identity (the URI SAN) and the host names or addresses it
/// answers on (DNS and IP SANs; servers only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub identity: Identity,
    pub hosts: Vec<Host>,
}

impl LeafSpec {
    pub fn new(identity: Identity, hosts: Vec<Host>) -> LeafSpec {
        LeafSpec { identity, hosts }
    }

    /// Every SAN, as `URI:...`, `DNS:...`, `IP:...`, sorted: what a certificate made for
    /// this spec carries.
    pub fn sans(&self) -> Vec<String> {
        let mut sans = vec![format!("URI:{}", self.identity.uri())];
        for host in &self.hosts {
            sans.push(match host {
                Host::Ip(ip) => format!("IP:{ip}"),
                Host::Name(n) => format!("DNS:{n}"),
            });
        }
        sans.sort();
        sans.dedup();
        sans
    }
}

/// A new certificate and its private key, PEM. The key is secret: never log it.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("not_after", &Date(self.not_after))
            .finish_non_exhaustive()
    }
}

/// The federation CA: signs every leaf, and every party trusts it.
pub struct CertAuthority {
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("not_after", &Date(self.not_after))
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A new CA valid from (about) `now` for `lifetime`.
    pub fn generate(lifetime: Duration, now: SystemTime) -> Result<CertAuthority, IssueError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "detour federation CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "detour");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_offset(now - BACKDATE)?;
        params.not_after = to_offset(now + lifetime)?;
        let cert = params.self_signed(&key)?;
        CertAuthority::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// An existing CA: its certificate and its key (PKCS#8), checked to belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CertAuthority, IssueError> {
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| IssueError::BadCaCertificate)?;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|_| IssueError::BadCaCertificate)?;
        if !cert.is_ca() {
            return Err(IssueError::NotACa);
        }
        let key = KeyPair::from_pem(key_pem).map_err(|_| IssueError::BadCaKey)?;
        if key.subject_public_key_info() != cert.public_key().raw {
            return Err(IssueError::CaKeyMismatch);
        }
        let validity = cert.validity();
        let not_before = from_timestamp(validity.not_before.timestamp());
        let not_after = from_timestamp(validity.not_after.timestamp());
        let issuer = Issuer::from_ca_cert_der(&der, key)?;
        Ok(CertAuthority {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cert_der: der.to_vec(),
            issuer,
            not_before,
            not_after,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM. Secret: store it, never log it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether less than [`RENEW_WHEN_LEFT`] of the CA's lifetime is left at `now`.
    pub fn near_expiry(&self, now: SystemTime) -> bool {
        near_expiry(self.not_before, self.not_after, now)
    }

    /// A leaf for `spec`, valid from (about) `now` for `lifetime`, or until the CA
    /// expires if that comes first.
    pub fn issue(
        &self,
        spec: &LeafSpec,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Issued, IssueError> {
        if self.not_after <= now {
            return Err(IssueError::CaExpired(Date(self.not_after)));
        }
        let not_after = (now + lifetime).min(self.not_after);
        self.issue_between(spec, now - BACKDATE, not_after)
    }

    /// A leaf for `spec` valid exactly from `not_before` to `not_after` (tests use it
    /// to make expired certificates).
    pub fn issue_between(
        &self,
        spec: &LeafSpec,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, IssueError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.identity.common_name());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "detour");
        let uri = spec.identity.uri();
        params.subject_alt_names = vec![SanType::URI(uri.as_str().try_into()?)];
        for host in &spec.hosts {
            params.subject_alt_names.push(match host {
                Host::Ip(ip) => SanType::IpAddress(*ip),
                Host::Name(n) => SanType::DnsName(n.as_str().try_into()?),
            });
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if spec.identity.is_server() {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(not_before)?;
        params.not_after = to_offset(not_after)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }

    /// Whether an existing leaf (PEM certificate and key, `None` when missing) can stay
    /// as it is for `spec` at `now`, and if not, why not.
    pub fn assess(
        &self,
        spec: &LeafSpec,
        cert_pem: Option<&str>,
        key_pem: Option<&str>,
        now: SystemTime,
    ) -> Verdict {
        let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) else {
            return Verdict::Renew(Reason::Missing);
        };
        let Ok(der) = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()) else {
            return Verdict::Renew(Reason::Unreadable);
        };
        let Ok((_, cert)) = X509Certificate::from_der(&der) else {
            return Verdict::Renew(Reason::Unreadable);
        };
        let Ok(key) = KeyPair::from_pem(key_pem) else {
            return Verdict::Renew(Reason::UnreadableKey);
        };
        if key.subject_public_key_info() != cert.public_key().raw {
            return Verdict::Renew(Reason::KeyMismatch);
        }
        let Ok((_, ca)) = X509Certificate::from_der(&self.cert_der) else {
            return Verdict::Renew(Reason::OtherIssuer);
        };
        if cert.issuer() != ca.subject() || cert.verify_signature(Some(ca.public_key())).is_err() {
            return Verdict::Renew(Reason::OtherIssuer);
        }
        let had = sans_of(&cert);
        let want = spec.sans();
        if had != want {
            return Verdict::Renew(Reason::NamesChanged { had, want });
        }
        let validity = cert.validity();
        let not_before = from_timestamp(validity.not_before.timestamp());
        let not_after = from_timestamp(validity.not_after.timestamp());
        if not_after <= now {
            return Verdict::Renew(Reason::Expired(Date(not_after)));
        }
        if not_before > now {
            return Verdict::Renew(Reason::NotYetValid(Date(not_before)));
        }
        if near_expiry(not_before, not_after, now) && not_after < self.not_after {
            return Verdict::Renew(Reason::NearExpiry(Date(not_after)));
        }
        Verdict::Keep {
            not_after: Date(not_after),
        }
    }
}

fn near_expiry(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let left = not_after.duration_since(now).unwrap_or(Duration::ZERO);
    left.as_secs_f64() < lifetime.as_secs_f64() * RENEW_WHEN_LEFT
}

/// The SANs of a certificate in [`LeafSpec::sans`]'s form.
fn sans_of(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    let mut out: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
                Ok(v4) => format!("IP:{}", std::net::Ipv4Addr::from(v4)),
                Err(_) => match <[u8; 16]>::try_from(*bytes) {
                    Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                    Err(_) => "IP:?".to_string(),
                },
            },
            other => format!("{other:?}"),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What to do with an existing leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep { not_after: Date },
    Renew(Reason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Missing,
    Unreadable,
    UnreadableKey,
    KeyMismatch,
    OtherIssuer,
    NamesChanged { had: Vec<String>, want: Vec<String> },
    Expired(Date),
    NotYetValid(Date),
    NearExpiry(Date),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Missing => f.write_str("missing"),
            Reason::Unreadable => f.write_str("the certificate is not valid PEM/X.509"),
            Reason::UnreadableKey => f.write_str("the key is not a PKCS#8 PEM key"),
            Reason::KeyMismatch => f.write_str("the key does not belong to the certificate"),
            Reason::OtherIssuer => f.write_str("not signed by this CA"),
            Reason::NamesChanged { had, want } => {
                write!(
                    f,
                    "names changed from [{}] to [{}]",
                    had.join(", "),
                    want.join(", ")
                )
            }
            Reason::Expired(at) => write!(f, "expired on {at}"),
            Reason::NotYetValid(at) => write!(f, "valid only from {at}"),
            Reason::NearExpiry(at) => write!(
                f,
                "expires on {at}, with less than a third of its lifetime left"
            ),
        }
    }
}

/// Appends `pem` to a bundle of PEM blocks (a trust bundle), each block on its own lines
/// whether or not the bundle so far ends with a newline.
pub fn push_pem(bundle: &mut String, pem: &str) {
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(pem);
}

use rustls_pki_types::pem::PemObject;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::identity::{ClusterRole, ControllerRole};

    const DAY: Duration = Duration::from_secs(86_400);

    fn gateway(ip: &str) -> LeafSpec {
        LeafSpec::new(
            Identity::cluster("west", ClusterRole::Gateway),
            vec![Host::Ip(ip.parse().unwrap())],
        )
    }

    #[test]
    fn leaves_carry_their_identity_and_names() {
        let now = SystemTime::now();
        let ca = CertAuthority::generate(3650 * DAY, now).unwrap();
        let spec = gateway("127.0.2.1");
        let leaf = ca.issue(&spec, 90 * DAY, now).unwrap();
        let der =
            rustls_pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            Identity::of_certificate(&der),
            Some(Identity::cluster("west", ClusterRole::Gateway))
        );
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(
            sans_of(&cert),
            [
                "IP:127.0.2.1",
                "URI:spiffe://detour.dev/cluster/west/gateway"
            ]
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "west gateway"
        );
        assert_eq!(
            ca.assess(&spec, Some(&leaf.cert_pem), Some(&leaf.key_pem), now),
            Verdict::Keep {
                not_after: Date(from_timestamp(cert.validity().not_after.timestamp()))
            }
        );
        // The debug form of an issued pair never shows the key.
        assert!(!format!("{leaf:?}").contains("PRIVATE"));
    }

    #[test]
    fn renewal_reasons() {
        let now = SystemTime::now();
        let ca = CertAuthority::generate(3650 * DAY, now).unwrap();
        let other = CertAuthority::generate(3650 * DAY, now).unwrap();
        let spec = gateway("127.0.2.1");
        let leaf = ca.issue(&spec, 90 * DAY, now).unwrap();
        let assess = |ca: &CertAuthority, spec: &LeafSpec, c: &str, k: &str, at| {
            ca.assess(spec, Some(c), Some(k), at)
        };
        assert_eq!(
            ca.assess(&spec, None, Some(&leaf.key_pem), now),
            Verdict::Renew(Reason::Missing)
        );
        assert_eq!(
            assess(&ca, &spec, &leaf.cert_pem, "junk", now),
            Verdict::Renew(Reason::UnreadableKey)
        );
        let stranger = ca.issue(&spec, 90 * DAY, now).unwrap();
        assert_eq!(
            assess(&ca, &spec, &leaf.cert_pem, &stranger.key_pem, now),
            Verdict::Renew(Reason::KeyMismatch)
        );
        assert_eq!(
            assess(&other, &spec, &leaf.cert_pem, &leaf.key_pem, now),
            Verdict::Renew(Reason::OtherIssuer)
        );
        let moved = gateway("127.0.9.1");
        assert!(matches!(
            assess(&ca, &moved, &leaf.cert_pem, &leaf.key_pem, now),
            Verdict::Renew(Reason::NamesChanged { .. })
        ));
        // 59 days in, 31 of 90 left: more than a third, kept. 61 days in: renewed.
        assert!(matches!(
            assess(&ca, &spec, &leaf.cert_pem, &leaf.key_pem, now + 59 * DAY),
            Verdict::Keep { .. }
        ));
        assert!(matches!(
            assess(&ca, &spec, &leaf.cert_pem, &leaf.key_pem, now + 61 * DAY),
            Verdict::Renew(Reason::NearExpiry(_))
        ));
        assert!(matches!(
            assess(&ca, &spec, &leaf.cert_pem, &leaf.key_pem, now + 91 * DAY),
            Verdict::Renew(Reason::Expired(_))
        ));
    }

    #[test]
    fn leaves_never_outlive_the_ca() {
        let now = SystemTime::now();
        let ca = CertAuthority::generate(10 * DAY, now).unwrap();
        let spec = LeafSpec::new(Identity::Controller(ControllerRole::Probe), vec![]);
        let leaf = ca.issue(&spec, 90 * DAY, now).unwrap();
        assert_eq!(leaf.not_after, ca.not_after());
        // Capped by the CA, a leaf is not renewed over and over as the CA nears its end.
        assert!(matches!(
            ca.assess(
                &spec,
                Some(&leaf.cert_pem),
                Some(&leaf.key_pem),
                now + 8 * DAY
            ),
            Verdict::Keep { .. }
        ));
        assert!(ca.near_expiry(now + 8 * DAY));
        assert!(matches!(
            ca.issue(&spec, DAY, now + 11 * DAY),
            Err(IssueError::CaExpired(_))
        ));
    }

    #[test]
    fn a_ca_key_must_match_its_certificate() {
        let now = SystemTime::now();
        let a = CertAuthority::generate(DAY, now).unwrap();
        let b = CertAuthority::generate(DAY, now).unwrap();
        assert!(CertAuthority::from_pem(a.cert_pem(), a.key_pem()).is_ok());
        assert!(matches!(
            CertAuthority::from_pem(a.cert_pem(), b.key_pem()),
            Err(IssueError::CaKeyMismatch)
        ));
        let leaf = a.issue(&gateway("127.0.0.1"), DAY, now).unwrap();
        assert!(matches!(
            CertAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem),
            Err(IssueError::NotACa)
        ));
    }

    #[test]
    fn a_bundle_keeps_each_pem_block_on_its_own_lines() {
        let mut bundle = String::new();
        push_pem(&mut bundle, "-----A-----");
        push_pem(&mut bundle, "-----B-----\n");
        push_pem(&mut bundle, "-----C-----\n");
        assert_eq!(bundle, "-----A-----\n-----B-----\n-----C-----\n");
    }
}
