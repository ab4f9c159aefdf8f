//! Issue 8: the controller's status page (`/ui/`) in a real browser (Debian's Chromium,
//! headless, driven by playwright-core) and `detour status` in a terminal, against a
//! running controller: the clusters and schemes of the topology, a failover shown live
//! (no reload), values from documents shown as text (never as markup), and 200 schemes
//! loading in under a second. Issue 16: every service of every member cluster, protected
//! (by which scheme, as primary or target) or not, with an "unprotected only" filter. Screenshots are kept in `e2e/out/<test>/`.

use anyhow::{Context, Result, ensure};
use detour_e2e::browser::Browser;
use detour_e2e::certs::ClusterRole;
use detour_e2e::controller::{Controller, ControllerSpec};
use detour_e2e::out::OutDir;
use detour_e2e::ports::free_addr;
use detour_e2e::setup::Setup;
use detour_e2e::topology::Topology;
use detour_e2e::upstream::{Upstream, UpstreamSpec};
use detour_e2e::wait::secs;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the page may take to show what the API already says (one event-stream
/// message after the controller's own 50 ms coalescing), with room for a busy machine.
const PAGE_LAG: Duration = Duration::from_secs(5);

/// The page's picture of one scheme: `(active group, ["east:Healthy", ...])`.
fn scheme_in_page(browser: &mut Browser, scheme: &str) -> Result<Value> {
    browser.eval(&format!(
        "(() => {{ const row = document.querySelector('tr[data-scheme=\"{scheme}\"]');
            if (!row) return null;
            return {{ active: row.dataset.activeGroup,
                      targets: [...row.querySelectorAll('.target')].map(t => t.dataset.cluster + ':' + t.dataset.health) }}; }})()"
    ))
}

/// `detour status --controller URL ARGS` must succeed; its stdout.
fn status(t: &Topology, url: &str, args: &[&str]) -> Result<String> {
    Ok(t.detour()
        .status(url, args)?
        .success(&format!("detour status {args:?}"))?
        .stdout)
}

/// The scheme `apps/foo` of `detour status --output json`.
fn foo_in_json(t: &Topology, url: &str) -> Result<Value> {
    let doc: Value = serde_json::from_str(&status(t, url, &["--output", "json"])?)
        .context("detour status --output json is not JSON")?;
    ensure!(doc["apiVersion"] == "detour.dev/status/v1", "{doc}");
    doc["schemes"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "apps/foo"))
        .cloned()
        .with_context(|| format!("no apps/foo in {doc}"))
}

