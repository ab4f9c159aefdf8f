//! `detour cluster register`: the YAML that registers a member cluster.
//!
//! In the member cluster: a ServiceAccount for detour with least privilege — read
//! Services and EndpointSlices (discovery), write only detour's mTLS Secret — its
//! long-lived token Secret, and the namespace of that Secret. In the management cluster:
//! the kubeconfig Secret (a template to fill with the token and CA) and the MemberCluster.

use super::secrets::SECRET_NAMES;
use detour_core::docs::{GatewaySpec, KubeconfigSecretRef, MemberCluster, MemberClusterSpec};
use detour_core::model::{Host, parse_host};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use std::collections::BTreeMap;

/// Name of detour's ServiceAccount (and its roles) in a member cluster.
pub const SERVICE_ACCOUNT: &str = "detour-member";

#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// The MemberCluster's name.
    pub name: String,
    /// Its east-west gateway, as the other clusters reach it.
    pub gateway_address: String,
    pub gateway_port: u16,
    /// The member's API server URL, for the kubeconfig.
    pub server: Option<String>,
    /// Namespace of detour's objects in the member cluster (its mTLS Secret).
    pub member_namespace: String,
    /// The controller's namespace in the management cluster (kubeconfig Secrets).
    pub controller_namespace: String,
    /// The cluster the controller runs in: no ServiceAccount nor kubeconfig (the
    /// controller's own RBAC, from its Helm chart, covers it).
    pub local: bool,
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "detour".to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

