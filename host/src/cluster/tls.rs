//! Mutual TLS between members (rustls, the `ring` provider, TLS 1.3 only).
//!
//! Every member holds a certificate signed by the cluster's CA whose DNS name is
//! `member-<id>.keepwarm`; an operator's admin client holds one named `admin.keepwarm`. A
//! connection is accepted only with a client certificate from that CA; the server tells its
//! peer apart by that name ([`Identity`]), and a member dials a peer expecting the peer's own
//! name, so a host with another member's address but not its key is refused at the handshake.
//! [`generate`] makes a CA and these certificates for operators without a PKI
//! (`keepwarm cluster certs`).

use super::types::NodeId;
use crate::pem::{certs, key, provider, read, roots};
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The suffix of every name in the cluster's certificates.
const DOMAIN: &str = "keepwarm";

/// The DNS name a member's certificate carries.
pub fn member_name(id: NodeId) -> String {
    format!("member-{id}.{DOMAIN}")
}

/// The DNS name of an admin client's certificate.
pub fn admin_name() -> String {
    format!("admin.{DOMAIN}")
}

/// Who is on the other end of a connection, by its certificate (or `Unverified` on a plain
/// connection of an `insecure` cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Member(NodeId),
    Admin,
    Unverified,
}

impl Identity {
    /// The identity a verified certificate names: its first `member-<id>.keepwarm` or
    /// `admin.keepwarm` DNS name; `None` when it names neither.
    pub fn of(cert: &CertificateDer<'_>) -> Option<Identity> {
        let cert = webpki::EndEntityCert::try_from(cert).ok()?;
        let names: Vec<&str> = cert.valid_dns_names().collect();
        names.into_iter().find_map(|name| {
            if name == admin_name() {
                return Some(Identity::Admin);
            }
            let id = name.strip_suffix(&format!(".{DOMAIN}"))?;
            id.strip_prefix("member-")?
                .parse()
                .ok()
                .map(Identity::Member)
        })
    }

    /// Whether this peer may speak for member `id` (a plain connection may, having shown the
    /// secret instead).
    pub fn speaks_for(&self, id: NodeId) -> bool {
        matches!(self, Identity::Unverified) || *self == Identity::Member(id)
    }
}

/// Where a member's PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files [`generate`] writes for `id` in `dir`.
    pub fn in_dir(dir: &Path, id: NodeId) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("member-{id}.pem")),
            key: dir.join(format!("member-{id}.key")),
        }
    }

    /// An admin client's files in `dir`.
    pub fn admin_in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("admin.pem"),
            key: dir.join("admin.key"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: the certificate does not name {expected} (its names: {names})")]
    WrongName {
        path: PathBuf,
        expected: String,
        names: String,
    },
    #[error("tls: {0}")]
    Config(String),
}

/// This member's server and client configurations.
#[derive(Debug, Clone)]
pub struct MemberTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl From<crate::pem::PemError> for TlsError {
    fn from(e: crate::pem::PemError) -> Self {
        TlsError::File {
            path: e.path,
            reason: e.reason,
        }
    }
}

/// Checks the leaf of `chain` (read from `path`) carries `expected`.
fn check_name(
    chain: &[CertificateDer<'_>],
    path: &Path,
    expected: Identity,
    name: String,
) -> Result<(), TlsError> {
    if Identity::of(&chain[0]) == Some(expected) {
        return Ok(());
    }
    let names = webpki::EndEntityCert::try_from(&chain[0])
        .map(|c| c.valid_dns_names().collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    Err(TlsError::WrongName {
        path: path.into(),
        expected: name,
        names,
    })
}

/// A client configuration presenting `files`' certificate and trusting `files.ca`.
fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| TlsError::File {
            path: files.key.clone(),
            reason: format!("does not match {}: {e}", files.cert.display()),
        })?;
    Ok(Arc::new(config))
}

