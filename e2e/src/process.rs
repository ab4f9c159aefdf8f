//! Child processes that cannot outlive the test: killed when their [`Process`] is
//! dropped (also while a failing test unwinds), and killed by the kernel if the test
//! process itself dies (`PR_SET_PDEATHSIG`), so no Envoy or upstream is ever left behind.
//!
//! The death signal is tied to the *thread* that spawned the child: spawn from the
//! test's own thread (or another thread that lives as long as the process), never from
//! a short-lived helper thread or a tokio blocking thread.

use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How to (re)start one process: program, arguments, and the log its output goes to.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// stdout and stderr are both appended here, across restarts.
    pub log: PathBuf,
}

impl ProcessSpec {
    pub fn new(name: &str, program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        ProcessSpec {
            name: name.to_string(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log: log.into(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn spawn(self) -> Result<Process> {
        let mut process = Process {
            spec: self,
            child: None,
            starts: 0,
        };
        process.start()?;
        Ok(process)
    }

    fn command_line(&self) -> String {
        let mut line = self.program.display().to_string();
        for arg in &self.args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }
}

/// A running (or killed, restartable) child process.
#[derive(Debug)]
pub struct Process {
    spec: ProcessSpec,
    child: Option<Child>,
    starts: u32,
}

impl Process {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// The pid of the current incarnation, if one was started and not yet reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times this process was started (1 after the first spawn).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Sends `sig` (e.g. SIGSTOP, SIGCONT) to the running process.
    pub fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        self.ensure_running()?;
        let pid = self.pid().context("no process")?;
        if !signal(pid, sig) {
            bail!("signal {sig} to {} ({pid}) failed", self.spec.name);
        }
        Ok(())
    }

    /// Its resident memory now (`VmRSS`), `None` when it is not running.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.pid().and_then(|pid| rss_bytes(pid).ok())
    }

    fn start(&mut self) -> Result<()> {
        let spec = &self.spec;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("opening {}", spec.log.display()))?;
        writeln!(
            log,
            "==== detour-e2e: start #{} of {}: {}",
            self.starts + 1,
            spec.name,
            spec.command_line()
        )?;
        let stderr: File = log.try_clone()?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}: {}", spec.name, spec.command_line()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// SIGKILL, as a crash or an OOM kill would end it, and reap it. Killing a process
    /// that is not running is not an error.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // Fails only if it already exited; `wait` below reaps it either way.
            let _ = child.kill();
            child
                .wait()
                .with_context(|| format!("reaping {}", self.spec.name))?;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        signal(child.id(), libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill()?;
        Ok(None)
    }

    /// Kills the current incarnation (if any) and starts the same command again.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.start()
    }

    /// `Some(status)` once the process has exited (it is then reaped).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            None => Ok(None),
            Some(child) => Ok(child.try_wait()?),
        }
    }

    /// An error with the end of the log if the process is not running.
    pub fn ensure_running(&mut self) -> Result<()> {
        if self.child.is_none() {
            bail!("{} is not running (killed, not restarted)", self.spec.name);
        }
        if let Some(status) = self.exited()? {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.spec.name,
                self.spec.log.display(),
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Sends `sig` to `pid`. Used for SIGTERM (std only sends SIGKILL) and by tests.
pub fn signal(pid: u32, sig: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    #[allow(unsafe_code)]
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    rc == 0
}

/// Resident memory (VmRSS of /proc/PID/status) in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// Whether a process with this pid exists (and is not a zombie we could still reap).
pub fn pid_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3, after the parenthesised command name, is the state; Z is a zombie.
    match stat.rsplit_once(')') {
        Some((_, rest)) => !rest.trim_start().starts_with('Z'),
        None => false,
    }
}

/// `pid: command line` of every live process whose command line contains `needle`
/// (e.g. a test's output directory): what a test left running.
pub fn processes_mentioning(needle: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue; // not a process, or it just exited
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && pid_alive_name(&entry.file_name()) {
            found.push(format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                cmdline.trim()
            ));
        }
    }
    Ok(found)
}

fn pid_alive_name(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(pid_alive)
}

