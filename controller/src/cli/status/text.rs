//! The status API's document as text for a terminal: a summary line, the member
//! clusters, one line per scheme (where its traffic goes, every target's health and
//! since when), one per service of every member cluster (which schemes name it, or
//! none), and the recent events. Pure: the time and the styling are parameters.
//!
//! Every string from the controller goes through [`clean`] first: names come from
//! documents and messages quote configuration and check errors, and a control character
//! (an escape sequence) printed as is would be obeyed by the terminal.

use detour_core::report::events::{Event, EventKind};
use detour_core::report::{
    ConfigOutcome, Role, SchemeReport, ServiceReport, StatusReport, parse_rfc3339, rfc3339,
};
use detour_filter::health::Health;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Colour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    Green,
    Yellow,
    Red,
    Grey,
    Bold,
}

impl Colour {
    fn code(self) -> &'static str {
        match self {
            Colour::Green => "32",
            Colour::Yellow => "33",
            Colour::Red => "31",
            Colour::Grey => "90",
            Colour::Bold => "1",
        }
    }
}

/// A piece of a cell, maybe coloured.
#[derive(Debug, Clone)]
struct Span {
    text: String,
    colour: Option<Colour>,
}

fn plain(text: impl Into<String>) -> Span {
    Span {
        text: text.into(),
        colour: None,
    }
}

fn coloured(text: impl Into<String>, colour: Colour) -> Span {
    Span {
        text: text.into(),
        colour: Some(colour),
    }
}

type Cell = Vec<Span>;

