//! Parsing documents from the text of files (several documents per file); reading the
//! files is the caller's. Parsing is strict (unknown fields are refused) and every problem
//! names the file, the document and the field path, with the line when YAML knows it.

use super::{
    API_VERSION, Document, FailoverSchemeSpec, Kind, MemberClusterSpec, Object, ObjectRef, Origin,
    Problem, ProblemKind,
};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_norway::Value;
use serde_path_to_error::Segment;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One configuration file as read from disk (by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// Parses every file; returns the documents that parsed and the problems of the rest.
pub fn parse_files(files: &[SourceFile]) -> (Vec<Document>, Vec<Problem>) {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let (d, p) = parse_file(&file.path.display().to_string(), &file.text);
        docs.extend(d);
        problems.extend(p);
    }
    (docs, problems)
}

/// Parses the documents of one file (`source` names it in messages). A document with
/// only unknown fields wrong is returned too (without them), so that validation can
/// report its other problems in the same run.
pub fn parse_file(source: &str, text: &str) -> (Vec<Document>, Vec<Problem>) {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let number = i + 1;
        let origin = Origin::file(source, number);
        let value = match Value::deserialize(doc) {
            Ok(value) => value,
            Err(e) => {
                // The YAML stream is broken here; nothing after it can be trusted.
                problems.push(Problem {
                    kind: ProblemKind::Malformed,
                    origin,
                    object: None,
                    path: None,
                    message: format!("invalid YAML: {e}"),
                });
                break;
            }
        };
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let (doc, p) = parse_document(text, i, origin, value);
        docs.extend(doc);
        problems.extend(p);
    }
    (docs, problems)
}

/// Metadata as files may carry it. Other `ObjectMeta` fields are refused: they are the
/// API server's to set.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    #[allow(dead_code)]
    annotations: BTreeMap<String, String>,
}

/// A whole document. `apiVersion` and `kind` are checked before this is used; `status`
/// is accepted and ignored (the controller writes it), so `kubectl get -o yaml` output
/// can be used as a file.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileDoc<S> {
    #[allow(dead_code)]
    api_version: IgnoredAny,
    #[allow(dead_code)]
    kind: IgnoredAny,
    metadata: FileMeta,
    spec: S,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<IgnoredAny>,
}

fn parse_document(
    text: &str,
    index: usize,
    origin: Origin,
    value: Value,
) -> (Option<Document>, Vec<Problem>) {
    let (object, problems) = parse_object(text, index, &origin, value);
    (object.map(|object| Document { origin, object }), problems)
}

