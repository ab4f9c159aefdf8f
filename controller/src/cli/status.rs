//! `detour status`: what the controller's `/ui/` page shows, in a terminal, from its
//! status API (`GET /v1/status`): once, or kept current with `--watch` (long-polls
//! `?wait=`, so a change shows at once). `--output json` prints the API's own document.

mod text;

use crate::client::{ClientError, HttpClient};
use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use detour_core::report::{STATUS_API_VERSION, StatusReport};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};
pub use text::{Services, Style, clean, render};

/// Where `detour serve` answers by default (its `--listen` default, which serves the
/// status API too unless `--ops-listen` is given).
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:8080";

/// How long one request may take (a long-poll: its wait, plus this).
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long `--watch` asks the controller to hold each poll; on a terminal the picture
/// is redrawn at least this often, so the "for" and "since" times move on.
const WATCH_WAIT: Duration = Duration::from_secs(5);
/// `--watch`: after a failed poll, try again this much later.
const RETRY: Duration = Duration::from_secs(2);
/// Largest document accepted (200 schemes make about 200 KiB).
const MAX_BYTES: usize = 64 << 20;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The controller: its --ops-listen address when it has one (always with mTLS,
    /// where --listen serves only tables), else its --listen address.
    #[arg(long, value_name = "URL", env = "DETOUR_CONTROLLER", default_value = DEFAULT_CONTROLLER)]
    pub controller: String,
    /// Keep the picture current: redraw on every change (until interrupted).
    #[arg(long)]
    pub watch: bool,
    /// `text` for people; `json` for scripts: the status API's document as served
    /// (with --watch, one document per line, per change).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// Recent events shown in text (the JSON has all the controller keeps).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub events: usize,
    /// List only the services no scheme protects (as primary or target); in JSON, the
    /// document's `services` keep only those.
    #[arg(long)]
    pub unprotected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub fn run(args: StatusArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
    let base = base_url(&args.controller)?;
    let api = Api {
        client: HttpClient::fresh_connections(),
        url: format!("{base}/v1/status"),
        base,
    };
    let listed = if args.unprotected {
        Services::Unprotected
    } else {
        Services::All
    };
    let mut screen = Screen::new(args.output, args.events, args.watch, listed);
    if !args.watch {
        let (report, json) = runtime
            .block_on(api.fetch(None, Duration::ZERO))?
            .into_new()?;
        screen.show(&api.base, &report, &json, None)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut last: Option<(StatusReport, Bytes)> = None;
    loop {
        let known = last.as_ref().map(|(r, _)| r.version.as_str());
        let wait = if known.is_some() {
            WATCH_WAIT
        } else {
            Duration::ZERO
        };
        match runtime.block_on(api.fetch(known, wait)) {
            Ok(Fetched::New(report, json)) => {
                screen.show(&api.base, &report, &json, None)?;
                last = Some((*report, json));
            }
            Ok(Fetched::Unchanged) => {
                if let Some((report, json)) = &last {
                    screen.refresh(&api.base, report, json)?;
                }
            }
            Err(e) => {
                // Keep watching: the controller may be restarting.
                let problem = format!("{e:#}; trying again every {}s", RETRY.as_secs());
                match &last {
                    Some((report, json)) => screen.show(&api.base, report, json, Some(&problem))?,
                    None => screen.problem(&problem)?,
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// `HOST:PORT` or `http://HOST:PORT[/prefix]`, without a trailing slash.
fn base_url(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    let url = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    if url.starts_with("https://") {
        bail!(
            "--controller {text}: the status API is plain HTTP (on --ops-listen when the controller \
             runs mTLS); use http://"
        );
    }
    match url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
    {
        Some(rest) if !rest.is_empty() => Ok(format!("http://{rest}")),
        _ => bail!("--controller {text:?} is not an http:// URL or HOST:PORT"),
    }
}

struct Api {
    client: HttpClient,
    base: String,
    url: String,
}

enum Fetched {
    New(Box<StatusReport>, Bytes),
    Unchanged,
}

impl Fetched {
    fn into_new(self) -> anyhow::Result<(StatusReport, Bytes)> {
        match self {
            Fetched::New(report, json) => Ok((*report, json)),
            Fetched::Unchanged => Err(anyhow!("the controller answered 304 to a plain GET")),
        }
    }
}

impl Api {
    /// The document, or `Unchanged` when it is still version `known` after `wait`.
    async fn fetch(&self, known: Option<&str>, wait: Duration) -> anyhow::Result<Fetched> {
        let url = if wait.is_zero() {
            self.url.clone()
        } else {
            format!("{}?wait={}ms", self.url, wait.as_millis())
        };
        let etag = known.map(|v| format!("\"{v}\""));
        let headers: Vec<(&str, &str)> =
            etag.iter().map(|e| ("if-none-match", e.as_str())).collect();
        let (resp, body) = self
            .client
            .get_body(&url, &headers, wait + TIMEOUT, MAX_BYTES)
            .await
            .map_err(|e| self.unreachable(e))?;
        match resp.status().as_u16() {
            200 => {}
            304 => return Ok(Fetched::Unchanged),
            404 => bail!(
                "{url} answered 404: no status API there (a controller running mTLS serves only \
                 tables on --listen; use its --ops-listen address)"
            ),
            code => bail!(
                "{url} answered {code}: {}",
                clean(&String::from_utf8_lossy(&body[..body.len().min(500)]))
            ),
        }
        let report: StatusReport = serde_json::from_slice(&body)
            .with_context(|| format!("{url} did not answer with a detour status document"))?;
        if report.api_version != STATUS_API_VERSION {
            bail!(
                "{url} serves {}, this detour reads {STATUS_API_VERSION}",
                clean(&report.api_version)
            );
        }
        Ok(Fetched::New(Box::new(report), body))
    }

    fn unreachable(&self, e: ClientError) -> anyhow::Error {
        anyhow!(
            "cannot reach the detour controller at {} ({e}); is `detour serve` running there? \
             Give its address with --controller URL (default {DEFAULT_CONTROLLER}; with mTLS, its \
             --ops-listen address)",
            self.base
        )
    }
}

/// Where the pictures go: a terminal is redrawn in place, anything else gets one
/// picture (or JSON line) per version.
struct Screen {
    output: Output,
    events: usize,
    listed: Services,
    /// `--watch` on a terminal: redraw in place.
    redraw: bool,
    style: Style,
    printed: bool,
}

impl Screen {
    fn new(output: Output, events: usize, watch: bool, listed: Services) -> Screen {
        let terminal = std::io::stdout().is_terminal();
        // https://no-color.org: set and not empty means no colour.
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Screen {
            output,
            events,
            listed,
            redraw: watch && terminal,
            printed: false,
            style: if terminal && !no_color {
                Style::Colour
            } else {
                Style::Plain
            },
        }
    }

    fn show(
        &mut self,
        base: &str,
        report: &StatusReport,
        json: &Bytes,
        problem: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match self.output {
            Output::Json if self.listed == Services::All => {
                out.write_all(json)?;
                out.write_all(b"\n")?;
            }
            Output::Json => {
                out.write_all(&only_unprotected(json)?)?;
                out.write_all(b"\n")?;
            }
            Output::Text => {
                let mut picture = render(
                    report,
                    base,
                    SystemTime::now(),
                    self.style,
                    self.events,
                    self.listed,
                );
                if let Some(problem) = problem {
                    picture.push_str(&format!("\n{}\n", clean(problem)));
                }
                if self.redraw {
                    // Home, then clear to the end: the new picture replaces the old one.
                    out.write_all(b"\x1b[H\x1b[J")?;
                } else if self.printed {
                    out.write_all(b"\n")?;
                }
                out.write_all(picture.as_bytes())?;
            }
        }
        out.flush()?;
        self.printed = true;
        Ok(())
    }

    /// Nothing changed: on a terminal the times move on; elsewhere nothing is printed.
    fn refresh(&mut self, base: &str, report: &StatusReport, json: &Bytes) -> anyhow::Result<()> {
        if self.redraw && self.output == Output::Text {
            self.show(base, report, json, None)?;
        }
        Ok(())
    }

    fn problem(&mut self, problem: &str) -> anyhow::Result<()> {
        eprintln!("{}", clean(problem));
        Ok(())
    }
}

/// The document as served, its `services` cut down to the unprotected ones. Read as
/// plain JSON, so that fields this detour does not know stay as the controller wrote them.
fn only_unprotected(json: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(json).context("the status document is not JSON")?;
    if let Some(services) = doc
        .get_mut("services")
        .and_then(serde_json::Value::as_array_mut)
    {
        services.retain(|s| {
            s.get("protection")
                .and_then(serde_json::Value::as_array)
                .is_none_or(Vec::is_empty)
        });
    }
    Ok(serde_json::to_vec(&doc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprotected_json_keeps_only_services_no_scheme_names() {
        let doc = br#"{"apiVersion":"detour.dev/status/v1","future":{"kept":true},"services":[
            {"cluster":"east","service":"apps/foo","protection":[{"scheme":"apps/foo","role":"Primary","group":0}]},
            {"cluster":"east","service":"web/shop","protection":[]}]}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&only_unprotected(doc).unwrap()).unwrap();
        assert_eq!(
            out["services"],
            serde_json::json!([{"cluster":"east","service":"web/shop","protection":[]}])
        );
        assert_eq!(out["future"]["kept"], true);
    }

    #[test]
    fn controller_urls() {
        assert_eq!(base_url("127.0.0.1:9090").unwrap(), "http://127.0.0.1:9090");
        assert_eq!(base_url("http://ctl:8080/").unwrap(), "http://ctl:8080");
        assert_eq!(base_url("http://ctl/detour").unwrap(), "http://ctl/detour");
        assert!(
            base_url("https://ctl:8080")
                .unwrap_err()
                .to_string()
                .contains("plain HTTP")
        );
        assert!(base_url("ftp://ctl").is_err());
        assert!(base_url("http://").is_err());
    }
}