#[test]
fn the_status_page_and_detour_status_follow_a_failover_live() {
    let name = "the_status_page_and_detour_status_follow_a_failover_live";
    let mut t = Topology::start(name, Setup::for_tests()).unwrap();
    let url = t.controller().unwrap().ops_url();
    let mut browser = Browser::launch(t.out()).unwrap();
    assert_eq!(browser.open(&format!("{url}/ui/"), 1400, 760).unwrap(), 200);

    // The topology as it is: three clusters, one scheme on its primary, all Healthy.
    browser
        .wait_for(
            "apps/foo on its primary, every target Healthy",
            "document.querySelectorAll('tr[data-scheme=\"apps/foo\"] .target[data-health=\"Healthy\"]').length === 3",
            PAGE_LAG,
        )
        .unwrap();
    let clusters = browser
        .eval("[...document.querySelectorAll('#clusters tbody tr')].map(r => r.dataset.cluster)")
        .unwrap();
    assert_eq!(clusters, json!(["east", "south", "west"]));
    assert_eq!(
        scheme_in_page(&mut browser, "apps/foo").unwrap(),
        json!({"active": "0", "targets": ["east:Healthy", "west:Healthy", "south:Healthy"]})
    );
    let text = status(&t, &url, &[]).unwrap();
    assert!(text.contains("apps/foo  primary → east"), "{text}");
    assert!(text.contains("*P east Healthy"), "{text}");
    assert_eq!(foo_in_json(&t, &url).unwrap()["activeGroup"], 0);

    // A marker that a reload would wipe out.
    browser.eval("window.__sameDocument = 'yes'").unwrap();

    let killed = t.kill_upstream("east").unwrap();
    let bound = t.setup().failover_bound() + PAGE_LAG;
    browser
        .wait_for(
            "apps/foo shown on failover group 1",
            "document.querySelector('tr[data-scheme=\"apps/foo\"]').dataset.activeGroup === '1'",
            bound,
        )
        .unwrap();
    eprintln!(
        "east's foo killed: the page shows group 1 after {}",
        secs(killed.elapsed())
    );
    assert_eq!(
        browser.eval("window.__sameDocument").unwrap(),
        json!("yes"),
        "the page was reloaded"
    );
    assert_eq!(
        scheme_in_page(&mut browser, "apps/foo").unwrap(),
        json!({"active": "1", "targets": ["east:Unhealthy", "west:Healthy", "south:Healthy"]})
    );
    let events = browser
        .eval("[...document.querySelectorAll('#events li')].map(li => li.dataset.kind + ' ' + li.textContent)")
        .unwrap();
    let events: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        events.iter().any(|e| e.starts_with("FailedOver ")
            && e.contains("traffic for apps/foo moves from the primary (apps/foo in east: Unhealthy) to failover group 1 (apps/foo in west: Healthy)")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("HealthChanged ") && e.contains("east: Healthy → Unhealthy")),
        "{events:#?}"
    );
    let summary = browser
        .eval("document.getElementById('summary').textContent")
        .unwrap();
    assert!(
        summary.as_str().unwrap().contains("1 failed over"),
        "{summary}"
    );
    let shot = t.out().file("ui-failover.png");
    browser.screenshot(&shot, false).unwrap();
    eprintln!("screenshot: {}", shot.display());

    // The terminal says the same.
    let text = status(&t, &url, &[]).unwrap();
    assert!(text.contains("apps/foo  group 1 → west"), "{text}");
    assert!(text.contains("P east Unhealthy"), "{text}");
    assert!(text.contains("FailedOver"), "{text}");
    let foo = foo_in_json(&t, &url).unwrap();
    assert_eq!(foo["activeGroup"], 1);
    assert_eq!(foo["reason"], "failed-over");

    // A refused edit: its problem quotes the document, markup included. The page shows
    // it as text; nothing of it becomes an element or runs.
    let evil = "<img src=x onerror=window.__injected=1>";
    let document = [
        "apiVersion: detour.dev/v1alpha1",
        "kind: FailoverScheme",
        "metadata: {name: evil, namespace: apps}",
        "spec:",
        &format!("  primary: {{cluster: \"{evil}\", name: foo, namespace: apps}}"),
        "  failoverGroups:",
        "  - priorityGroup:",
        "    - {cluster: west, services: [{name: foo, namespace: apps}]}",
    ]
    .join("\n");
    std::fs::write(t.config_dir().join("evil.yaml"), document).unwrap();
    let shown = browser
        .wait_for(
            "the refused configuration's problem",
            "!document.getElementById('config').hidden && document.getElementById('config-message').textContent",
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(
        shown
            .as_str()
            .unwrap()
            .contains(&format!("unknown cluster \"{evil}\"")),
        "{shown}"
    );
    let refused = browser
        .eval("[...document.querySelectorAll('#events li[data-kind=\"ConfigRefused\"] .emsg')].map(e => e.textContent)")
        .unwrap();
    assert!(refused.to_string().contains("<img src=x"), "{refused}");
    assert_eq!(
        browser
            .eval("document.querySelectorAll('img').length")
            .unwrap(),
        json!(0)
    );
    assert_eq!(
        browser.eval("typeof window.__injected").unwrap(),
        json!("undefined")
    );
    browser
        .screenshot(&t.out().file("ui-refused.png"), false)
        .unwrap();
    let text = status(&t, &url, &[]).unwrap();
    assert!(text.contains("configuration refused at"), "{text}");
    assert!(
        text.contains(evil),
        "the terminal shows it verbatim: {text}"
    );

    // Removed again: the banner goes, without a reload either.
    std::fs::remove_file(t.config_dir().join("evil.yaml")).unwrap();
    browser
        .wait_for(
            "the banner gone",
            "document.getElementById('config').hidden",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(browser.eval("window.__sameDocument").unwrap(), json!("yes"));

    // Issue 17: a certificate with less than 7 days left is a warning on the page and
    // its seconds left a metric. East's table certificate is renewed for 5 days only.
    assert_eq!(
        browser
            .eval("document.getElementById('certs').hidden")
            .unwrap(),
        json!(true),
        "fresh certificates warn of nothing"
    );
    let certs = t.certs().unwrap().clone();
    std::fs::remove_file(certs.cluster("east", ClusterRole::Table).key).unwrap();
    t.detour()
        .certs_init_with(t.config_dir(), certs.root(), &["--leaf-days", "5"])
        .unwrap();
    let listed = browser
        .wait_for(
            "the expiring certificate listed",
            "!document.getElementById('certs').hidden && [...document.querySelectorAll('#certs-list li')].map(li => li.dataset.file)",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(listed, json!(["clusters/east/table.crt"]));
    assert_eq!(browser.eval("window.__sameDocument").unwrap(), json!("yes"));
    let metrics = t.controller().unwrap().get("/metrics").unwrap().body_text();
    let left: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("detour_certificate_expiry_seconds{")
                && l.contains("file=\"clusters/east/table.crt\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!((4.0 * 86_400.0..=5.0 * 86_400.0).contains(&left), "{left}");
    browser
        .screenshot(&t.out().file("ui-certificates.png"), false)
        .unwrap();

    // No script error, no Content-Security-Policy violation, no failed request.
    assert_eq!(browser.console().unwrap(), Vec::<String>::new());

    // The controller restarts: the page says it lost the stream, then catches up by
    // itself (EventSource reconnects; the first message is the whole document).
    let before = browser.eval("document.body.dataset.version").unwrap();
    t.controller().unwrap().kill().unwrap();
    browser
        .wait_for(
            "the lost connection shown",
            "document.getElementById('conn').dataset.state !== 'live'",
            Duration::from_secs(10),
        )
        .unwrap();
    t.controller().unwrap().restart().unwrap();
    let after = browser
        .wait_for(
            "live again, on the new controller's document",
            &format!(
                "document.getElementById('conn').dataset.state === 'live' && document.body.dataset.version !== {before} && document.body.dataset.version"
            ),
            Duration::from_secs(20),
        )
        .unwrap();
    eprintln!("the page followed the controller's restart: version {before} → {after}");
    assert_eq!(browser.eval("window.__sameDocument").unwrap(), json!("yes"));
    // The stream cut by the kill, and reconnections refused while it was down, are
    // all the browser may complain of.
    let console = browser.console().unwrap();
    assert!(
        console
            .iter()
            .all(|l| l.starts_with("console.error: Failed to load resource: net::ERR_")),
        "{console:#?}"
    );
}

/// Member clusters of the big configuration; the last one's gateway fails its checks.
const CLUSTERS: [&str; 4] = ["east", "west", "south", "north"];
const SCHEMES: usize = 200;
const NAMESPACES: [&str; 5] = ["payments", "search", "checkout", "catalog", "accounts"];

/// `SCHEMES` schemes over `CLUSTERS`, each with its primary in one cluster and the next
/// two as failover groups; every cluster runs every service. Health checks go to the
/// stand-in gateways at `gateways`.
fn many_schemes(gateways: &[SocketAddr]) -> String {
    let service = |i: usize| (NAMESPACES[i % NAMESPACES.len()], format!("api-{i:03}"));
    let mut yaml = String::new();
    for (c, gw) in CLUSTERS.iter().zip(gateways) {
        let _ = write!(
            yaml,
            "apiVersion: detour.dev/v1alpha1\nkind: MemberCluster\nmetadata: {{name: {c}}}\nspec:\n  \
             gateway: {{address: {}, port: {}}}\n  services:\n",
            gw.ip(),
            gw.port()
        );
        for i in 0..SCHEMES {
            let (ns, name) = service(i);
            let _ = writeln!(
                yaml,
                "  - {{name: {name}, namespace: {ns}, port: 8080, endpoints: [\"{gw}\"]}}"
            );
        }
        yaml.push_str("---\n");
    }
    for i in 0..SCHEMES {
        let (ns, name) = service(i);
        let at = |k: usize| CLUSTERS[(i + k) % CLUSTERS.len()];
        let target = |k: usize| {
            format!(
                "  - priorityGroup:\n    - {{cluster: {}, services: [{{name: {name}, namespace: {ns}}}]}}\n",
                at(k)
            )
        };
        let _ = write!(
            yaml,
            "apiVersion: detour.dev/v1alpha1\nkind: FailoverScheme\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  primary: {{cluster: {}, name: {name}, namespace: {ns}}}\n  failoverGroups:\n{}{}  \
             healthCheck: {{interval: 5s, timeout: 1s, unhealthyThreshold: 1, healthyThreshold: 1}}\n---\n",
            at(0),
            target(1),
            target(2)
        );
    }
    yaml
}

/// A stand-in gateway per cluster (cluster k at 127.0.k.1): the upstream binary answers
/// /healthz for any Host, which is all the controller's checks need of a gateway.
fn stand_in_gateways(clusters: &[&str], out: &OutDir) -> Result<Vec<Upstream>> {
    clusters
        .iter()
        .zip(1u8..)
        .map(|(c, k)| {
            let spec = UpstreamSpec {
                cluster: c.to_string(),
                service: "apps/gateway".into(),
                listen: free_addr(Ipv4Addr::new(127, 0, k, 1))?,
            };
            Upstream::start(spec, out)
        })
        .collect()
}

/// A controller on `config` without certificates, both listeners on free ports.
fn plaintext_controller(config: PathBuf, out: &OutDir) -> Result<Controller> {
    Controller::start(
        &ControllerSpec {
            config,
            listen: free_addr(Ipv4Addr::LOCALHOST)?,
            ops_listen: free_addr(Ipv4Addr::LOCALHOST)?,
            certs: None,
        },
        out,
    )
}

#[test]
fn two_hundred_schemes_load_within_a_second_and_stay_readable() {
    let name = "two_hundred_schemes_load_within_a_second_and_stay_readable";
    let out = OutDir::fresh(name).unwrap();
    let gateways = stand_in_gateways(&CLUSTERS, &out).unwrap();
    gateways[3].fail_health_checks(true).unwrap();
    let config = out.subdir("config").unwrap();
    let addrs: Vec<SocketAddr> = gateways.iter().map(Upstream::addr).collect();
    std::fs::write(config.join("config.yaml"), many_schemes(&addrs)).unwrap();
    let controller = plaintext_controller(config, &out).unwrap();

    let mut browser = Browser::launch(&out).unwrap();
    let started = Instant::now();
    browser
        .open(&format!("{}/ui/", controller.ops_url()), 1400, 900)
        .unwrap();
    let timing = browser
        .wait_for(
            "the first render",
            "(() => { const r = performance.getEntriesByName('detour:rendered')[0]; if (!r) return null;
                const nav = performance.getEntriesByType('navigation')[0];
                return { domContentLoaded: nav.domContentLoadedEventStart, rendered: r.startTime,
                         rows: document.querySelectorAll('#schemes tbody tr').length }; })()",
            Duration::from_secs(10),
        )
        .unwrap();
    eprintln!(
        "200 schemes: {timing} (ms from navigation start; {} including the browser's start)",
        secs(started.elapsed())
    );
    assert_eq!(timing["rows"], json!(SCHEMES));
    let dom_content_loaded = timing["domContentLoaded"].as_f64().unwrap();
    let rendered = timing["rendered"].as_f64().unwrap();
    assert!(
        rendered < 1000.0,
        "DOMContentLoaded at {dom_content_loaded:.0} ms, every scheme shown at {rendered:.0} ms: over a second"
    );

    // Compact: a scheme per line, the header stays in view when scrolled.
    let layout = browser
        .eval(
            "(() => { const body = document.querySelector('#schemes tbody');
                window.scrollTo(0, document.body.scrollHeight);
                return { rowHeight: body.getBoundingClientRect().height / body.rows.length,
                         headerTop: document.querySelector('header.top').getBoundingClientRect().top,
                         filterVisible: document.getElementById('filter').getBoundingClientRect().bottom > 0 }; })()",
        )
        .unwrap();
    assert!(layout["rowHeight"].as_f64().unwrap() <= 48.0, "{layout}");
    assert_eq!(layout["headerTop"], json!(0), "sticky header: {layout}");
    assert_eq!(layout["filterVisible"], json!(true), "{layout}");
    browser.eval("window.scrollTo(0, 0)").unwrap();

    // North's gateway fails its checks: the schemes with a north primary failed over.
    browser
        .wait_for(
            "north's 50 primaries failed over",
            "document.querySelectorAll('tr[data-scheme][data-active-group=\"1\"]').length === 50",
            Duration::from_secs(20),
        )
        .unwrap();
    browser
        .screenshot(&out.file("ui-200-schemes.png"), false)
        .unwrap();

    // The filter and the problems toggle narrow it down without a request.
    let shown = |browser: &mut Browser| -> Result<Value> {
        browser.eval("document.querySelectorAll('#schemes tbody tr:not([hidden])').length")
    };
    browser
        .eval("(() => { const f = document.getElementById('filter'); f.value = 'payments north'; f.dispatchEvent(new Event('input')); })()")
        .unwrap();
    // payments: every 5th scheme (40); with north in it: all but those with an east primary.
    assert_eq!(shown(&mut browser).unwrap(), json!(30));
    browser
        .eval("(() => { const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'));
                 document.getElementById('problems').click(); })()")
        .unwrap();
    assert_eq!(
        shown(&mut browser).unwrap(),
        json!(150),
        "every scheme with north in it"
    );
    browser
        .screenshot(&out.file("ui-200-schemes-problems.png"), false)
        .unwrap();
    assert_eq!(browser.console().unwrap(), Vec::<String>::new());
}