fn parse_object(
    text: &str,
    index: usize,
    origin: &Origin,
    value: Value,
) -> (Option<Object>, Vec<Problem>) {
    let field = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let problem = |path: &str, message: String| Problem {
        kind: ProblemKind::Malformed,
        origin: origin.clone(),
        object: None,
        path: Some(path.to_string()),
        message,
    };
    if !value.is_mapping() {
        return (
            None,
            vec![Problem {
                kind: ProblemKind::Malformed,
                origin: origin.clone(),
                object: None,
                path: None,
                message: "a document must be a mapping with apiVersion, kind, metadata and spec"
                    .into(),
            }],
        );
    }
    let mut problems = Vec::new();
    match field("apiVersion") {
        Some(v) if v == API_VERSION => {}
        Some(v) => problems.push(problem(
            "apiVersion",
            format!("{v:?} is not {API_VERSION:?}"),
        )),
        None => problems.push(problem(
            "apiVersion",
            format!("required (\"{API_VERSION}\")"),
        )),
    }
    let kind = match field("kind") {
        Some(k) => match Kind::parse(&k) {
            Some(kind) => Some(kind),
            None => {
                problems.push(problem(
                    "kind",
                    format!("unknown kind {k:?} (expected MemberCluster or FailoverScheme)"),
                ));
                None
            }
        },
        None => {
            problems.push(problem(
                "kind",
                "required (MemberCluster or FailoverScheme)".into(),
            ));
            None
        }
    };
    let Some(kind) = kind else {
        return (None, problems);
    };
    // Best effort, so that even a document that does not parse is named in messages.
    let meta = value.get("metadata");
    let meta_str = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    let guessed_object = meta_str("name").map(|name| ObjectRef {
        kind,
        namespace: if kind.namespaced() {
            meta_str("namespace").map(str::to_string)
        } else {
            None
        },
        name: name.to_string(),
    });
    if !problems.is_empty() {
        for p in &mut problems {
            p.object.clone_from(&guessed_object);
        }
        return (None, problems);
    }

    let (typed, errors) = match kind {
        Kind::MemberCluster => typed::<MemberClusterSpec, _>(text, index, value, |d| {
            let namespace = d.metadata.namespace.clone();
            (
                d.metadata,
                namespace,
                ObjectSpec::MemberCluster(Box::new(d.spec)),
            )
        }),
        Kind::FailoverScheme => typed::<FailoverSchemeSpec, _>(text, index, value, |d| {
            let namespace = d.metadata.namespace.clone();
            (
                d.metadata,
                namespace,
                ObjectSpec::FailoverScheme(Box::new(d.spec)),
            )
        }),
    };
    let mut problems: Vec<Problem> = errors
        .into_iter()
        .map(|(path, message)| Problem {
            kind: ProblemKind::Malformed,
            origin: origin.clone(),
            object: guessed_object.clone(),
            path,
            message,
        })
        .collect();
    let Some((meta, namespace, spec)) = typed else {
        return (None, problems);
    };
    let object_ref = Some(ObjectRef {
        kind,
        namespace: namespace.clone(),
        name: meta.name.clone(),
    });
    let object = match (spec, namespace) {
        (ObjectSpec::MemberCluster(spec), None) => Object::MemberCluster {
            name: meta.name,
            spec: *spec,
        },
        (ObjectSpec::MemberCluster(_), Some(_)) => {
            problems.push(Problem {
                kind: ProblemKind::Invalid,
                origin: origin.clone(),
                object: object_ref,
                path: Some("metadata.namespace".into()),
                message: "a MemberCluster is cluster-scoped; remove the namespace".into(),
            });
            return (None, problems);
        }
        (ObjectSpec::FailoverScheme(spec), Some(namespace)) => Object::FailoverScheme {
            namespace,
            name: meta.name,
            spec,
        },
        (ObjectSpec::FailoverScheme(_), None) => {
            problems.push(Problem {
                kind: ProblemKind::Invalid,
                origin: origin.clone(),
                object: object_ref,
                path: Some("metadata.namespace".into()),
                message: "required (a FailoverScheme lives in a namespace)".into(),
            });
            return (None, problems);
        }
    };
    (Some(object), problems)
}

enum ObjectSpec {
    MemberCluster(Box<MemberClusterSpec>),
    FailoverScheme(Box<FailoverSchemeSpec>),
}

/// Deserialises one document strictly and maps it with `convert`. Errors are
/// `(field path, message)`; the first carries the line and column when the YAML parser
/// can tell them. An unknown field is removed and the parse retried, so that every
/// misspelt field of a document is reported at once (and the rest still validated);
/// any other error ends the document.
fn typed<S: DeserializeOwned, T>(
    text: &str,
    index: usize,
    mut value: Value,
    convert: impl FnOnce(FileDoc<S>) -> T,
) -> (Option<T>, Vec<(Option<String>, String)>) {
    let mut errors = Vec::new();
    // Bounded: each round removes one key, and a document has finitely many.
    loop {
        let e = match serde_path_to_error::deserialize::<_, FileDoc<S>>(value.clone()) {
            Ok(doc) => return (Some(convert(doc)), errors),
            Err(e) => e,
        };
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let path = e.path().to_string();
        let path = (path != ".").then_some(path);
        let mut message = e.into_inner().to_string();
        if errors.is_empty()
            && let Some(at) = location::<S>(text, index)
        {
            message.push_str(&format!(" (line {}, column {})", at.line(), at.column()));
        }
        let unknown_field = message.starts_with("unknown field");
        errors.push((path, message));
        if !(unknown_field && remove(&mut value, &segments)) {
            return (None, errors);
        }
    }
}

