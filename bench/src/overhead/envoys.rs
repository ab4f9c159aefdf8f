//! The Envoys of the overhead stage: every variant is east's ingress as `detour render
//! envoy` writes it ([`EastIngress`]), so that the variants differ only where they
//! should: the filter before the router, and for (a') the cluster the route sends to.

use super::{Build, Phase, Variant};
use crate::ingress::{EastIngress, Shape};
use crate::tools::noop_wasm;
use anyhow::Result;
use detour_e2e::paths::filter_wasm;
use detour_e2e::ports::free_addr;
use detour_e2e::topology::Topology;
use std::net::Ipv4Addr;

/// A variant before its Envoy runs.
struct Plan {
    key: String,
    label: String,
    phase: Phase,
    served_by: &'static str,
    baseline: &'static str,
    shape: Shape,
}

/// Starts the variants' Envoys next to the topology's (which provide the controller and
/// west's gateway); each joins the topology, which stops them at the end.
pub fn start_envoys(t: &mut Topology, compare: &[Build]) -> Result<Vec<Variant>> {
    let plan = |key: &str, label: &str, phase, served_by, baseline, shape| Plan {
        key: key.to_string(),
        label: label.to_string(),
        phase,
        served_by,
        baseline,
        shape,
    };
    let mut plans = vec![
        plan(
            "a",
            "Envoy, no filter",
            Phase::Healthy,
            "east",
            "a",
            Shape::NoFilter,
        ),
        plan(
            "b",
            "Envoy + empty wasm filter",
            Phase::Healthy,
            "east",
            "a",
            Shape::Wasm(noop_wasm()?, None),
        ),
    ];
    let mut builds = vec![Build {
        name: String::new(),
        wasm: filter_wasm()?,
        patch: None,
    }];
    builds.extend(compare.iter().cloned());
    for Build { name, wasm, patch } in builds {
        let (suffix, build) = if name.is_empty() {
            (String::new(), String::new())
        } else {
            (format!(" {name}"), format!(" ({name})"))
        };
        plans.push(plan(
            &format!("c{suffix}"),
            &format!("detour, healthy path{build}"),
            Phase::Healthy,
            "east",
            "b",
            Shape::Wasm(wasm.clone(), patch.clone()),
        ));
        plans.push(plan(
            &format!("d{suffix}"),
            &format!("detour, failed over to west{build}"),
            Phase::FailedOver,
            "west",
            "a'",
            Shape::Wasm(wasm, patch),
        ));
    }
    plans.push(plan(
        "a'",
        "Envoy, no filter, routed to west's gateway",
        Phase::FailedOver,
        "west",
        "a",
        Shape::NoFilterToWest,
    ));

    let ingress = EastIngress::of(t);
    let mut variants = Vec::new();
    for plan in plans {
        let name = format!(
            "bench-{}",
            plan.key.replace('\'', "-prime").replace(' ', "-")
        );
        let listen = free_addr(Ipv4Addr::new(127, 0, 1, 1))?;
        let admin = free_addr(Ipv4Addr::new(127, 0, 1, 1))?;
        eprintln!("  starting {name}: {}", plan.label);
        let config = ingress.config(listen, admin, &plan.shape)?;
        t.add_envoy(&name, &config, admin)?;
        variants.push(Variant {
            key: plan.key,
            label: plan.label,
            envoy: name,
            addr: listen,
            phase: plan.phase,
            served_by: plan.served_by,
            baseline: plan.baseline.to_string(),
        });
    }
    Ok(variants)
}
