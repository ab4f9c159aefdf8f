use super::*;
use detour_core::report::StatusReport;

const NOW: &str = "2026-11-24T16:45:00Z";

/// A document as the API serves it: east failed over to west, a refused edit whose
/// message tries to inject an escape sequence.
fn report() -> StatusReport {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "detour.dev/status/v1",
        "version": "abc.7",
        "generatedAt": "2026-11-24T16:44:59.500Z",
        "controller": {"source": "files", "ready": true, "config": {
            "outcome": "Refused", "at": "2026-11-24T16:40:00Z",
            "message": "config/x.yaml: document 1: unknown cluster \"\u{1b}[2Jevil\"\nconfig/y.yaml: bad"},
            "certificates": [
                {"file": "ca.crt", "identity": "CA", "notAfter": "2036-11-20T10:00:00.000Z", "expiring": false},
                {"file": "clusters/east/table.crt", "identity": "spiffe://detour.dev/cluster/east/table",
                 "notAfter": "2026-11-29T10:00:00.000Z", "expiring": true}]},
        "summary": {"clusters": 2, "schemes": 1, "failedOver": 1,
                    "targets": {"healthy": 1, "unhealthy": 1, "unknown": 0},
                    "services": {"protected": 2, "unprotected": 1}},
        "clusters": [
            {"name": "east", "gateway": "127.0.1.1:15443", "services": 1, "primaries": 1, "tableVersion": "9c0f3e1a55d2b7e4"},
            {"name": "west", "gateway": "127.0.2.1:15443", "services": 1, "primaries": 0}],
        "schemes": [{"name": "apps/foo", "primary": {"cluster": "east", "service": "apps/foo"},
            "activeGroup": 1, "reason": "failed-over", "message": "failed over",
            "activeSince": "2026-11-24T16:44:48Z", "stableForMs": 10000,
            "groups": [
                [{"cluster": "east", "service": "apps/foo", "weight": 1, "health": "Unhealthy",
                  "since": "2026-11-24T16:44:47Z", "basis": "Checked", "lastCheck": "HTTP 503"}],
                [{"cluster": "west", "service": "apps/foo", "weight": 2, "health": "Healthy",
                  "since": "2026-11-24T15:40:00Z", "basis": "Checked"}]]}],
        "services": [
            {"cluster": "east", "service": "apps/foo", "port": 8080, "protocol": "http",
             "protection": [{"scheme": "apps/foo", "role": "Primary", "group": 0}]},
            {"cluster": "east", "service": "web/\u{1b}[2Jshop", "port": 80, "protocol": "http",
             "protection": []},
            {"cluster": "west", "service": "apps/foo", "port": 8080, "protocol": "http",
             "protection": [{"scheme": "apps/foo", "role": "Target", "group": 1},
                            {"scheme": "apps/bar", "role": "Primary", "group": 0}]}],
        "events": [
            {"seq": 2, "at": "2026-11-24T16:44:48Z", "kind": "FailedOver", "scheme": "apps/foo",
             "fromGroup": 0, "toGroup": 1, "message": "traffic for apps/foo moves"},
            {"seq": 1, "at": "2026-11-23T16:44:47Z", "kind": "HealthChanged", "cluster": "east",
             "service": "apps/foo", "from": "Healthy", "to": "Unhealthy", "message": "down\nand out"}]
    }))
    .unwrap()
}

fn now() -> SystemTime {
    parse_rfc3339(NOW).unwrap()
}