/// Removes the key `segments` leads to; false when it cannot be found.
fn remove(value: &mut Value, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut at = value;
    for s in parents {
        let next = match s {
            Segment::Map { key } => at.get_mut(key.as_str()),
            Segment::Seq { index } => at.get_mut(*index),
            _ => None,
        };
        let Some(next) = next else { return false };
        at = next;
    }
    match (last, at.as_mapping_mut()) {
        (Segment::Map { key }, Some(m)) => m.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// Where the same failure happens when the document is read straight from the YAML text
/// (the value-based parse above gives the clean path; this one knows the position).
fn location<S: DeserializeOwned>(text: &str, index: usize) -> Option<serde_norway::Location> {
    let doc = serde_norway::Deserializer::from_str(text).nth(index)?;
    FileDoc::<S>::deserialize(doc).err()?.location()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "apiVersion: detour.dev/v1alpha1
kind: MemberCluster
metadata: {name: west}
spec:
  gateway: {address: 127.0.2.1, port: 15443}
  services:
  - {name: foo, namespace: apps, port: 8080, endpoints: [\"127.0.2.10:8080\"]}
";

    fn messages(text: &str) -> Vec<String> {
        let (_, problems) = parse_file("c.yaml", text);
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reads_several_documents_and_skips_empty_ones() {
        let text = format!(
            "---\n{CLUSTER}---\n{}\n---\n",
            CLUSTER.replace("west", "south")
        );
        let (docs, problems) = parse_file("c.yaml", &text);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<_> = docs.iter().map(|d| d.object.name()).collect();
        assert_eq!(names, ["west", "south"]);
        assert_eq!(docs[1].origin, Origin::file("c.yaml", 2));
        let Object::MemberCluster { spec, .. } = &docs[0].object else {
            panic!("{docs:?}")
        };
        assert_eq!(spec.gateway.port, 15443);
        assert_eq!(spec.services[0].endpoints, ["127.0.2.10:8080"]);
    }

    #[test]
    fn unknown_fields_are_refused_with_path_and_line() {
        let text = CLUSTER.replace("port: 15443}", "port: 15443, bogus: 1}");
        let m = messages(&text);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("c.yaml: document 1 (MemberCluster west): spec.gateway.bogus: unknown field `bogus`, expected one of `address`, `addresses`, `port`"),
            "{m:?}"
        );
        assert!(m[0].contains("(line 5,"), "{m:?}");
    }

    #[test]
    fn every_unknown_field_is_reported_and_the_rest_still_parses() {
        let text = CLUSTER
            .replace("port: 15443}", "port: 15443, bogus: 1}")
            .replace("port: 8080,", "port: 8080, prot: tcp,");
        let (docs, problems) = parse_file("c.yaml", &text);
        let m: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].contains("spec.gateway.bogus: unknown field `bogus`"),
            "{m:?}"
        );
        assert!(m[0].contains("(line 5,"), "{m:?}");
        assert!(
            m[1].contains("spec.services[0].prot: unknown field `prot`"),
            "{m:?}"
        );
        assert_eq!(docs.len(), 1, "kept for validation");
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let text = CLUSTER.replace("port: 8080", "port: eighty");
        let m = messages(&text);
        assert!(
            m[0].contains("spec.services[0].port: invalid type: string \"eighty\""),
            "{m:?}"
        );
    }

    #[test]
    fn api_version_kind_and_metadata_are_checked() {
        let m = messages(&CLUSTER.replace("detour.dev/v1alpha1", "detour.dev/v1"));
        assert!(
            m[0].contains("(MemberCluster west): apiVersion: \"detour.dev/v1\" is not"),
            "{m:?}"
        );
        let m = messages(&CLUSTER.replace("kind: MemberCluster", "kind: Cluster"));
        assert!(m[0].contains("kind: unknown kind \"Cluster\""), "{m:?}");
        let m = messages(&CLUSTER.replace("{name: west}", "{name: west, namespace: x}"));
        assert!(
            m[0].contains("metadata.namespace: a MemberCluster is cluster-scoped"),
            "{m:?}"
        );
        let m = messages(&CLUSTER.replace("{name: west}", "{generation: 3}"));
        assert!(
            m[0].starts_with("c.yaml: document 1: metadata.generation: unknown field `generation`"),
            "{m:?}"
        );
        let m = messages("just a string");
        assert!(m[0].contains("must be a mapping"), "{m:?}");
    }

    #[test]
    fn broken_yaml_stops_the_file_with_a_position() {
        let text = format!("{CLUSTER}---\nkind: [unclosed\n---\n{CLUSTER}");
        let (docs, problems) = parse_file("c.yaml", &text);
        assert_eq!(docs.len(), 1);
        assert_eq!(problems.len(), 1);
        let m = problems[0].to_string();
        assert!(m.starts_with("c.yaml: document 2: invalid YAML:"), "{m}");
        assert!(m.contains("line"), "{m}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let m = messages(&CLUSTER.replace(
            "metadata: {name: west}",
            "metadata: {name: west}\nmetadata: {name: east}",
        ));
        assert!(m[0].contains("duplicate"), "{m:?}");
    }
}
