//! Changes the harness makes to an Envoy config `detour render envoy` wrote, for one
//! test's needs: shorter route timeouts (a slow request fails in seconds rather than
//! fifteen), and an ingress Envoy without the gateway listener (its cluster's gateways
//! run in Envoys of their own, which a test can stop without touching the ingress).
//! Everything else stays as rendered, so tests keep testing what users run.

use anyhow::{Context, Result, ensure};
use serde_norway::Value;
use std::time::Duration;

/// The name `detour render envoy` gives the east-west gateway listener.
const GATEWAY_LISTENER: &str = "detour_gateway";

/// Sets the whole-request `timeout` of every route of every listener; returns how many
/// routes it changed (an error if none: the rendered shape changed under the harness).
pub fn set_route_timeouts(config: &mut Value, timeout: Duration) -> Result<usize> {
    let listeners = config["static_resources"]["listeners"]
        .as_sequence_mut()
        .context("the rendered config has no listeners")?;
    let mut changed = 0;
    for listener in listeners {
        visit_routes(listener, &mut |route| {
            if let Some(Value::Mapping(action)) = route.get_mut("route")
                && action.contains_key("timeout")
            {
                action.insert(
                    Value::from("timeout"),
                    Value::from(format!("{}s", timeout.as_secs_f64())),
                );
                changed += 1;
            }
        });
    }
    ensure!(
        changed > 0,
        "no route with a timeout in the rendered config"
    );
    Ok(changed)
}

/// Removes the east-west gateway listener.
pub fn remove_gateway_listener(config: &mut Value) -> Result<()> {
    let listeners = config["static_resources"]["listeners"]
        .as_sequence_mut()
        .context("the rendered config has no listeners")?;
    let before = listeners.len();
    listeners.retain(|l| l["name"].as_str() != Some(GATEWAY_LISTENER));
    ensure!(
        listeners.len() < before,
        "the rendered config has no {GATEWAY_LISTENER} listener"
    );
    Ok(())
}

/// Calls `f` with every entry of every `routes` list under `value`.
fn visit_routes(value: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match value {
        Value::Mapping(map) => {
            for (key, v) in map.iter_mut() {
                if key.as_str() == Some("routes")
                    && let Value::Sequence(routes) = v
                {
                    routes.iter_mut().for_each(&mut *f);
                } else {
                    visit_routes(v, f);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| visit_routes(v, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = r#"
static_resources:
  listeners:
  - name: detour_ingress
    filter_chains:
    - filters:
      - typed_config:
          route_config:
            virtual_hosts:
            - routes:
              - {match: {prefix: /}, route: {cluster: a, timeout: 15s}}
              - {match: {prefix: /}, direct_response: {status: 404}}
  - name: detour_gateway
    filter_chains:
    - filters:
      - typed_config:
          route_config:
            virtual_hosts:
            - routes:
              - {match: {prefix: /}, route: {cluster: b, timeout: 15s}}
"#;

    #[test]
    fn every_route_timeout_is_set() {
        let mut config: Value = serde_norway::from_str(RENDERED).unwrap();
        assert_eq!(
            set_route_timeouts(&mut config, Duration::from_millis(1500)).unwrap(),
            2
        );
        let text = serde_norway::to_string(&config).unwrap();
        assert_eq!(text.matches("timeout: 1.5s").count(), 2, "{text}");
        assert!(!text.contains("15s"));
    }

    #[test]
    fn the_gateway_listener_goes_and_the_ingress_stays() {
        let mut config: Value = serde_norway::from_str(RENDERED).unwrap();
        remove_gateway_listener(&mut config).unwrap();
        let names: Vec<&str> = config["static_resources"]["listeners"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|l| l["name"].as_str())
            .collect();
        assert_eq!(names, ["detour_ingress"]);
        assert!(remove_gateway_listener(&mut config).is_err());
    }
}