fn rule(group: &str, resource: &str, names: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(vec![resource.to_string()]),
        resource_names: (!names.is_empty()).then(|| names.iter().map(|n| n.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// One YAML document, with comment lines above it.
fn doc(comment: &str, object: &impl Serialize) -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for line in comment.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&serde_norway::to_string(object)?);
    Ok(out)
}

/// The registration YAML (several documents; comments say where each one goes).
pub fn render(opts: &RegisterOptions) -> anyhow::Result<String> {
    detour_core::validate::dns_name(&opts.name, 253, true)
        .map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    detour_core::validate::dns_name(&opts.member_namespace, 63, false)
        .map_err(|e| anyhow::anyhow!("--namespace: {e}"))?;
    detour_core::validate::dns_name(&opts.controller_namespace, 63, false)
        .map_err(|e| anyhow::anyhow!("--controller-namespace: {e}"))?;
    if let Host::Ip(ip) =
        parse_host(&opts.gateway_address).map_err(|e| anyhow::anyhow!("--gateway: {e}"))?
        && ip.is_unspecified()
    {
        anyhow::bail!(
            "--gateway: {ip} is a listening address, not one the other clusters can reach"
        );
    }
    if opts.gateway_port == 0 {
        anyhow::bail!("--gateway: port 0 is not a port one can connect to");
    }
    let name = opts.name.as_str();
    let ns = opts.member_namespace.as_str();
    let secret_name = format!("{name}-kubeconfig");
    let mut docs = Vec::new();

    if !opts.local {
        let context = format!("kubectl --context <{name}>");
        docs.push(doc(
            &format!(
                "=== Apply in member cluster {name}: {context} apply -f -\n\
                 Where detour writes this cluster's mTLS Secrets ({}).",
                SECRET_NAMES.join(", ")
            ),
            &Namespace {
                metadata: meta(ns, None),
                ..Namespace::default()
            },
        )?);
        docs.push(doc(
            "detour's identity in this cluster.",
            &ServiceAccount {
                metadata: meta(SERVICE_ACCOUNT, Some(ns)),
                ..ServiceAccount::default()
            },
        )?);
        docs.push(doc(
            "Discovery: read Services and EndpointSlices (every namespace a scheme may name).",
            &ClusterRole {
                metadata: meta(&format!("{SERVICE_ACCOUNT}-discovery"), None),
                rules: Some(vec![
                    rule("", "services", &[], &["get", "list", "watch"]),
                    rule(
                        "discovery.k8s.io",
                        "endpointslices",
                        &[],
                        &["get", "list", "watch"],
                    ),
                ]),
                ..ClusterRole::default()
            },
        )?);
        docs.push(doc(
            "",
            &ClusterRoleBinding {
                metadata: meta(&format!("{SERVICE_ACCOUNT}-discovery"), None),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: format!("{SERVICE_ACCOUNT}-discovery"),
                },
                subjects: Some(vec![subject(ns)]),
            },
        )?);
        docs.push(doc(
            &format!(
                "mTLS material: read the Secrets {} and write them by server-side apply\n\
                 (a PATCH), in {ns} only. The API server authorizes that PATCH as `create`\n\
                 while a Secret does not exist, and `create` cannot be limited to a name\n\
                 (RBAC has no name before the object exists): it is granted in {ns} alone.",
                SECRET_NAMES.join(", ")
            ),
            &Role {
                metadata: meta(&format!("{SERVICE_ACCOUNT}-secrets"), Some(ns)),
                rules: Some(vec![
                    rule("", "secrets", &SECRET_NAMES, &["get", "patch"]),
                    rule("", "secrets", &[], &["create"]),
                ]),
            },
        )?);
        docs.push(doc(
            "",
            &RoleBinding {
                metadata: meta(&format!("{SERVICE_ACCOUNT}-secrets"), Some(ns)),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: format!("{SERVICE_ACCOUNT}-secrets"),
                },
                subjects: Some(vec![subject(ns)]),
            },
        )?);
        let mut token = Secret {
            metadata: meta(&format!("{SERVICE_ACCOUNT}-token"), Some(ns)),
            type_: Some("kubernetes.io/service-account-token".into()),
            ..Secret::default()
        };
        token.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/service-account.name".to_string(),
            SERVICE_ACCOUNT.to_string(),
        )]));
        docs.push(doc(
            "A long-lived token of that ServiceAccount, for the kubeconfig below.",
            &token,
        )?);

        let server = opts
            .server
            .clone()
            .unwrap_or_else(|| "https://<API SERVER OF THIS CLUSTER>:6443".to_string());
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority-data: <CA>\nusers:\n- name: {SERVICE_ACCOUNT}\n  user:\n    token: <TOKEN>\ncontexts:\n- name: {name}\n  context: {{cluster: {name}, user: {SERVICE_ACCOUNT}}}\ncurrent-context: {name}\n"
        );
        let mut secret = Secret {
            metadata: meta(&secret_name, Some(&opts.controller_namespace)),
            type_: Some("Opaque".into()),
            string_data: Some(BTreeMap::from([(
                detour_core::docs::DEFAULT_KUBECONFIG_KEY.to_string(),
                kubeconfig,
            )])),
            ..Secret::default()
        };
        if let Some(labels) = secret.metadata.labels.as_mut() {
            labels.insert(super::KUBECONFIG_LABEL.to_string(), "true".to_string());
        }
        docs.push(doc(
            &format!(
                "=== Apply in the management cluster: kubectl --context <management> apply -f -\n\
                 How detour reaches {name}. Replace <CA> and <TOKEN> first:\n\
                 \x20 <CA>:    {context} -n {ns} get secret {SERVICE_ACCOUNT}-token -o jsonpath='{{.data.ca\\.crt}}'\n\
                 \x20 <TOKEN>: {context} -n {ns} get secret {SERVICE_ACCOUNT}-token -o jsonpath='{{.data.token}}' | base64 -d\n\
                 Credentials must stay inline: detour refuses exec plugins and file paths."
            ),
            &secret,
        )?);
    }

    let mut cluster = MemberCluster::new(
        name,
        MemberClusterSpec {
            gateway: GatewaySpec {
                address: Some(opts.gateway_address.clone()),
                addresses: Vec::new(),
                port: opts.gateway_port,
            },
            services: Vec::new(),
            kubeconfig_secret: (!opts.local).then(|| KubeconfigSecretRef {
                name: secret_name.clone(),
                key: None,
            }),
        },
    );
    cluster.metadata.labels = None;
    let comment = if opts.local {
        format!("=== Apply in the management cluster: {name} is the cluster detour runs in.")
    } else {
        format!("The member cluster itself (services are discovered through {secret_name}).")
    };
    docs.push(doc(&comment, &cluster)?);
    Ok(docs.join("---\n"))
}