impl MemberTls {
    /// Loads member `id`'s files; refuses a certificate that does not name `id`.
    pub fn load(files: &TlsFiles, id: NodeId) -> Result<MemberTls, TlsError> {
        let chain = certs(&files.cert)?;
        check_name(&chain, &files.cert, Identity::Member(id), member_name(id))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&files.ca)?,
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key(&files.key)?)
            .map_err(|e| TlsError::File {
                path: files.key.clone(),
                reason: format!("does not match {}: {e}", files.cert.display()),
            })?;
        Ok(MemberTls {
            server: Arc::new(server),
            client: client_config(files)?,
        })
    }

    /// An admin client's configuration (for `keepwarm cluster join/leave`): it presents the
    /// admin certificate and accepts a server certificate from the cluster's CA naming
    /// member `expect`, or any member when `None` (the leader is dialled by its address).
    pub fn admin_client(
        files: &TlsFiles,
        expect: Option<NodeId>,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let chain = certs(&files.cert)?;
        check_name(&chain, &files.cert, Identity::Admin, admin_name())?;
        let Some(_) = expect else {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots(&files.ca)?,
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| TlsError::Config(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyMember(inner)))
                .with_client_auth_cert(chain, key(&files.key)?)
                .map_err(|e| TlsError::File {
                    path: files.key.clone(),
                    reason: format!("does not match {}: {e}", files.cert.display()),
                })?;
            return Ok(Arc::new(config));
        };
        client_config(files)
    }
}

/// Verifies a server certificate as the cluster's CA would for whichever member it names.
#[derive(Debug)]
struct AnyMember(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyMember {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(Identity::Member(id)) = Identity::of(end_entity) else {
            return Err(rustls::Error::General(
                "the server's certificate names no member of the cluster".into(),
            ));
        };
        self.0.verify_server_cert(
            end_entity,
            intermediates,
            &server_name(id),
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The name a client expects of member `id`'s server certificate.
pub fn server_name(id: NodeId) -> ServerName<'static> {
    ServerName::try_from(member_name(id)).expect("a valid DNS name")
}

/// What [`generate`] wrote.
#[derive(Debug)]
pub struct Generated {
    /// Whether the CA was made now (false: an existing `ca.pem`/`ca.key` signed the rest).
    pub new_ca: bool,
    pub files: Vec<PathBuf>,
}

/// Makes (or reuses, when `out` already holds `ca.pem` and `ca.key`) the cluster's CA and signs
/// a certificate for each of `members` and one admin certificate. Keys are written `0600`.
pub fn generate(members: &[NodeId], out: &Path) -> Result<Generated, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| TlsError::Config(e.to_string());
    std::fs::create_dir_all(out).map_err(|e| TlsError::File {
        path: out.into(),
        reason: e.to_string(),
    })?;
    let now = time::OffsetDateTime::now_utc();
    let mut written = Vec::new();
    let (ca_pem, ca_key) = (out.join("ca.pem"), out.join("ca.key"));
    let new_ca = !(ca_pem.exists() && ca_key.exists());
    let issuer = if new_ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "keepwarm cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key).map_err(err)?;
        write(&ca_pem, cert.pem().as_bytes(), false)?;
        write(&ca_key, private_key_pem(&key).as_bytes(), true)?;
        written.extend([ca_pem.clone(), ca_key.clone()]);
        Issuer::new(params, key)
    } else {
        let key = KeyPair::from_pem(&String::from_utf8_lossy(&read(&ca_key)?)).map_err(|e| {
            TlsError::File {
                path: ca_key.clone(),
                reason: e.to_string(),
            }
        })?;
        Issuer::from_ca_cert_pem(&String::from_utf8_lossy(&read(&ca_pem)?), key).map_err(|e| {
            TlsError::File {
                path: ca_pem.clone(),
                reason: e.to_string(),
            }
        })?
    };
    let leaves = members
        .iter()
        .map(|id| (format!("member-{id}"), member_name(*id)))
        .chain([("admin".to_string(), admin_name())]);
    for (file, name) in leaves {
        // Ed25519: the cheapest signatures to make and check in every handshake
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(err)?;
        let mut params = CertificateParams::new(vec![name.clone()]).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(730);
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        let (pem, key_path) = (
            out.join(format!("{file}.pem")),
            out.join(format!("{file}.key")),
        );
        write(&pem, cert.pem().as_bytes(), false)?;
        write(&key_path, private_key_pem(&key).as_bytes(), true)?;
        written.extend([pem, key_path]);
    }
    Ok(Generated {
        new_ca,
        files: written,
    })
}

