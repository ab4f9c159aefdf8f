//! The in-memory index of documents, fed by a source through `reset` / `apply` /
//! `delete`, and turned into a validated [`Model`].
//!
//! The file source resets the whole set on every change. The Kubernetes source
//! (`crate::kube::index`) turns its watches into the same documents — a MemberCluster
//! with its discovered services listed, as a file would list them — and resets this
//! index with them in a stable order. Both end in the same validation and the same model.

use crate::docs::{Document, Kind, Problem};
use crate::model::Model;
use crate::validate::{self, Mode, Policy};

#[derive(Debug, Default, Clone)]
pub struct Index {
    mode: Mode,
    policy: Policy,
    /// In source order, which decides which of two conflicting documents is reported.
    docs: Vec<Document>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// An index of documents of `mode` (see [`Mode`]).
    pub fn with_mode(mode: Mode) -> Index {
        Index::with_policy(mode, Policy::default())
    }

    /// An index of documents of `mode`, validated under `policy`.
    pub fn with_policy(mode: Mode, policy: Policy) -> Index {
        Index {
            mode,
            policy,
            docs: Vec::new(),
        }
    }

    /// Replaces every document (a full listing: a re-read directory, a relist).
    pub fn reset(&mut self, docs: Vec<Document>) {
        self.docs = docs;
    }

    /// Adds a document, or replaces the one of the same kind, namespace and name.
    pub fn apply(&mut self, doc: Document) {
        let same = |d: &Document| {
            d.object.kind() == doc.object.kind()
                && d.object.namespace() == doc.object.namespace()
                && d.object.name() == doc.object.name()
        };
        match self.docs.iter_mut().find(|d| same(d)) {
            Some(existing) => *existing = doc,
            None => self.docs.push(doc),
        }
    }

    /// Removes a document; false when there was none.
    pub fn delete(&mut self, kind: Kind, namespace: Option<&str>, name: &str) -> bool {
        let before = self.docs.len();
        self.docs.retain(|d| {
            !(d.object.kind() == kind
                && d.object.namespace() == namespace
                && d.object.name() == name)
        });
        self.docs.len() != before
    }

    pub fn documents(&self) -> &[Document] {
        &self.docs
    }

    /// The model of the current documents, or every problem with them.
    pub fn model(&self) -> Result<Model, Vec<Problem>> {
        validate::build_model_in(&self.docs, self.mode, &self.policy)
    }

    /// The model of every valid document, and the problems of the others.
    pub fn partial_model(&self) -> (Model, Vec<Problem>) {
        validate::build_partial(&self.docs, self.mode, &self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::load::parse_file;
    use crate::testing::EXAMPLE;

    fn docs(text: &str) -> Vec<Document> {
        let (docs, problems) = parse_file("t.yaml", text);
        assert!(problems.is_empty(), "{problems:?}");
        docs
    }

    #[test]
    fn apply_and_delete_change_the_model() {
        let mut index = Index::new();
        index.reset(docs(EXAMPLE));
        let model = index.model().unwrap();
        assert_eq!(model.clusters.len(), 3);
        assert_eq!(model.schemes.len(), 1);

        // Deleting a cluster a scheme names makes the set invalid...
        assert!(index.delete(Kind::MemberCluster, None, "south"));
        let problems = index.model().unwrap_err();
        assert!(
            problems[0]
                .to_string()
                .contains("unknown cluster \"south\""),
            "{problems:?}"
        );
        // ...and applying it again restores the model.
        let south = docs(EXAMPLE)
            .into_iter()
            .find(|d| d.object.name() == "south")
            .unwrap();
        index.apply(south.clone());
        assert_eq!(index.model().unwrap(), model);
        // Applying the same object replaces it rather than duplicating it.
        index.apply(south);
        assert_eq!(index.documents().len(), 4);
        assert!(!index.delete(Kind::FailoverScheme, Some("apps"), "nope"));
        assert!(index.delete(Kind::FailoverScheme, Some("apps"), "foo"));
        assert!(index.model().unwrap().schemes.is_empty());
    }
}
