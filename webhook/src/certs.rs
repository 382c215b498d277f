//! `flink-webhook certs`: a private CA and a serving certificate for the webhook's Service, for
//! clusters without cert-manager. The CA bundle goes into the MutatingWebhookConfiguration.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("invalid certificate request: {0}")]
    Invalid(String),
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `certs` wrote, and the base64 CA bundle for `caBundle`.
#[derive(Debug)]
pub struct IssuedCerts {
    pub ca_cert: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub ca_bundle_base64: String,
    pub dns_names: Vec<String>,
}

/// The names the API server may use to reach the Service: it dials `NAME.NS.svc`, but clients
/// inside the cluster may use any of the shorter or longer forms.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn issue(
    service: &str,
    namespace: &str,
    out_dir: &Path,
    days: u32,
    extra_names: &[String],
) -> Result<IssuedCerts, CertsError> {
    if !is_dns_label(service) {
        return Err(CertsError::Invalid(format!(
            "service name {service:?} is not a DNS label (lower-case letters, digits, '-')"
        )));
    }
    if !is_dns_label(namespace) {
        return Err(CertsError::Invalid(format!(
            "namespace {namespace:?} is not a DNS label (lower-case letters, digits, '-')"
        )));
    }
    if days == 0 {
        return Err(CertsError::Invalid("--days must be at least 1".into()));
    }
    let now = OffsetDateTime::now_utc();
    // Backdated a little so a node whose clock is slightly behind still accepts it.
    let not_before = now - Duration::minutes(5);
    let not_after = now + Duration::days(i64::from(days));

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(
        DnType::CommonName,
        format!("flink-injector CA ({namespace})"),
    );
    ca_params.distinguished_name = ca_dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    // The CA outlives the serving certificate so that re-issuing the leaf keeps caBundle valid.
    ca_params.not_after = now + Duration::days(i64::from(days) * 2);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut dns_names = service_dns_names(service, namespace);
    dns_names.extend(extra_names.iter().cloned());
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(dns_names.clone())?;
    let mut leaf_dn = DistinguishedName::new();
    leaf_dn.push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    leaf_params.distinguished_name = leaf_dn;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.not_before = not_before;
    leaf_params.not_after = not_after;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    fs::create_dir_all(out_dir).map_err(|source| CertsError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let ca_pem = ca_cert.pem();
    let ca_path = out_dir.join("ca.crt");
    let cert_path = out_dir.join("tls.crt");
    let key_path = out_dir.join("tls.key");
    write_file(&ca_path, ca_pem.as_bytes(), 0o644)?;
    write_file(&cert_path, leaf_cert.pem().as_bytes(), 0o644)?;
    write_file(&key_path, leaf_key.serialize_pem().as_bytes(), 0o600)?;

    use base64::Engine as _;
    Ok(IssuedCerts {
        ca_cert: ca_path,
        tls_cert: cert_path,
        tls_key: key_path,
        ca_bundle_base64: base64::engine::general_purpose::STANDARD.encode(ca_pem),
        dns_names,
    })
}

/// Writes through a temporary file and a rename so a webhook watching the directory never
/// loads a half-written key.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_names_that_are_not_dns_labels() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue("Flink_Webhook", "flink-system", dir.path(), 30, &[]).unwrap_err();
        assert!(err.to_string().contains("Flink_Webhook"), "{err}");
        let err = issue("flink-webhook", "flink-system", dir.path(), 0, &[]).unwrap_err();
        assert!(err.to_string().contains("--days"), "{err}");
    }

    #[test]
    fn writes_a_chain_rustls_accepts_for_the_service_name() {
        let dir = tempfile::tempdir().unwrap();
        let issued = issue("flink-webhook", "flink-system", dir.path(), 30, &[]).unwrap();
        assert_eq!(issued.dns_names[2], "flink-webhook.flink-system.svc");
        let key = std::fs::read(&issued.tls_key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&issued.tls_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(String::from_utf8_lossy(&key).contains("PRIVATE KEY"));
        // The leaf must load as a serving certificate.
        crate::tls::load_certified_key(&issued.tls_cert, &issued.tls_key).unwrap();
    }
}