/// The Ed25519 key as PKCS#8 v1 (RFC 8410: the seed alone), which every common TLS stack
/// reads; ring writes v2 (the public key embedded), which OpenSSL 3.0 (`openssl pkey`, curl,
/// Python's `ssl`) refuses.
fn private_key_pem(key: &rcgen::KeyPair) -> String {
    // SEQUENCE { INTEGER 1, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } …
    const V2: [u8; 16] = [
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    const V1: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let der = key.serialize_der();
    match der.strip_prefix(&V2[..]) {
        Some(rest) if rest.len() >= 32 => {
            use base64::Engine;
            let v1 =
                base64::engine::general_purpose::STANDARD.encode([&V1[..], &rest[..32]].concat());
            format!("-----BEGIN PRIVATE KEY-----\n{v1}\n-----END PRIVATE KEY-----\n")
        }
        _ => key.serialize_pem(),
    }
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = if secret { 0o600 } else { 0o644 };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        // a file that was there keeps its mode on open: set it
        .and_then(|f| {
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .map(|_| f)
        })
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()));
    file.map_err(|e| TlsError::File {
        path: path.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_name_their_members_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let made = generate(&[1, 2], dir.path()).unwrap();
        assert!(made.new_ca);
        let tls = MemberTls::load(&TlsFiles::in_dir(dir.path(), 2), 2);
        assert!(tls.is_ok(), "{tls:?}");
        // member 1's files do not pass for member 2
        let wrong = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("member-1.pem"),
            key: dir.path().join("member-1.key"),
        };
        let e = MemberTls::load(&wrong, 2).unwrap_err().to_string();
        assert!(
            e.contains("member-2.keepwarm") && e.contains("member-1.keepwarm"),
            "{e}"
        );
        assert!(MemberTls::admin_client(&TlsFiles::admin_in_dir(dir.path()), None).is_ok());
        let cert = certs(&dir.path().join("member-1.pem")).unwrap();
        assert_eq!(Identity::of(&cert[0]), Some(Identity::Member(1)));
        let cert = certs(&dir.path().join("admin.pem")).unwrap();
        assert_eq!(Identity::of(&cert[0]), Some(Identity::Admin));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("member-1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Issue 32, item 10: ring's PKCS#8 v2 Ed25519 keys were refused by OpenSSL 3.0.
    #[test]
    fn keys_are_pkcs8_v1_which_openssl_reads() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("admin.key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        generate(&[1], dir.path()).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "an existing key file keeps no wider mode"
        );
        let der = crate::pem::key(&key).unwrap();
        assert_eq!(
            der.secret_der().len(),
            48,
            "PKCS#8 v1: 16 bytes of header, the seed"
        );
        let openssl = std::process::Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(&key)
            .output()
            .expect("openssl is installed (Debian's openssl package)");
        assert!(
            openssl.status.success(),
            "{}",
            String::from_utf8_lossy(&openssl.stderr)
        );
        // and the host still loads what it wrote, the CA key included
        assert!(MemberTls::load(&TlsFiles::in_dir(dir.path(), 1), 1).is_ok());
        assert!(!generate(&[2], dir.path()).unwrap().new_ca);
    }

    #[test]
    fn a_later_run_signs_new_members_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        generate(&[1], dir.path()).unwrap();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let made = generate(&[4], dir.path()).unwrap();
        assert!(!made.new_ca);
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        assert!(MemberTls::load(&TlsFiles::in_dir(dir.path(), 4), 4).is_ok());
    }
}
