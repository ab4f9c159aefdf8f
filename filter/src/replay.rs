//! What a replay sends and what the client gets back, free of Envoy: which headers are
//! carried over, and the request body kept for a possible replay.

use crate::config::INTERNAL_HEADER_PREFIX;
use crate::pairs::Pairs;

/// Connection-level headers that describe one hop, not the request (RFC 9110 §7.6.1),
/// plus `host` (HTTP/2 carries it as `:authority`). They are never copied to a new hop.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "host",
];

fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// Is `name` one of detour's own headers, which a downstream client may not send?
/// (`route_header` is configurable and need not start with `x-detour-`.)
pub fn is_internal_header(name: &[u8], route_header: &str) -> bool {
    name.get(..INTERNAL_HEADER_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(INTERNAL_HEADER_PREFIX.as_bytes()))
        || name.eq_ignore_ascii_case(route_header.as_bytes())
}

/// The headers of the replayed request: the client's request as it reached the router,
/// less hop-by-hop headers and detour's route header (the replay names its cluster
/// itself). Pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) are kept: the
/// call needs them; `authority`, when given, replaces the client's `:authority`. Values
/// are carried byte for byte.
pub fn request_headers(headers: &Pairs, route_header: &str, authority: Option<&str>) -> Pairs {
    Pairs::from_pairs(
        headers
            .iter()
            .filter(|(n, _)| !is_hop_by_hop(n) && !n.eq_ignore_ascii_case(route_header.as_bytes()))
            .map(|(n, v)| match authority {
                Some(a) if n == b":authority" => (n, a.as_bytes()),
                _ => (n, v),
            }),
    )
}

/// The `:authority` of a replay to `service` (`namespace/name`, as the table names a
/// target's service) in another cluster: `NAME.NAMESPACE`, which east-west gateways
/// route by, whatever name the client used here (under Istio, typically
/// `NAME.NAMESPACE.svc.cluster.local:PORT`). `None` for a malformed name.
pub fn gateway_authority(service: &str) -> Option<String> {
    let (namespace, name) = service.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| format!("{name}.{namespace}"))
}

/// The replayed answer's headers as sent to the client: no pseudo-headers (the status is
/// passed separately), no hop-by-hop headers, no `content-length` (Envoy sets it from
/// the body it sends).
pub fn response_headers(headers: &Pairs) -> Pairs {
    Pairs::from_pairs(headers.iter().filter(|(n, _)| {
        !n.starts_with(b":") && !is_hop_by_hop(n) && !n.eq_ignore_ascii_case(b"content-length")
    }))
}

/// The `:status` of a header map, if it is a number.
pub fn status_of(headers: &Pairs) -> Option<u32> {
    headers.get(":status").and_then(parse_status)
}

/// A status code as Envoy writes it (ASCII digits).
pub fn parse_status(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The request body as far as a replay needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Still arriving; holds what came so far (within the limit).
    Receiving(Vec<u8>),
    /// Entirely received and held (empty for a request without a body).
    Complete(Vec<u8>),
    /// Larger than the scheme's `replay.maxBodyBytes`: not kept, cannot be replayed.
    TooLarge,
}

impl Body {
    /// A request whose headers ended the stream has an empty, complete body.
    pub fn new(end_of_stream: bool) -> Body {
        if end_of_stream {
            Body::Complete(Vec::new())
        } else {
            Body::Receiving(Vec::new())
        }
    }

    /// Would a chunk of `len` bytes still fit under `limit`? (Asked before copying the
    /// chunk out of Envoy, so an oversized body is never copied.)
    pub fn accepts(&self, len: usize, limit: u64) -> bool {
        match self {
            Body::Receiving(held) => (held.len() as u64).saturating_add(len as u64) <= limit,
            _ => false,
        }
    }

    /// Appends a chunk (call only after `accepts`), or gives the body up.
    pub fn push(&mut self, chunk: Option<Vec<u8>>, end_of_stream: bool, limit: u64) {
        let Body::Receiving(held) = self else {
            return;
        };
        match chunk {
            Some(c) if (held.len() as u64).saturating_add(c.len() as u64) <= limit => {
                held.extend_from_slice(&c)
            }
            None => {}
            Some(_) => {
                *self = Body::TooLarge;
                return;
            }
        }
        if end_of_stream {
            *self = Body::Complete(std::mem::take(held));
        }
    }

