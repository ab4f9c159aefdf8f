//! The CRDs of detour's documents, generated from the Rust types (`detour crds`).
//!
//! `manifests/crds/` holds one file per CRD, exactly as printed here, and the Helm chart
//! ships a copy (`manifests/helm/detour/crds/`); a test fails when either drifts.
//! Regenerate both with `make crds` (`cargo run -p detour -- crds --out manifests/crds`,
//! then a copy into the chart).

use detour_core::docs::{FailoverScheme, MemberCluster};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use std::path::{Path, PathBuf};

/// Every CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    [FailoverScheme::crd(), MemberCluster::crd()]
        .into_iter()
        .map(known_formats_only)
        .collect()
}

/// The CRD without the `format`s an API server does not know. schemars names unsigned
/// integers' formats `uint16`, `uint32`, `uint64`, and kube-apiserver answers every
/// apply of such a CRD (`kubectl apply`, `helm install`) with an "unrecognized format"
/// warning per field; their range is in `minimum`/`maximum` already.
fn known_formats_only(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let Ok(mut value) = serde_json::to_value(&crd) else {
        // Not reachable (a CRD always serializes); the CRD as derived is still valid.
        return crd;
    };
    drop_unsigned_formats(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

fn drop_unsigned_formats(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            // A property *named* `format` holds a schema (an object), never a string.
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(drop_unsigned_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_unsigned_formats),
        _ => {}
    }
}

/// `failoverschemes.detour.dev.yaml`: the CRD's name, as a file.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

const HEADER: &str =
    "# Generated from the Rust types by `detour crds`; do not edit (`make crds`).\n";

/// One CRD as a YAML document, with the generated-file header.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_norway::Error> {
    Ok(format!("{HEADER}{}", serde_norway::to_string(crd)?))
}

/// Every CRD as one multi-document YAML stream (`detour crds`).
pub fn render_all() -> Result<String, serde_norway::Error> {
    let docs = all().iter().map(render).collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}