fn subject(namespace: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: SERVICE_ACCOUNT.into(),
        namespace: Some(namespace.to_string()),
        ..Subject::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::Value;

    fn opts() -> RegisterOptions {
        RegisterOptions {
            name: "west".into(),
            gateway_address: "gw.west.example".into(),
            gateway_port: 15443,
            server: Some("https://west.example:6443".into()),
            member_namespace: "detour-system".into(),
            controller_namespace: "detour".into(),
            local: false,
        }
    }

    fn parse(text: &str) -> Vec<Value> {
        serde_norway::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).unwrap())
            .collect()
    }

    fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
        docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    /// apiGroups, resources, resourceNames, verbs.
    type Rule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

    /// The rules of a role.
    fn rules(role: &Value) -> Vec<Rule> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    strings(&r["apiGroups"]),
                    strings(&r["resources"]),
                    strings(&r["resourceNames"]),
                    strings(&r["verbs"]),
                )
            })
            .collect()
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_output_parses_and_grants_exactly_what_detour_needs() {
        let text = render(&opts()).unwrap();
        let docs = parse(&text);
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Secret",
                "Secret",
                "MemberCluster"
            ]
        );
        let cluster_role = find(&docs, "ClusterRole")[0];
        assert_eq!(
            rules(cluster_role),
            [
                (
                    v(&[""]),
                    v(&["services"]),
                    v(&[]),
                    v(&["get", "list", "watch"])
                ),
                (
                    v(&["discovery.k8s.io"]),
                    v(&["endpointslices"]),
                    v(&[]),
                    v(&["get", "list", "watch"])
                ),
            ]
        );
        let role = find(&docs, "Role")[0];
        assert_eq!(role["metadata"]["namespace"], "detour-system");
        assert_eq!(
            rules(role),
            [
                (
                    v(&[""]),
                    v(&["secrets"]),
                    v(&["detour-mtls-gateway", "detour-mtls-client"]),
                    v(&["get", "patch"])
                ),
                (v(&[""]), v(&["secrets"]), v(&[]), v(&["create"])),
            ]
        );
        // Every binding names the ServiceAccount and the role above.
        for (binding, role) in [
            ("ClusterRoleBinding", "ClusterRole"),
            ("RoleBinding", "Role"),
        ] {
            let b = find(&docs, binding)[0];
            assert_eq!(b["roleRef"]["kind"], role);
            assert_eq!(
                b["roleRef"]["name"],
                find(&docs, role)[0]["metadata"]["name"]
            );
            assert_eq!(b["subjects"][0]["name"], SERVICE_ACCOUNT);
            assert_eq!(b["subjects"][0]["namespace"], "detour-system");
        }
        let secrets = find(&docs, "Secret");
        assert_eq!(secrets[0]["type"], "kubernetes.io/service-account-token");
        let kubeconfig = secrets[1];
        assert_eq!(kubeconfig["metadata"]["namespace"], "detour");
        assert_eq!(
            kubeconfig["metadata"]["labels"][super::super::KUBECONFIG_LABEL],
            "true"
        );
        let text = kubeconfig["stringData"]["kubeconfig"].as_str().unwrap();
        let parsed = kube::config::Kubeconfig::from_yaml(text).unwrap();
        assert_eq!(super::super::client::check_inline(&parsed), Ok(()));
        assert!(text.contains("server: https://west.example:6443"));

        // The MemberCluster is a document detour reads, naming that Secret.
        let mc_text = text_of_last(&render(&opts()).unwrap());
        let (parsed, problems) = detour_core::docs::load::parse_file("register.yaml", &mc_text);
        assert!(problems.is_empty(), "{problems:?}");
        let detour_core::docs::Object::MemberCluster { name, spec } = &parsed[0].object else {
            panic!("{parsed:?}")
        };
        assert_eq!(name, "west");
        assert_eq!(
            spec.kubeconfig_secret.as_ref().unwrap().name,
            "west-kubeconfig"
        );
        assert_eq!(spec.gateway.address.as_deref(), Some("gw.west.example"));
    }

    fn text_of_last(text: &str) -> String {
        text.rsplit("---\n").next().unwrap().to_string()
    }

    #[test]
    fn the_local_cluster_needs_only_its_member_cluster() {
        let text = render(&RegisterOptions {
            local: true,
            ..opts()
        })
        .unwrap();
        let docs = parse(&text);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["kind"], "MemberCluster");
        assert!(docs[0]["spec"].get("kubeconfigSecret").is_none());
    }

    #[test]
    fn bad_names_and_gateways_are_refused() {
        let bad = RegisterOptions {
            name: "West_1".into(),
            ..opts()
        };
        assert!(render(&bad).unwrap_err().to_string().starts_with("--name:"));
        let bad = RegisterOptions {
            gateway_address: "0.0.0.0".into(),
            ..opts()
        };
        assert!(
            render(&bad)
                .unwrap_err()
                .to_string()
                .contains("listening address")
        );
    }
}
