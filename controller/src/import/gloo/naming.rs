//! Gloo discovery's names for the Upstreams it creates: `NAMESPACE-NAME-PORT` of the
//! Service found, which is how an Upstream not among the documents read is resolved.

use super::read::UpstreamRef;
use std::collections::BTreeSet;

/// A Service from a Gloo discovery name `NAMESPACE-NAME-PORT`: the port after the last
/// '-', the namespace before the first '-' unless a longer known namespace fits.
pub fn discovered(name: &str, namespaces: &BTreeSet<String>) -> Option<(UpstreamRef, u16)> {
    let (rest, port) = name.rsplit_once('-')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let splits: Vec<(&str, &str)> = rest
        .match_indices('-')
        .map(|(i, _)| (&rest[..i], &rest[i + 1..]))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .collect();
    let (ns, svc) = splits
        .iter()
        .rev()
        .find(|(ns, _)| namespaces.contains(*ns))
        .or_else(|| splits.first())?;
    Some((
        UpstreamRef {
            namespace: ns.to_string(),
            name: svc.to_string(),
        },
        port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_names_split_at_the_first_dash_unless_a_known_namespace_says_otherwise() {
        let none = BTreeSet::new();
        let (s, port) = discovered("default-service-green-10000", &none).unwrap();
        assert_eq!(
            (s.namespace.as_str(), s.name.as_str(), port),
            ("default", "service-green", 10000)
        );
        let known = BTreeSet::from(["kube-apps".to_string()]);
        let (s, _) = discovered("kube-apps-foo-8080", &known).unwrap();
        assert_eq!(
            (s.namespace.as_str(), s.name.as_str()),
            ("kube-apps", "foo")
        );
        for bad in ["foo-8080", "default-foo-http", "default-foo-0", "nodash"] {
            assert_eq!(discovered(bad, &none), None, "{bad}");
        }
    }
}