/// Writes one file per CRD into `dir`; returns the paths written.
pub fn write_dir(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for crd in all() {
        let path = dir.join(file_name(&crd));
        std::fs::write(&path, render(&crd)?)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The repository's `manifests/crds/`.
    fn manifests() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds")
    }

    #[test]
    fn the_checked_in_crds_match_the_types() {
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/helm/detour/crds");
        for (crd, dir) in all()
            .into_iter()
            .flat_map(|crd| [(crd.clone(), manifests()), (crd, chart.clone())])
        {
            let path = dir.join(file_name(&crd));
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == render(&crd).unwrap(),
                "{} is out of date with the Rust types: run `make crds` \
                 (it rewrites manifests/crds/ and the Helm chart's copy) and commit the result",
                path.display()
            );
        }
        let files = std::fs::read_dir(manifests()).unwrap().count();
        assert_eq!(files, all().len(), "one file per CRD, nothing else");
    }

    fn schema(crd: &CustomResourceDefinition) -> Value {
        let v = serde_json::to_value(crd).unwrap();
        v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn required(v: &Value) -> Vec<&str> {
        v["required"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_failover_scheme_schema_carries_the_constraints() {
        let s = schema(&FailoverScheme::crd());
        assert_eq!(required(&s), ["spec"]);
        let spec = &s["properties"]["spec"];
        assert_eq!(required(spec), ["failoverGroups", "primary"]);
        assert_eq!(
            required(&spec["properties"]["primary"]),
            ["cluster", "name", "namespace"]
        );
        let groups = &spec["properties"]["failoverGroups"];
        assert_eq!(groups["minItems"], 1);
        let group = &groups["items"]["properties"]["priorityGroup"];
        assert_eq!(group["minItems"], 1);
        let target = &group["items"];
        assert_eq!(required(target), ["cluster", "services"]);
        assert_eq!(
            target["properties"]["weight"]["minimum"].as_f64(),
            Some(1.0)
        );
        assert_eq!(target["properties"]["services"]["minItems"], 1);
        assert_eq!(
            target["properties"]["cluster"]["pattern"],
            r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
        );
        let hc = &spec["properties"]["healthCheck"]["properties"];
        assert_eq!(hc["unhealthyThreshold"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(hc["healthyThreshold"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(
            hc["interval"]["pattern"],
            detour_core::docs::DURATION_PATTERN
        );
        assert_eq!(hc["path"]["pattern"], "^/[!-~]*$");
        assert_eq!(
            spec["properties"]["failback"]["properties"]["stableFor"]["pattern"],
            detour_core::docs::DURATION_PATTERN
        );
        assert_eq!(
            spec["properties"]["replay"]["properties"]["methods"]["items"]["pattern"],
            "^[A-Za-z-]+$"
        );
        let status = &s["properties"]["status"]["properties"];
        assert_eq!(
            status["state"]["enum"],
            serde_json::json!(["Accepted", "Invalid", "Failed", "Pending"])
        );
        assert_eq!(
            status["targets"]["items"]["properties"]["health"]["enum"],
            serde_json::json!(["Healthy", "Unhealthy", "Unknown"])
        );
        assert_eq!(
            required(&status["targets"]["items"]),
            ["cluster", "health", "name", "namespace"]
        );
    }

    #[test]
    fn the_member_cluster_schema_carries_the_constraints() {
        let crd = MemberCluster::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        let s = schema(&crd);
        let spec = &s["properties"]["spec"];
        assert_eq!(required(spec), ["gateway"]);
        let gateway = &spec["properties"]["gateway"];
        // `address` or `addresses`: exactly one, which the server checks by CEL.
        assert!(required(gateway).is_empty());
        assert_eq!(
            gateway["x-kubernetes-validations"][0]["rule"],
            "has(self.address) != has(self.addresses)"
        );
        assert_eq!(
            gateway["properties"]["addresses"]["items"]["maxLength"].as_f64(),
            Some(253.0)
        );
        assert_eq!(gateway["properties"]["port"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(
            gateway["properties"]["port"]["maximum"].as_f64(),
            Some(65535.0)
        );
        assert_eq!(gateway["properties"]["port"]["default"], 15443);
        let secret = &spec["properties"]["kubeconfigSecret"];
        assert_eq!(required(secret), ["name"]);
        let service = &spec["properties"]["services"]["items"];
        assert_eq!(required(service), ["name", "namespace", "port"]);
        assert_eq!(service["properties"]["port"]["minimum"].as_f64(), Some(1.0));
    }

    #[test]
    fn only_formats_the_api_server_knows() {
        // Unsigned fields are bounded by `minimum` instead (a real API server warns
        // about a `uint32` format on every apply: `make test-kube` checks it).
        let derived = serde_json::to_string(&MemberCluster::crd()).unwrap();
        assert!(
            derived.contains(r#""format":"uint16""#),
            "the case this is about"
        );
        for crd in all() {
            let text = serde_json::to_string(&crd).unwrap();
            assert!(!text.contains(r#""format":"uint"#), "{}", file_name(&crd));
            assert!(
                text.contains(r#""format":"int64""#),
                "known formats are kept"
            );
        }
        let port =
            &schema(&all()[1])["properties"]["spec"]["properties"]["gateway"]["properties"]["port"];
        assert_eq!(port["minimum"].as_f64(), Some(1.0));
        assert_eq!(port["format"], Value::Null);
    }

    #[test]
    fn printer_columns_and_status_subresources() {
        for crd in all() {
            let v = serde_json::to_value(&crd).unwrap();
            let version = &v["spec"]["versions"][0];
            assert_eq!(version["name"], "v1alpha1");
            assert!(
                version["subresources"]["status"].is_object(),
                "{}",
                file_name(&crd)
            );
            let columns: Vec<&str> = version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c["name"].as_str())
                .collect();
            assert!(columns.starts_with(&["State"]), "{columns:?}");
            assert!(columns.contains(&"Age"), "{columns:?}");
            assert_eq!(
                v["spec"]["names"]["categories"],
                serde_json::json!(["detour"])
            );
        }
        let fs = serde_json::to_value(FailoverScheme::crd()).unwrap();
        let active = &fs["spec"]["versions"][0]["additionalPrinterColumns"][1];
        assert_eq!(active["name"], "Active");
        assert_eq!(active["jsonPath"], ".status.activeGroup");
        assert_eq!(active["type"], "integer");
    }
}
