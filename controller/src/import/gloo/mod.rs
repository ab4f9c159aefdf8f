//! `detour import gloo`: Gloo Federation's `FailoverScheme`s, `Upstream`s and
//! `KubernetesCluster`s in, detour's `FailoverScheme`s and `MemberCluster`s out, with a
//! report naming every field that could not be carried and why.
//!
//! [`read`] reads the Gloo documents (refusing what it cannot read, with file, document
//! and field; [`fields`] does the reading), [`convert`] gives them detour's meaning (with
//! [`naming`] for Upstreams it has not seen and [`health`] for checks), [`uncarried`]
//! says why a field has no place in detour, and [`output`] writes the documents as
//! `detour check` reads them.

pub mod convert;
pub mod fields;
pub mod health;
pub mod naming;
pub mod output;
pub mod read;
pub mod uncarried;

#[cfg(test)]
mod tests;

pub use convert::{Imported, Options};

use detour_core::docs::Origin;
use detour_core::docs::load::SourceFile;
use std::fmt;

/// A refusal, or a note about a field not carried, located as detour's own problems
/// are (`FILE: document N (Kind NS/NAME): FIELD: message`). Its own type: a Gloo
/// document is not one of detour's objects, so what it is about is told as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    /// `Upstream gloo-system/foo`, when the problem is in one document.
    pub subject: Option<String>,
    /// Field path inside the document, when the problem is in one field.
    pub path: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(s) = &self.subject {
            write!(f, " ({s})")?;
        }
        if let Some(p) = &self.path {
            write!(f, ": {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Reads every file and converts what it holds; refuses with every problem found.
pub fn import(files: &[SourceFile], opts: &Options) -> Result<Imported, Vec<Problem>> {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    let mut skipped = Vec::new();
    for file in files {
        let contents = read::read_file(&file.path.display().to_string(), &file.text);
        docs.extend(contents.docs);
        skipped.extend(contents.skipped);
        problems.extend(contents.refused.into_iter().map(|r| Problem {
            origin: r.origin,
            subject: r.subject,
            path: (!r.error.path.is_empty()).then_some(r.error.path),
            message: r.error.message,
        }));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut imported = convert::convert(&docs, opts)?;
    let skipped = skipped.into_iter().map(|(origin, what)| Problem {
        origin,
        subject: None,
        path: None,
        message: format!("skipped {what}: not a document the import reads"),
    });
    imported.report.splice(0..0, skipped);
    // In file order, so that each document's notes read together.
    imported.report.sort_by(|a, b| {
        (&a.origin.source, a.origin.document).cmp(&(&b.origin.source, b.origin.document))
    });
    Ok(imported)
}
