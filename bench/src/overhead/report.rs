//! The overhead stage's figures: per-round ratios, and the Markdown tables.

use super::{CONNECTIONS, Load, Overhead, VariantResult};
use crate::stats::Spread;
use crate::wrk::WrkRun;
use std::fmt::Write as _;

/// The healthy path's target: detour's filter at least this share of the empty filter's
/// requests per second (issue 12).
pub const TARGET: f64 = 0.97;

impl Overhead {
    pub fn variant(&self, key: &str) -> Option<&VariantResult> {
        self.variants.iter().find(|v| v.variant.key == key)
    }

    /// `f(run of key) ÷ f(run of base)`, round by round, at `connections`.
    pub fn ratio(
        &self,
        key: &str,
        base: &str,
        connections: u32,
        f: impl Fn(&WrkRun) -> f64,
    ) -> Spread {
        let runs = |k: &str| {
            self.variant(k)
                .and_then(|v| v.runs.get(&connections))
                .cloned()
                .unwrap_or_default()
        };
        let (a, b) = (runs(key), runs(base));
        Spread::of(a.iter().zip(&b).map(|(x, y)| f(x) / f(y)))
    }

    /// A figure of one variant over the rounds.
    pub fn figure(&self, key: &str, connections: u32, f: impl Fn(&WrkRun) -> f64) -> Spread {
        Spread::of(
            self.variant(key)
                .and_then(|v| v.runs.get(&connections))
                .map(|runs| runs.iter().map(&f).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
    }
}

impl Overhead {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let (title, load) = match self.load {
            Load::Http1 => (
                "Request overhead",
                "wrk, one thread, `GET /` with `Host: foo.apps`",
            ),
            Load::Grpc => (
                "Request overhead, gRPC",
                "h2load, one thread, one stream per connection, unary gRPC calls (`POST \
                 /detour.bench.Echo/Unary`, `content-type: application/grpc`, a 5-byte \
                 message) over HTTP/2 with prior knowledge to a service declared `protocol: \
                 http2` (the upstream answers the message back and the `grpc-status` \
                 trailer); p50/p99 from h2load's per-request log",
            ),
        };
        let _ = writeln!(out, "## {title}\n");
        let _ = writeln!(
            out,
            "{load}, {} rounds × {} s per variant \
             and connection count, the variants interleaved (the order rotates each round, \
             the first second of each variant is a warm-up). Every variant is east's ingress as \
             `detour render envoy` writes it, less the filter for (a) and (a'), with the \
             empty filter in place of detour's for (b), and routed to west's gateway for \
             (a'); 2 Envoy workers, plain HTTP, the e2e harness's `upstream` behind. \
             Figures: median (min–max) over the rounds; ratios are taken round by round \
             (a run divided by its baseline's run of the same round) and then summarised. \
             \"Envoy CPU\" is the Envoy process's user+system time per request, from \
             /proc. Stage time {:.0} s.\n",
            self.rounds,
            self.seconds,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(out, "| | variant |");
        let _ = writeln!(out, "|---|---|");
        for v in &self.variants {
            let _ = writeln!(out, "| ({}) | {} |", v.variant.key, v.variant.label);
        }
        out.push('\n');
        for build in &self.compared {
            let patch = build.patch.as_ref().map_or_else(String::new, |p| {
                format!(", its configuration patched with `{p}`")
            });
            let _ = writeln!(
                out,
                "*{}*: `{}`{patch}.\n",
                build.name,
                build.wasm.display()
            );
        }
        for connections in CONNECTIONS {
            out.push_str(&self.table(connections));
        }
        out.push_str(&self.headline());
        out
    }

    fn table(&self, connections: u32) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "**{connections} connection{}**\n",
            if connections == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "| | req/s | p50 µs | p99 µs | Envoy CPU µs/req | req/s ÷ (a) | p50 ÷ (a) | p99 ÷ (a) | CPU ÷ (a) |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for v in &self.variants {
            let key = &v.variant.key;
            let _ = writeln!(
                out,
                "| ({key}) | {} | {} | {} | {} | {} | {} | {} | {} |",
                self.figure(key, connections, WrkRun::rps).show(0),
                self.figure(key, connections, |r| r.p50_us).show(0),
                self.figure(key, connections, |r| r.p99_us).show(0),
                self.figure(key, connections, |r| r.cpu_us_per_request)
                    .show(1),
                self.ratio(key, "a", connections, WrkRun::rps).show(3),
                self.ratio(key, "a", connections, |r| r.p50_us).show(3),
                self.ratio(key, "a", connections, |r| r.p99_us).show(3),
                self.ratio(key, "a", connections, |r| r.cpu_us_per_request)
                    .show(3),
            );
        }
        out.push('\n');
        out
    }

    /// Each variant against its own baseline: (c) ÷ (b), (d) ÷ (a'), and the target.
    fn headline(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Against the closest baseline (same round):\n");
        let _ = writeln!(
            out,
            "| | baseline | req/s ratio ({c16} conn.) | CPU ratio ({c16} conn.) | p50 ratio (1 conn.) | extra Envoy CPU µs/req ({c16} conn.) |",
            c16 = CONNECTIONS[0]
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for v in self
            .variants
            .iter()
            .filter(|v| v.variant.baseline != "a" || v.variant.key == "b")
        {
            let (key, base) = (&v.variant.key, &v.variant.baseline);
            let extra = Spread::of(
                pairs(self.variant(key), self.variant(base), CONNECTIONS[0])
                    .map(|(x, y)| x.cpu_us_per_request - y.cpu_us_per_request),
            );
            let _ = writeln!(
                out,
                "| ({key}) | ({base}) | {} | {} | {} | {} |",
                self.ratio(key, base, CONNECTIONS[0], WrkRun::rps).show(3),
                self.ratio(key, base, CONNECTIONS[0], |r| r.cpu_us_per_request)
                    .show(3),
                self.ratio(key, base, 1, |r| r.p50_us).show(3),
                extra.show(1),
            );
        }
        for connections in CONNECTIONS {
            let c_over_b = self.ratio("c", "b", connections, WrkRun::rps);
            let _ = writeln!(
                out,
                "{}Target (c) ≥ {TARGET} × (b) in req/s with {connections} connection(s): {} \
                 (median of the round-by-round ratios {:.3}).",
                if connections == CONNECTIONS[0] {
                    "\n"
                } else {
                    ""
                },
                if c_over_b.median >= TARGET {
                    "met"
                } else {
                    "**not met**"
                },
                c_over_b.median
            );
        }
        out.push('\n');
        out
    }
}

fn pairs<'a>(
    a: Option<&'a VariantResult>,
    b: Option<&'a VariantResult>,
    connections: u32,
) -> impl Iterator<Item = (&'a WrkRun, &'a WrkRun)> {
    let runs = |v: Option<&'a VariantResult>| {
        v.and_then(|v| v.runs.get(&connections))
            .map(|r| r.as_slice())
            .unwrap_or_default()
    };
    runs(a).iter().zip(runs(b))
}
