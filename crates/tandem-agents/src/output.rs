//! Agent output: splitting bytes into lines (any bytes, any length), sending
//! each line to tracing, keeping the last lines for [`crate::ActionResult`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::{debug, info};

/// Lines kept for `ActionResult::output_tail`.
pub(crate) const TAIL_LINES: usize = 20;
/// A line longer than this is cut into pieces of this size (a program that
/// never prints a newline must not grow our memory).
pub(crate) const MAX_LINE: usize = 4096;
/// Standard output kept whole when a caller asks for it (OCF meta-data).
const MAX_CAPTURE: usize = 1 << 20;

/// Who is speaking: carried into every tracing event as structured fields.
#[derive(Debug, Clone)]
pub(crate) struct LogCtx {
    pub group: String,
    pub resource: String,
    pub action: &'static str,
    /// Log lines at debug instead of info (meta-data XML, for instance).
    pub quiet: bool,
}

impl LogCtx {
    pub(crate) fn line(&self, stream: &'static str, line: &str) {
        if self.quiet {
            debug!(group = %self.group, resource = %self.resource, action = self.action, stream, line, "agent output");
        } else {
            info!(group = %self.group, resource = %self.resource, action = self.action, stream, line, "agent output");
        }
    }
}

/// Splits a byte stream into lines: invalid UTF-8 is replaced, `\r\n` is
/// accepted, over-long lines are cut at [`MAX_LINE`] bytes.
#[derive(Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn push(&mut self, data: &[u8], mut emit: impl FnMut(String)) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') {
            emit(clean(&self.buf[start..start + i]));
            start += i + 1;
        }
        self.buf.drain(..start);
        while self.buf.len() >= MAX_LINE {
            let rest = self.buf.split_off(MAX_LINE);
            emit(clean(&self.buf));
            self.buf = rest;
        }
    }

    /// The unterminated last line, if any.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(String)) {
        if !self.buf.is_empty() {
            emit(clean(&self.buf));
            self.buf.clear();
        }
    }
}

fn clean(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.strip_suffix('\r').unwrap_or(&s).to_string()
}

/// The last [`TAIL_LINES`] lines, oldest first.
#[derive(Default)]
pub(crate) struct Tail {
    lines: VecDeque<(&'static str, String)>,
}

impl Tail {
    pub(crate) fn push(&mut self, stream: &'static str, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back((stream, line));
    }

    /// All kept lines joined with newlines.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (i, (_, line)) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(line);
        }
        out
    }
}

/// Output collected from one action process (its two pipes).
#[derive(Default)]
pub(crate) struct Collected {
    pub tail: Tail,
    /// Whole standard output, when asked for (bounded by [`MAX_CAPTURE`]).
    pub stdout: Option<String>,
    /// The last `tandem-freshness:` line on standard output (see
    /// [`crate::freshness`]).
    pub freshness: Option<tandem_core::groups::Freshness>,
}

pub(crate) type Shared = Arc<Mutex<Collected>>;

pub(crate) fn record(shared: &Shared, ctx: &LogCtx, stream: &'static str, line: String) {
    ctx.line(stream, &line);
    let mut c = shared.lock().unwrap_or_else(PoisonError::into_inner);
    // "output" is stdout and stderr on one pipe: either may carry it.
    if matches!(stream, "stdout" | "output")
        && let Some(f) = crate::freshness::parse_line(&line)
    {
        c.freshness = Some(f);
    }
    if stream == "stdout"
        && let Some(all) = c.stdout.as_mut()
        && all.len() + line.len() < MAX_CAPTURE
    {
        all.push_str(&line);
        all.push('\n');
    }
    c.tail.push(stream, line);
}

/// The last [`TAIL_LINES`] lines of a text (the supervised process's log).
pub(crate) fn last_lines(bytes: &[u8]) -> String {
    let mut tail = Tail::default();
    let mut splitter = LineSplitter::default();
    splitter.push(bytes, |l| tail.push("log", l));
    splitter.finish(|l| tail.push("log", l));
    tail.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_of_any_bytes() {
        let mut lines = Vec::new();
        let mut s = LineSplitter::default();
        s.push(b"one\r\ntw", |l| lines.push(l));
        s.push(b"o\n\xff\xfe bad\nrest", |l| lines.push(l));
        s.finish(|l| lines.push(l));
        assert_eq!(lines, ["one", "two", "\u{fffd}\u{fffd} bad", "rest"]);
    }

    #[test]
    fn cuts_endless_lines() {
        let mut lines = Vec::new();
        let mut s = LineSplitter::default();
        s.push(&vec![b'x'; MAX_LINE * 2 + 10], |l| lines.push(l));
        s.finish(|l| lines.push(l));
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[2].len(), 10);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let tail = last_lines(text.as_bytes());
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(tail.starts_with("line 30\n"));
        assert!(tail.ends_with("line 49"));
    }
}
