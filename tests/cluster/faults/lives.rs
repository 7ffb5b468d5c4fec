//! The services' lives, to the millisecond: when each service process was
//! created (service.py writes it to the lives file itself, from
//! /proc/self/stat, before anything else) and when it died (seen here
//! through a pidfd, whatever ended it: its own exit, Tandem's SIGTERM or
//! SIGKILL, the fault suite's `kill -9`). Both on CLOCK_MONOTONIC, the
//! clock of the ledger and of the fault journal. Neither goes over the
//! network, so a cut link hides no activity from the checker.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use serde_json::Value;

use super::net::mono;

/// One service process: who it served and from when to when.
#[derive(Debug, Clone)]
pub struct Lifetime {
    pub node: String,
    pub group: String,
    pub epoch: u64,
    pub pid: u64,
    /// When the process was created (rounded down to the kernel's tick).
    pub born: f64,
    /// When it died; `None` while it lives.
    pub died: Option<f64>,
}

/// Reads the lives file: "start" lines of the services, "died" lines of
/// the watcher. A line still being written is skipped.
pub fn parse(text: &str) -> Vec<Lifetime> {
    let mut lives: Vec<Lifetime> = Vec::new();
    for v in text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        let Some(pid) = v["pid"].as_u64() else { continue };
        match v["type"].as_str() {
            Some("start") => {
                let (Some(node), Some(group), Some(epoch), Some(born)) = (
                    v["node"].as_str(),
                    v["group"].as_str(),
                    v["epoch"].as_u64(),
                    v["born"].as_f64(),
                ) else {
                    continue;
                };
                lives.push(Lifetime {
                    node: node.to_string(),
                    group: group.to_string(),
                    epoch,
                    pid,
                    born,
                    died: None,
                });
            }
            Some("died") => {
                if let Some(l) = lives.iter_mut().rev().find(|l| l.pid == pid && l.died.is_none()) {
                    l.died = v["t"].as_f64();
                }
            }
            _ => {}
        }
    }
    lives
}

/// Watches every service process named in the lives file and appends the
/// moment it died. Stops when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub fn start(file: &Path) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, file) = (stop.clone(), file.to_path_buf());
        let thread = std::thread::spawn(move || watch(&file, &flag));
        Watcher {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn died(file: &PathBuf, pid: u64, t: f64, how: &str) {
    let line = format!("{{\"type\":\"died\",\"pid\":{pid},\"t\":{t},\"seen\":\"{how}\"}}\n");
    // One write with O_APPEND, like the services' own lines.
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).create(true).open(file) {
        let _ = f.write_all(line.as_bytes());
    }
}

fn pidfd_open(pid: u64) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

fn watch(file: &PathBuf, stop: &AtomicBool) {
    let mut read_to = 0u64;
    let mut pending = String::new();
    let mut watched: Vec<(u64, OwnedFd)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        // New "start" lines: watch their processes.
        if let Ok(mut f) = std::fs::File::open(file)
            && f.seek(SeekFrom::Start(read_to)).is_ok()
        {
            let mut text = String::new();
            if let Ok(n) = f.read_to_string(&mut text) {
                read_to += n as u64;
                pending.push_str(&text);
            }
        }
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["type"] != "start" {
                continue;
            }
            let Some(pid) = v["pid"].as_u64() else { continue };
            match pidfd_open(pid) {
                Some(fd) => watched.push((pid, fd)),
                // Gone before it could be watched: it died by now.
                None => died(file, pid, mono(), "gone before watched"),
            }
        }
        if watched.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(2));
            continue;
        }
        let mut fds: Vec<PollFd<'_>> = watched.iter().map(|(_, fd)| PollFd::new(fd, PollFlags::IN)).collect();
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000,
        };
        if !matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0) {
            continue;
        }
        let exited: Vec<bool> = fds.iter().map(|p| !p.revents().is_empty()).collect();
        drop(fds);
        let now = mono();
        let mut k = 0;
        watched.retain(|(pid, _)| {
            let gone = exited[k];
            k += 1;
            if gone {
                died(file, *pid, now, "pidfd");
            }
            !gone
        });
    }
}