/// Issue 16, point 5: three member clusters' services, some a scheme's primary, some a
/// target, some named by no scheme (each cluster's gateway a stand-in answering checks).
fn services_config(gateways: &[SocketAddr]) -> String {
    let clusters = [
        (
            "east",
            vec![("apps", "foo"), ("apps", "bar"), ("web", "shop")],
        ),
        ("west", vec![("apps", "foo"), ("apps", "bar")]),
        ("south", vec![("apps", "foo"), ("ops", "batch")]),
    ];
    let mut yaml = String::new();
    for ((cluster, services), gw) in clusters.iter().zip(gateways) {
        let _ = write!(
            yaml,
            "apiVersion: detour.dev/v1alpha1\nkind: MemberCluster\nmetadata: {{name: {cluster}}}\nspec:\n  \
             gateway: {{address: {}, port: {}}}\n  services:\n",
            gw.ip(),
            gw.port()
        );
        for (ns, name) in services {
            let _ = writeln!(
                yaml,
                "  - {{name: {name}, namespace: {ns}, port: 8080, endpoints: [\"{gw}\"]}}"
            );
        }
        yaml.push_str("---\n");
    }
    yaml.push_str(
        "apiVersion: detour.dev/v1alpha1\nkind: FailoverScheme\nmetadata: {name: foo, namespace: apps}\nspec:\n  \
         primary: {cluster: east, name: foo, namespace: apps}\n  failoverGroups:\n  \
         - priorityGroup: [{cluster: west, services: [{name: foo, namespace: apps}]}]\n  \
         - priorityGroup: [{cluster: south, services: [{name: foo, namespace: apps}]}]\n---\n\
         apiVersion: detour.dev/v1alpha1\nkind: FailoverScheme\nmetadata: {name: bar, namespace: apps}\nspec:\n  \
         primary: {cluster: west, name: bar, namespace: apps}\n  failoverGroups:\n  \
         - priorityGroup: [{cluster: east, services: [{name: bar, namespace: apps}]}]\n",
    );
    yaml
}

