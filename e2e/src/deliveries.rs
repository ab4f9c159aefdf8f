//! What the service instances received, matched with what clients saw: every request
//! of a [`crate::load::Load`] carries an `x-test-id`, and every instance records it
//! before answering (records survive SIGKILL). "No POST delivered twice" and "a failed
//! POST was cut off, not lost" are read from here.

use crate::load::{LoadReport, Sample};
use crate::topology::Topology;
use anyhow::Result;
use std::collections::BTreeMap;

/// One arrival of a request at a service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub cluster: String,
    pub instance: usize,
    pub method: String,
}

/// Every recorded arrival, by test id.
#[derive(Debug, Clone, Default)]
pub struct Deliveries {
    by_id: BTreeMap<String, Vec<Delivery>>,
}

impl Deliveries {
    /// Reads the records of every instance of every member cluster of `t`.
    pub fn read(t: &Topology) -> Result<Deliveries> {
        let mut by_id: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        for cluster in &t.setup().clusters {
            for (instance, record) in t.records(cluster)? {
                if let Some(id) = record.test_id {
                    by_id.entry(id).or_default().push(Delivery {
                        cluster: cluster.clone(),
                        instance,
                        method: record.method,
                    });
                }
            }
        }
        Ok(Deliveries { by_id })
    }

    /// Where the request with this test id arrived (empty: nowhere).
    pub fn of(&self, test_id: &str) -> &[Delivery] {
        self.by_id.get(test_id).map_or(&[], Vec::as_slice)
    }

    /// Requests of `method` that arrived more than once, with where they arrived.
    pub fn more_than_once(&self, method: &str) -> Vec<(&str, Vec<String>)> {
        self.by_id
            .iter()
            .filter(|(_, got)| got.len() > 1 && got.iter().any(|d| d.method == method))
            .map(|(id, got)| {
                let places = got
                    .iter()
                    .map(|d| format!("{}#{}", d.cluster, d.instance))
                    .collect();
                (id.as_str(), places)
            })
            .collect()
    }

    /// Samples of `method` that the client saw succeed but that did not arrive exactly
    /// once, at the cluster that answered: the client's view and the servers' disagree.
    pub fn mismatched<'r>(&self, report: &'r LoadReport, method: &str) -> Vec<&'r Sample> {
        report
            .samples
            .iter()
            .filter(|s| s.method == method && s.succeeded())
            .filter(|s| {
                let got = self.of(&s.test_id);
                got.len() != 1 || Some(got[0].cluster.as_str()) != s.served_by()
            })
            .collect()
    }

    /// Whether a failed request had reached a service instance: one cut off by a kill
    /// (its instance ran it, no answer came back) rather than one never delivered.
    pub fn reached(&self, sample: &Sample) -> bool {
        !self.of(&sample.test_id).is_empty()
    }
}
