//! Envoy SDS `Secret` resources as files (`sds_config.path_config_source`): what
//! `detour certs init` (and the Kubernetes Secret writer) store, and what the rendered
//! Envoy config loads and reloads when the file is replaced.

use serde_json::json;

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// A `tls_certificate` Secret named `name`: the certificate chain and its key, inline.
pub fn certificate(name: &str, cert_pem: &str, key_pem: &str) -> String {
    document(json!({
        "@type": SECRET_TYPE,
        "name": name,
        "tls_certificate": {
            "certificate_chain": {"inline_string": cert_pem},
            "private_key": {"inline_string": key_pem},
        },
    }))
}

/// A `validation_context` Secret named `name`: the CA certificates to trust (one or
/// more PEM blocks; during a change of CA, the old and the new).
pub fn trust(name: &str, cas_pem: &str) -> String {
    document(json!({
        "@type": SECRET_TYPE,
        "name": name,
        "validation_context": {"trusted_ca": {"inline_string": cas_pem}},
    }))
}

fn document(resource: serde_json::Value) -> String {
    let mut text =
        serde_json::to_string_pretty(&json!({ "resources": [resource] })).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_secret_per_file() {
        let doc: serde_json::Value =
            serde_json::from_str(&certificate("envoy", "CERT", "KEY")).unwrap();
        assert_eq!(doc["resources"][0]["name"], "envoy");
        assert_eq!(
            doc["resources"][0]["tls_certificate"]["private_key"]["inline_string"],
            "KEY"
        );
        let doc: serde_json::Value = serde_json::from_str(&trust("ca", "A\nB")).unwrap();
        assert_eq!(
            doc["resources"][0]["validation_context"]["trusted_ca"]["inline_string"],
            "A\nB"
        );
    }
}