/// The services table as the page shows it: one `cluster service port: roles` per
/// visible row.
fn services_in_page(browser: &mut Browser) -> Result<Value> {
    browser.eval(
        "[...document.querySelectorAll('#services tbody tr:not([hidden])')].map(r =>
            [...r.cells].map(c => c.textContent).slice(0, 3).join(' ') + ': ' +
            [...r.querySelectorAll('.role')].map(c => c.textContent).join(', '))",
    )
}

#[test]
fn every_service_of_every_cluster_is_shown_protected_or_not() {
    let name = "every_service_of_every_cluster_is_shown_protected_or_not";
    let out = OutDir::fresh(name).unwrap();
    let gateways = stand_in_gateways(&["east", "west", "south"], &out).unwrap();
    let config = out.subdir("config").unwrap();
    let addrs: Vec<SocketAddr> = gateways.iter().map(Upstream::addr).collect();
    std::fs::write(config.join("config.yaml"), services_config(&addrs)).unwrap();
    let controller = plaintext_controller(config.clone(), &out).unwrap();
    let url = controller.ops_url();
    let detour = detour_e2e::controller::Detour::locate().unwrap();
    let status = |args: &[&str]| -> String {
        detour
            .status(&url, args)
            .unwrap()
            .success(&format!("detour status {args:?}"))
            .unwrap()
            .stdout
    };

    let mut browser = Browser::launch(&out).unwrap();
    assert_eq!(browser.open(&format!("{url}/ui/"), 1400, 900).unwrap(), 200);
    browser
        .wait_for(
            "the services of every cluster",
            "document.querySelectorAll('#services tbody tr').length === 7",
            PAGE_LAG,
        )
        .unwrap();
    // Every service of every cluster, each with the schemes naming it and how.
    assert_eq!(
        services_in_page(&mut browser).unwrap(),
        json!([
            "east apps/bar 8080: target of apps/bar (group 1)",
            "east apps/foo 8080: primary of apps/foo",
            "east web/shop 8080: unprotected",
            "south apps/foo 8080: target of apps/foo (group 2)",
            "south ops/batch 8080: unprotected",
            "west apps/bar 8080: primary of apps/bar",
            "west apps/foo 8080: target of apps/foo (group 1)",
        ])
    );
    let summary = browser
        .eval("document.getElementById('summary').textContent")
        .unwrap();
    assert!(
        summary.as_str().unwrap().contains("2 unprotected services"),
        "{summary}"
    );
    browser
        .screenshot(&out.file("ui-services.png"), true)
        .unwrap();

    // "Unprotected only" leaves the two no scheme names; the filter box narrows further.
    browser
        .eval("document.getElementById('unprotected').click()")
        .unwrap();
    assert_eq!(
        services_in_page(&mut browser).unwrap(),
        json!([
            "east web/shop 8080: unprotected",
            "south ops/batch 8080: unprotected"
        ])
    );
    browser
        .eval("(() => { const f = document.getElementById('filter'); f.value = 'south'; f.dispatchEvent(new Event('input')); })()")
        .unwrap();
    assert_eq!(
        services_in_page(&mut browser).unwrap(),
        json!(["south ops/batch 8080: unprotected"])
    );
    browser
        .eval("(() => { const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); })()")
        .unwrap();
    browser
        .screenshot(&out.file("ui-services-unprotected.png"), true)
        .unwrap();

    // The terminal says the same, and `--unprotected` keeps only those two.
    let text = status(&[]);
    for line in [
        "east     apps/foo   8080  primary of apps/foo",
        "east     web/shop   8080  unprotected",
        "west     apps/foo   8080  target of apps/foo (group 1)",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    assert!(
        text.contains("services: 5 protected, 2 unprotected"),
        "{text}"
    );
    let unprotected = status(&["--unprotected", "--events", "0"]);
    let only: Vec<&str> = unprotected
        .lines()
        .skip_while(|l| !l.starts_with("CLUSTER"))
        .skip(1)
        .map(str::trim_end)
        .collect();
    assert_eq!(
        only,
        [
            "east     web/shop   8080  unprotected",
            "south    ops/batch  8080  unprotected"
        ]
    );
    let doc: Value = serde_json::from_str(&status(&["--output", "json", "--unprotected"])).unwrap();
    assert_eq!(
        doc["services"],
        json!([
            {"cluster": "east", "service": "web/shop", "port": 8080, "protocol": "http", "protection": []},
            {"cluster": "south", "service": "ops/batch", "port": 8080, "protocol": "http", "protection": []}
        ])
    );
    assert_eq!(
        doc["summary"]["services"],
        json!({"protected": 5, "unprotected": 2})
    );

    // A new scheme protects both: the page follows without a reload, and with
    // "unprotected only" still on it shows none.
    browser.eval("window.__sameDocument = 'yes'").unwrap();
    std::fs::write(
        config.join("batch.yaml"),
        "apiVersion: detour.dev/v1alpha1\nkind: FailoverScheme\nmetadata: {name: batch, namespace: ops}\nspec:\n  \
         primary: {cluster: south, name: batch, namespace: ops}\n  failoverGroups:\n  \
         - priorityGroup: [{cluster: east, services: [{name: shop, namespace: web}]}]\n",
    )
    .unwrap();
    browser
        .wait_for(
            "no unprotected service left",
            "document.querySelectorAll('#services tbody tr:not([hidden])').length === 0 && !document.getElementById('services-empty').hidden",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(browser.eval("window.__sameDocument").unwrap(), json!("yes"));
    browser
        .eval("document.getElementById('unprotected').click()")
        .unwrap();
    let shown = services_in_page(&mut browser).unwrap();
    assert!(
        shown
            .to_string()
            .contains("east web/shop 8080: target of ops/batch (group 1)"),
        "{shown}"
    );
    assert!(
        shown
            .to_string()
            .contains("south ops/batch 8080: primary of ops/batch"),
        "{shown}"
    );
    let text = status(&["--unprotected"]);
    assert!(
        text.contains("(none: every service is protected)"),
        "{text}"
    );
    assert_eq!(browser.console().unwrap(), Vec::<String>::new());
}
