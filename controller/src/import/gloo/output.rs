//! Writing the imported documents: one multi-document YAML, or one file per document.

use super::Imported;
use detour_core::docs::{API_VERSION, FailoverSchemeSpec, Kind, MemberClusterSpec};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One detour document, as a file holds it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a, S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata<'a>,
    spec: &'a S,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

/// Each document: a file name for it and its YAML.
pub fn documents(imported: &Imported) -> Result<Vec<(String, String)>, serde_norway::Error> {
    let mut out = Vec::new();
    for (name, spec) in &imported.clusters {
        let yaml = yaml::<MemberClusterSpec>(Kind::MemberCluster, name, None, spec)?;
        out.push((format!("membercluster.{name}.yaml"), yaml));
    }
    for (namespace, name, spec) in &imported.schemes {
        let yaml = yaml::<FailoverSchemeSpec>(Kind::FailoverScheme, name, Some(namespace), spec)?;
        // A namespace holds no '.', so the file name says which document it is.
        out.push((format!("failoverscheme.{namespace}.{name}.yaml"), yaml));
    }
    Ok(out)
}

fn yaml<S: Serialize>(
    kind: Kind,
    name: &str,
    namespace: Option<&str>,
    spec: &S,
) -> Result<String, serde_norway::Error> {
    serde_norway::to_string(&Document {
        api_version: API_VERSION,
        kind: kind.as_str(),
        metadata: Metadata { name, namespace },
        spec,
    })
}

/// Every document in one multi-document YAML stream.
pub fn to_yaml(imported: &Imported) -> Result<String, serde_norway::Error> {
    let docs = documents(imported)?;
    Ok(docs
        .into_iter()
        .map(|(_, yaml)| format!("---\n{yaml}"))
        .collect())
}

/// Writes one file per document into `dir` (created); returns the paths written.
pub fn write_dir(imported: &Imported, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for (file, yaml) in documents(imported)? {
        let path = dir.join(file);
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