#[test]
fn the_picture_in_plain_text() {
    let text = render(
        &report(),
        "http://127.0.0.1:8080",
        now(),
        Style::Plain,
        10,
        Services::All,
    );
    let expected = "\
detour http://127.0.0.1:8080 · 2 member cluster(s) · 1 scheme(s) · 1 failed over · targets: 1 Healthy, 1 Unhealthy, 0 Unknown · services: 2 protected, 1 unprotected
certificates expire within 7 days (run `detour certs init` to renew them):
  clusters/east/table.crt (spiffe://detour.dev/cluster/east/table): until 2026-11-29T10:00:00.000Z
configuration refused at 2026-11-24T16:40:00Z; the last good one keeps serving:
  config/x.yaml: document 1: unknown cluster \"\\u{1b}[2Jevil\"
  config/y.yaml: bad

MEMBER CLUSTER  GATEWAY          SERVICES  PRIMARIES  TABLE
east            127.0.1.1:15443  1         1          9c0f3e1a55d2b7e4
west            127.0.2.1:15443  1         0          -

SCHEME    TRAFFIC         FOR  TARGETS (P primary, * active group)
apps/foo  group 1 → west  12s  P east Unhealthy 13s | *1 west×2 Healthy 1h5m

CLUSTER  SERVICE            PORT  PROTECTED BY
east     apps/foo           8080  primary of apps/foo
east     web/\\u{1b}[2Jshop  80    unprotected
west     apps/foo           8080  target of apps/foo (group 1); primary of apps/bar

RECENT EVENTS
16:44:48Z             FailedOver     apps/foo          traffic for apps/foo moves
2026-11-23 16:44:47Z  HealthChanged  apps/foo in east  down
                                                       and out
";
    assert_eq!(text, expected, "\n{text}");
}

#[test]
fn colour_only_when_asked_and_never_from_the_data() {
    let plain = render(&report(), "c", now(), Style::Plain, 10, Services::All);
    assert!(!plain.contains('\x1b'), "{plain:?}");
    let colour = render(&report(), "c", now(), Style::Colour, 10, Services::All);
    assert!(colour.contains("\x1b[31mUnhealthy\x1b[0m"), "{colour:?}");
    assert!(
        colour.contains("\x1b[33mgroup 1 → west\x1b[0m"),
        "{colour:?}"
    );
    // The only escape sequences are our own colours: the one in the message is shown.
    let stripped = colour.split('\x1b').skip(1).all(|rest| {
        rest.starts_with('[')
            && rest[1..]
                .split_once('m')
                .is_some_and(|(code, _)| code.chars().all(|c| c.is_ascii_digit()))
    });
    assert!(stripped, "{colour:?}");
    assert!(colour.contains("\\u{1b}[2Jevil"));
}

#[test]
fn events_can_be_cut_or_left_out() {
    let one = render(&report(), "c", now(), Style::Plain, 1, Services::All);
    assert!(one.contains("RECENT EVENTS (1 newest of 2)"), "{one}");
    assert!(!one.contains("HealthChanged"));
    let none = render(&report(), "c", now(), Style::Plain, 0, Services::All);
    assert!(!none.contains("RECENT EVENTS"));
}

#[test]
fn unprotected_lists_only_the_services_no_scheme_names() {
    let text = render(
        &report(),
        "c",
        now(),
        Style::Plain,
        0,
        Services::Unprotected,
    );
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("CLUSTER"))
        .collect();
    assert_eq!(
        listed,
        [
            "CLUSTER  SERVICE            PORT  PROTECTED BY",
            "east     web/\\u{1b}[2Jshop  80    unprotected"
        ],
        "{text}"
    );
    let mut all_protected = report();
    all_protected.services.retain(|s| s.is_protected());
    let text = render(
        &all_protected,
        "c",
        now(),
        Style::Plain,
        0,
        Services::Unprotected,
    );
    assert!(
        text.ends_with("(none: every service is protected)\n"),
        "{text}"
    );
}

#[test]
fn control_characters_are_shown_not_obeyed() {
    assert_eq!(clean("a\u{1b}[31mb\r\n\u{7}"), "a\\u{1b}[31mb\\r\\n\\u{7}");
    assert_eq!(clean("east-1 → west"), "east-1 → west");
}

#[test]
fn spans_read_like_durations() {
    let s = Duration::from_secs;
    assert_eq!(span(s(0)), "0s");
    assert_eq!(span(s(59)), "59s");
    assert_eq!(span(s(192)), "3m12s");
    assert_eq!(span(s(7500)), "2h5m");
    assert_eq!(span(s(3 * 86400 + 4 * 3600 + 5)), "3d4h");
}