    pub fn give_up(&mut self) {
        *self = Body::TooLarge;
    }

    /// The whole body, when it can be replayed.
    pub fn complete(&self) -> Option<&[u8]> {
        match self {
            Body::Complete(b) => Some(b),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Pairs {
        Pairs::from_pairs(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn text(p: &Pairs) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn internal_headers_are_recognised_by_prefix_and_by_the_route_header() {
        assert!(is_internal_header(b"x-detour-route", "x-detour-route"));
        assert!(is_internal_header(b"X-Detour-Anything", "x-detour-route"));
        assert!(is_internal_header(b"x-my-route", "x-my-route"));
        assert!(!is_internal_header(b"x-detou", "x-detour-route"));
        assert!(!is_internal_header(b"x-request-id", "x-detour-route"));
    }

    #[test]
    fn the_replay_carries_the_request_without_hop_headers_or_the_route() {
        let req = h(&[
            (":method", "POST"),
            (":path", "/a"),
            (":authority", "foo.apps"),
            ("connection", "keep-alive"),
            ("x-detour-route", "detour|west|apps|foo"),
            ("content-type", "text/plain"),
            ("content-length", "3"),
            ("te", "trailers"),
        ]);
        assert_eq!(
            text(&request_headers(&req, "x-detour-route", None)),
            owned(&[
                (":method", "POST"),
                (":path", "/a"),
                (":authority", "foo.apps"),
                ("content-type", "text/plain"),
                ("content-length", "3"),
            ])
        );
    }

    #[test]
    fn header_values_are_replayed_byte_for_byte() {
        let req = Pairs::from_pairs([(&b":method"[..], &b"GET"[..]), (b"x-name", b"caf\xe9")]);
        let replay = request_headers(&req, "x-detour-route", None);
        assert_eq!(replay.get("x-name"), Some(&b"caf\xe9"[..]));
    }

    #[test]
    fn a_replay_to_another_cluster_names_the_service_as_its_gateway_routes() {
        // An Istio client calls the service by its cluster-local name.
        let req = h(&[
            (":method", "GET"),
            (":authority", "foo.apps.svc.cluster.local:8080"),
            ("accept", "*/*"),
        ]);
        let authority = gateway_authority("apps/foo");
        assert_eq!(authority.as_deref(), Some("foo.apps"));
        assert_eq!(
            text(&request_headers(
                &req,
                "x-detour-route",
                authority.as_deref()
            )),
            owned(&[
                (":method", "GET"),
                (":authority", "foo.apps"),
                ("accept", "*/*")
            ])
        );
        for bad in ["foo", "/foo", "apps/", "a/b/c"] {
            assert_eq!(gateway_authority(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_client_gets_the_replayed_headers_and_status() {
        let resp = h(&[
            (":status", "201"),
            ("content-length", "9"),
            ("transfer-encoding", "chunked"),
            ("x-served-by", "west"),
        ]);
        assert_eq!(status_of(&resp), Some(201));
        assert_eq!(
            text(&response_headers(&resp)),
            owned(&[("x-served-by", "west")])
        );
        assert_eq!(status_of(&h(&[(":status", "x")])), None);
    }

    #[test]
    fn the_body_is_kept_up_to_the_limit_only() {
        let mut b = Body::new(false);
        assert!(b.accepts(3, 5));
        b.push(Some(b"abc".to_vec()), false, 5);
        assert!(b.accepts(2, 5) && !b.accepts(3, 5));
        b.push(Some(b"de".to_vec()), true, 5);
        assert_eq!(b.complete(), Some(&b"abcde"[..]));

        let mut big = Body::new(false);
        big.push(Some(b"abcdef".to_vec()), false, 5);
        assert_eq!(big, Body::TooLarge);
        big.push(Some(b"x".to_vec()), true, 5);
        assert_eq!(big.complete(), None);

        assert_eq!(Body::new(true).complete(), Some(&b""[..]));
        let mut partial = Body::new(false);
        partial.push(Some(b"ab".to_vec()), false, 5);
        assert_eq!(partial.complete(), None, "not all of it arrived");
    }
}