/// Asks the kernel to SIGKILL the child when the spawning thread's process dies, so a
/// test runner killed with SIGKILL (or a timeout) leaves no process behind.
pub(crate) fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe system calls prctl(2) and getppid(2); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nothing would
            // deliver the signal, so do not start at all.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(dir: &Path) -> ProcessSpec {
        ProcessSpec::new("sleeper", "/bin/sleep", dir.join("sleeper.log")).arg("600")
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("detour-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_running_process_has_a_resident_size() {
        let dir = scratch("rss");
        let process = sleeper(&dir).spawn().unwrap();
        assert!(process.rss_bytes().unwrap() > 0);
        assert!(rss_bytes(std::process::id()).unwrap() > 1 << 20);
    }

    #[test]
    fn dropping_a_process_kills_it() {
        let dir = scratch("drop");
        let process = sleeper(&dir).spawn().unwrap();
        let pid = process.pid().unwrap();
        assert!(pid_alive(pid));
        drop(process);
        assert!(!pid_alive(pid), "sleep {pid} survived its guard");
    }

    #[test]
    fn leftover_processes_are_found_by_their_command_line() {
        let dir = scratch("leftover");
        // A sleep of a length no other process uses is its own marker.
        let seconds = format!("600.{}", std::process::id());
        let process = ProcessSpec::new("sleeper", "/bin/sleep", dir.join("sleeper.log"))
            .arg(&seconds)
            .spawn()
            .unwrap();
        let needle = format!("sleep {seconds}");
        // Until the child has exec'd, its command line is still this test's.
        let found = crate::wait::wait_until("the sleeper shows up", Duration::from_secs(5), || {
            let found = processes_mentioning(&needle)?;
            Ok(if found.is_empty() {
                crate::wait::Probe::NotYet("not yet".into())
            } else {
                crate::wait::Probe::Ready(found)
            })
        })
        .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(&format!("{}:", process.pid().unwrap())));
        drop(process);
        assert!(processes_mentioning(&needle).unwrap().is_empty());
    }

    #[test]
    fn kill_then_restart_gives_a_new_incarnation_and_keeps_the_log() {
        let dir = scratch("restart");
        let mut process = sleeper(&dir).spawn().unwrap();
        let first = process.pid().unwrap();
        process.kill().unwrap();
        assert!(!pid_alive(first));
        assert!(process.ensure_running().is_err());
        process.restart().unwrap();
        let second = process.pid().unwrap();
        assert_ne!(first, second);
        process.ensure_running().unwrap();
        assert_eq!(process.starts(), 2);
        let log = std::fs::read_to_string(process.log_path()).unwrap();
        assert!(log.contains("start #1 of sleeper") && log.contains("start #2 of sleeper"));
    }

    #[test]
    fn an_exited_process_is_reported_with_its_log() {
        let dir = scratch("exited");
        let mut process = ProcessSpec::new("failing", "/bin/sh", dir.join("failing.log"))
            .args(["-c", "echo config is broken >&2; exit 3"])
            .spawn()
            .unwrap();
        let err = crate::wait::wait_until("sh exits", Duration::from_secs(5), || {
            process.ensure_running()?;
            Ok(crate::wait::Probe::NotYet::<()>("running".into()))
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("exited") && err.contains("config is broken"),
            "{err}"
        );
    }

    /// Env var telling [`orphan_helper`] where to write its child's pid.
    const ORPHAN_PIDFILE: &str = "DETOUR_E2E_ORPHAN_PIDFILE";

    #[test]
    fn children_die_with_the_test_process() {
        let dir = scratch("orphan");
        let pidfile = dir.join("child.pid");
        // Run this test binary again, only the helper below: it starts a child, then
        // dies without running any destructor (as a runner's SIGKILL would end it).
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::tests::orphan_helper",
                "--ignored",
                "--nocapture",
            ])
            .env(ORPHAN_PIDFILE, &pidfile)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the helper was meant to abort");
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = crate::wait::wait_until("the orphan is killed", Duration::from_secs(5), || {
            Ok(if pid_alive(pid) {
                crate::wait::Probe::NotYet(format!("pid {pid} alive"))
            } else {
                crate::wait::Probe::Ready(())
            })
        });
        if gone.is_err() {
            signal(pid, libc::SIGKILL);
        }
        gone.unwrap();
    }

    #[test]
    #[ignore = "run by children_die_with_the_test_process in a process of its own"]
    fn orphan_helper() {
        let Some(pidfile) = std::env::var_os(ORPHAN_PIDFILE) else {
            return;
        };
        let pidfile = PathBuf::from(pidfile);
        let dir = pidfile.parent().unwrap().to_path_buf();
        let child = sleeper(&dir).spawn().unwrap();
        std::fs::write(&pidfile, child.pid().unwrap().to_string()).unwrap();
        std::process::abort();
    }
}
