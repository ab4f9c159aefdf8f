//! A headless browser for tests of the controller's `/ui/` page: Debian's Chromium
//! driven by playwright-core (`e2e/browser/driver.mjs`, a node process steered over
//! stdin/stdout, one JSON line per command). The test decides and asserts; the driver
//! only opens pages, evaluates expressions in them, waits and takes screenshots.
//!
//! Nothing here skips: a missing Chromium, node or `npm ci` is an error that names
//! `make browser`, which installs them.

use crate::out::OutDir;
use crate::paths::repo_root;
use crate::process::die_with_parent;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Room for the driver's own work on top of a command's wait (a busy 2-core machine).
const SLACK: Duration = Duration::from_secs(20);

/// The Chromium binary: `$CHROMIUM_BIN`, else Debian's.
pub fn chromium_bin() -> PathBuf {
    std::env::var_os("CHROMIUM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn browser_dir() -> PathBuf {
    repo_root().join("e2e/browser")
}

/// A running driver with one page.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    replies: std::sync::mpsc::Receiver<String>,
    next_id: u64,
    log: PathBuf,
}

impl Browser {
    /// Starts the driver (its stderr, and Chromium's, go to `browser.log` in `out`).
    pub fn launch(out: &OutDir) -> Result<Browser> {
        let chromium = chromium_bin();
        if !chromium.is_file() {
            bail!(
                "{} not found: the browser tests need Debian's chromium (`make browser` installs \
                 it with apt-get as root; or set $CHROMIUM_BIN)",
                chromium.display()
            );
        }
        let dir = browser_dir();
        if !dir
            .join("node_modules/playwright-core/package.json")
            .is_file()
        {
            bail!(
                "{}/node_modules has no playwright-core: run `make browser` (npm ci in e2e/browser)",
                dir.display()
            );
        }
        let log = out.file("browser.log");
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new("node");
        command
            .arg(dir.join("driver.mjs"))
            .current_dir(&dir)
            .env("CHROMIUM_BIN", &chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .context("starting node e2e/browser/driver.mjs (is node installed?)")?;
        let stdin = child.stdin.take().context("the driver's stdin")?;
        let stdout = child.stdout.take().context("the driver's stdout")?;
        Ok(Browser {
            child,
            stdin,
            replies: read_lines(stdout),
            next_id: 1,
            log,
        })
    }

    /// Opens `url` in a fresh page of `width`×`height` and waits for DOMContentLoaded;
    /// returns the HTTP status.
    pub fn open(&mut self, url: &str, width: u32, height: u32) -> Result<u16> {
        let value = self.call(
            json!({"cmd": "open", "url": url, "width": width, "height": height}),
            Duration::from_secs(30),
        )?;
        let status = value["status"].as_u64().unwrap_or_default();
        Ok(u16::try_from(status).unwrap_or_default())
    }

    /// The value of the JavaScript expression `expr` in the page.
    pub fn eval(&mut self, expr: &str) -> Result<Value> {
        self.call(json!({"cmd": "eval", "expr": expr}), Duration::ZERO)
    }

    /// Waits until `expr` is truthy in the page; returns its value. The error says
    /// `what` was awaited.
    pub fn wait_for(&mut self, what: &str, expr: &str, within: Duration) -> Result<Value> {
        let ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        self.call(
            json!({"cmd": "waitFor", "expr": expr, "timeoutMs": ms}),
            within,
        )
        .with_context(|| format!("waiting {within:?} for the page: {what}"))
    }

    /// A PNG of the viewport (or the whole page).
    pub fn screenshot(&mut self, path: &Path, full_page: bool) -> Result<()> {
        self.call(
            json!({"cmd": "screenshot", "path": path, "fullPage": full_page}),
            Duration::from_secs(10),
        )?;
        Ok(())
    }

    /// What the page logged since the last call: console messages, uncaught errors,
    /// Content-Security-Policy violations, failed requests.
    pub fn console(&mut self) -> Result<Vec<String>> {
        let value = self.call(json!({"cmd": "console"}), Duration::ZERO)?;
        Ok(value
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .filter_map(|l| l.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn call(&mut self, mut request: Value, wait: Duration) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        let cmd = request["cmd"].as_str().unwrap_or_default().to_string();
        writeln!(self.stdin, "{request}").context("writing to the browser driver")?;
        self.stdin.flush()?;
        loop {
            let line = self
                .replies
                .recv_timeout(wait + SLACK)
                .map_err(|_| self.died(&format!("no answer to {cmd:?}")))?;
            let reply: Value = serde_json::from_str(&line)
                .with_context(|| format!("the browser driver printed {line:?}"))?;
            if reply["id"] != json!(id) {
                continue; // an answer to an earlier command that timed out
            }
            if reply["ok"] == json!(true) {
                return Ok(reply["value"].clone());
            }
            bail!(
                "browser {cmd}: {}",
                reply["error"].as_str().unwrap_or("failed")
            );
        }
    }

    fn died(&mut self, what: &str) -> anyhow::Error {
        let status = self.child.try_wait().ok().flatten();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        anyhow::anyhow!(
            "browser driver: {what} (exit: {status:?}); the end of {}:\n{}",
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

/// The driver's stdout, line by line, on a channel (so waits can time out).
fn read_lines(stdout: ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing lets Chromium exit cleanly; the kill is for a driver that hangs.
        let _ = writeln!(self.stdin, "{}", json!({"id": 0, "cmd": "close"}));
        let _ = self.stdin.flush();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