/// Columns padded to their widest cell (colour codes take no room); the last column is
/// not padded.
fn table(out: &mut String, rows: &[Vec<Cell>], style: Style) {
    let width = |cell: &Cell| cell.iter().map(|s| s.text.chars().count()).sum::<usize>();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(width)
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            for span in cell {
                paint(&mut line, span, style);
            }
            if i + 1 < row.len() {
                let pad = widths[i].saturating_sub(width(cell)) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn paint(out: &mut String, span: &Span, style: Style) {
    match (span.colour, style) {
        (Some(c), Style::Colour) => {
            let _ = write!(out, "\x1b[{}m{}\x1b[0m", c.code(), span.text);
        }
        _ => out.push_str(&span.text),
    }
}

/// `text` with every control character (escape sequences, line breaks) made visible
/// instead of acted upon.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `42s`, `3m12s`, `2h5m`, `3d4h`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// How long before `now` the RFC 3339 time `at` was (`?` when unreadable).
fn ago(at: &str, now: SystemTime) -> String {
    match parse_rfc3339(at) {
        Some(t) => span(now.duration_since(t).unwrap_or_default()),
        None => "?".into(),
    }
}

/// `16:44:41Z` for today (UTC), else `2026-11-24 16:44:41Z`.
fn clock(at: &str, now: SystemTime) -> String {
    let Some(t) = parse_rfc3339(at) else {
        return clean(at);
    };
    let text = rfc3339(t); // to the second: 2026-11-24T16:44:41Z
    let today = rfc3339(now);
    match (text.split_once('T'), today.split_once('T')) {
        (Some((day, time)), Some((now_day, _))) if day == now_day => time.to_string(),
        (Some((day, time)), _) => format!("{day} {time}"),
        _ => text,
    }
}

fn health_colour(h: Health) -> Colour {
    match h {
        Health::Healthy => Colour::Green,
        Health::Unhealthy => Colour::Red,
        Health::Unknown => Colour::Grey,
    }
}

/// Which services of the member clusters a picture lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Services {
    All,
    /// Those no scheme names (`--unprotected`).
    Unprotected,
}

impl Services {
    pub fn shows(self, service: &ServiceReport) -> bool {
        self == Services::All || !service.is_protected()
    }
}

/// The whole picture. `source` names where it came from (the controller's URL).
pub fn render(
    report: &StatusReport,
    source: &str,
    now: SystemTime,
    style: Style,
    events: usize,
    listed: Services,
) -> String {
    let mut out = String::new();
    summary(&mut out, report, source, style);
    out.push('\n');
    clusters(&mut out, report, style);
    out.push('\n');
    schemes(&mut out, report, now, style);
    out.push('\n');
    services(&mut out, report, style, listed);
    if events > 0 {
        out.push('\n');
        recent(&mut out, report, now, style, events);
    }
    out
}

fn summary(out: &mut String, r: &StatusReport, source: &str, style: Style) {
    let s = &r.summary;
    let mut line = vec![
        coloured("detour", Colour::Bold),
        plain(format!(
            " {} · {} member cluster(s) · {} scheme(s) · ",
            clean(source),
            s.clusters,
            s.schemes
        )),
    ];
    line.push(if s.failed_over > 0 {
        coloured(format!("{} failed over", s.failed_over), Colour::Yellow)
    } else {
        plain("0 failed over")
    });
    line.push(plain(" · targets: "));
    line.push(coloured(
        format!("{} Healthy", s.targets.healthy),
        Colour::Green,
    ));
    line.push(plain(", "));
    line.push(if s.targets.unhealthy > 0 {
        coloured(format!("{} Unhealthy", s.targets.unhealthy), Colour::Red)
    } else {
        plain("0 Unhealthy")
    });
    line.push(plain(format!(", {} Unknown", s.targets.unknown)));
    line.push(plain(format!(
        " · services: {} protected, ",
        s.services.protected
    )));
    line.push(if s.services.unprotected > 0 {
        coloured(
            format!("{} unprotected", s.services.unprotected),
            Colour::Yellow,
        )
    } else {
        plain("0 unprotected")
    });
    table(out, &[vec![line]], style);
    if !r.controller.ready {
        table(
            out,
            &[vec![vec![coloured(
                "not ready: not every target has been checked yet (some health is Unknown)",
                Colour::Yellow,
            )]]],
            style,
        );
    }
    // What the page's banner says: certificates to renew within the week.
    let expiring: Vec<_> = r
        .controller
        .certificates
        .iter()
        .filter(|c| c.expiring)
        .collect();
    if !expiring.is_empty() {
        let mut rows = vec![vec![vec![coloured(
            "certificates expire within 7 days (run `detour certs init` to renew them):",
            Colour::Yellow,
        )]]];
        for c in expiring {
            rows.push(vec![vec![plain(format!(
                "  {} ({}): until {}",
                clean(&c.file),
                clean(&c.identity),
                clean(&c.not_after)
            ))]]);
        }
        table(out, &rows, style);
    }
    if let Some(config) = &r.controller.config
        && config.outcome == ConfigOutcome::Refused
    {
        let mut rows = vec![vec![vec![coloured(
            format!(
                "configuration refused at {}; the last good one keeps serving:",
                clean(&config.at)
            ),
            Colour::Red,
        )]]];
        for line in config.message.as_deref().unwrap_or_default().lines() {
            rows.push(vec![vec![plain(format!("  {}", clean(line)))]]);
        }
        table(out, &rows, style);
    }
}

fn clusters(out: &mut String, r: &StatusReport, style: Style) {
    let header = [
        "MEMBER CLUSTER",
        "GATEWAY",
        "SERVICES",
        "PRIMARIES",
        "TABLE",
    ];
    let mut rows = vec![header.map(|h| vec![coloured(h, Colour::Bold)]).to_vec()];
    for c in &r.clusters {
        rows.push(vec![
            vec![plain(clean(&c.name))],
            vec![plain(clean(&c.gateway))],
            vec![plain(c.services.to_string())],
            vec![plain(c.primaries.to_string())],
            vec![plain(clean(c.table_version.as_deref().unwrap_or("-")))],
        ]);
        // A table near or over the filters' limit: said under its cluster.
        if let Some(warning) = &c.table_warning {
            rows.push(vec![vec![coloured(
                format!("  {}", clean(warning)),
                Colour::Yellow,
            )]]);
        }
    }
    table(out, &rows, style);
}

fn schemes(out: &mut String, r: &StatusReport, now: SystemTime, style: Style) {
    let header = [
        "SCHEME",
        "TRAFFIC",
        "FOR",
        "TARGETS (P primary, * active group)",
    ];
    let mut rows = vec![header.map(|h| vec![coloured(h, Colour::Bold)]).to_vec()];
    for s in &r.schemes {
        rows.push(vec![
            vec![plain(clean(&s.name))],
            traffic(s),
            vec![plain(ago(&s.active_since, now))],
            targets(s, now),
        ]);
    }
    if r.schemes.is_empty() {
        rows.push(vec![vec![plain("(no schemes)")]]);
    }
    table(out, &rows, style);
}

/// Every service of every member cluster and the schemes naming it, or only those no
/// scheme names.
fn services(out: &mut String, r: &StatusReport, style: Style, listed: Services) {
    let header = ["CLUSTER", "SERVICE", "PORT", "PROTECTED BY"];
    let mut rows = vec![header.map(|h| vec![coloured(h, Colour::Bold)]).to_vec()];
    for s in r.services.iter().filter(|s| listed.shows(s)) {
        let by = if s.is_protected() {
            let roles: Vec<String> = s
                .protection
                .iter()
                .map(|p| match p.role {
                    Role::Primary => format!("primary of {}", clean(&p.scheme)),
                    Role::Target => format!("target of {} (group {})", clean(&p.scheme), p.group),
                })
                .collect();
            coloured(roles.join("; "), Colour::Green)
        } else {
            coloured("unprotected", Colour::Yellow)
        };
        rows.push(vec![
            vec![plain(clean(&s.cluster))],
            vec![plain(clean(&s.service))],
            vec![plain(s.port.to_string())],
            vec![by],
        ]);
    }
    if rows.len() == 1 {
        rows.push(vec![vec![plain(match listed {
            Services::All => "(no services)",
            Services::Unprotected => "(none: every service is protected)",
        })]]);
    }
    table(out, &rows, style);
}

/// `primary east`, `group 1 west` (yellow), `group 2 south (all unhealthy)` (red).
fn traffic(s: &SchemeReport) -> Cell {
    let clusters: Vec<String> = s
        .groups
        .get(s.active_group)
        .map(|g| g.iter().map(|t| clean(&t.cluster)).collect())
        .unwrap_or_default();
    let place = if s.active_group == 0 {
        "primary".to_string()
    } else {
        format!("group {}", s.active_group)
    };
    let text = format!("{place} → {}", clusters.join(","));
    match s.reason.as_str() {
        "primary-healthy" => vec![coloured(text, Colour::Green)],
        "failed-over" => vec![coloured(text, Colour::Yellow)],
        "nothing-healthy-trying-unknown" => vec![coloured(
            format!("{text} (none healthy, trying Unknown)"),
            Colour::Red,
        )],
        "all-unhealthy-trying-primary" => {
            vec![coloured(
                format!("{text} (all unhealthy, last resort)"),
                Colour::Red,
            )]
        }
        other => vec![coloured(format!("{text} ({})", clean(other)), Colour::Red)],
    }
}

/// `P east Unhealthy 12s | *1 west Healthy 5m3s | 2 south Healthy 5m3s`.
fn targets(s: &SchemeReport, now: SystemTime) -> Cell {
    let mut cell = Vec::new();
    for (i, group) in s.groups.iter().enumerate() {
        if i > 0 {
            cell.push(coloured(" | ", Colour::Grey));
        }
        let active = if i == s.active_group { "*" } else { "" };
        let label = if i == 0 {
            "P".to_string()
        } else {
            i.to_string()
        };
        cell.push(coloured(format!("{active}{label} "), Colour::Bold));
        for (j, t) in group.iter().enumerate() {
            if j > 0 {
                cell.push(plain(", "));
            }
            let mut name = clean(&t.cluster);
            if t.weight != 1 {
                name.push_str(&format!("×{}", t.weight));
            }
            cell.push(plain(format!("{name} ")));
            let mut health = t.health.to_string();
            if t.basis == detour_core::report::Basis::Recovering {
                health.push_str(" (recovering)");
            }
            cell.push(coloured(health, health_colour(t.health)));
            cell.push(coloured(format!(" {}", ago(&t.since, now)), Colour::Grey));
        }
    }
    cell
}

fn recent(out: &mut String, r: &StatusReport, now: SystemTime, style: Style, n: usize) {
    let shown = r.events.len().min(n);
    let title = if r.events.len() > n {
        format!("RECENT EVENTS ({shown} newest of {})", r.events.len())
    } else {
        "RECENT EVENTS".to_string()
    };
    let mut rows = vec![vec![vec![coloured(title, Colour::Bold)]]];
    for e in r.events.iter().take(n) {
        let mut lines = e.message.lines();
        rows.push(vec![
            vec![plain(clock(&e.at, now))],
            vec![coloured(e.kind.as_str(), kind_colour(e.kind))],
            vec![plain(subject(e))],
            vec![plain(clean(lines.next().unwrap_or_default()))],
        ]);
        for more in lines {
            rows.push(vec![vec![], vec![], vec![], vec![plain(clean(more))]]);
        }
    }
    if r.events.is_empty() {
        rows.push(vec![vec![plain("(nothing since the controller started)")]]);
    }
    table(out, &rows, style);
}

fn subject(e: &Event) -> String {
    match (&e.scheme, &e.cluster, &e.service) {
        (Some(scheme), _, _) => clean(scheme),
        (None, Some(cluster), Some(service)) => format!("{} in {}", clean(service), clean(cluster)),
        (None, Some(cluster), None) => format!("table of {}", clean(cluster)),
        _ => "configuration".into(),
    }
}

fn kind_colour(kind: EventKind) -> Colour {
    match kind {
        EventKind::FailedOver | EventKind::ConfigRefused | EventKind::TableRefused => Colour::Red,
        EventKind::FailedBack | EventKind::ConfigApplied => Colour::Green,
        EventKind::HealthChanged | EventKind::TableNearLimit => Colour::Yellow,
    }
}

#[cfg(test)]
mod tests;
