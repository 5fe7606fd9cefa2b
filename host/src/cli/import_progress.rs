//! `strata import`'s progress on stderr: a bar redrawn in place on a
//! terminal (rows, rows/s, bytes, ETA), a plain line every few seconds
//! otherwise; messages (rejected rows) are printed above it.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::Recover as _;

/// How often the bar is redrawn on a terminal.
const REDRAW_TERMINAL: Duration = Duration::from_millis(200);
/// How often a progress line is written when stderr is not a terminal.
const REDRAW_PLAIN: Duration = Duration::from_secs(5);

/// The shared progress of one import.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Mutex<State>>,
}

struct State {
    /// Units (bytes of text files, rows of Parquet files) in all files.
    total: u64,
    done: u64,
    rows: u64,
    started: Instant,
    last_draw: Option<Instant>,
    terminal: bool,
    quiet: bool,
    /// A bar is on the screen (to be cleared before a message).
    drawn: bool,
    /// Units are bytes (text files only), not rows of Parquet files.
    bytes: bool,
}

impl Progress {
    /// Progress over `total` units (`bytes` of text files, else rows of
    /// Parquet files too); nothing is drawn when `quiet`.
    pub fn new(total: u64, bytes: bool, quiet: bool) -> Progress {
        let state = State {
            total,
            done: 0,
            rows: 0,
            started: Instant::now(),
            last_draw: None,
            terminal: std::io::stderr().is_terminal(),
            quiet,
            drawn: false,
            bytes,
        };
        Progress { inner: Arc::new(Mutex::new(state)) }
    }

    /// `units` more of the files and `rows` more rows were acknowledged.
    pub fn advance(&self, units: u64, rows: u64) {
        let mut state = self.inner.lock_or_recover();
        state.done += units;
        state.rows += rows;
        state.draw(false);
    }

    /// A file that needs no work.
    pub fn skip(&self, units: u64) {
        self.inner.lock_or_recover().total -= units;
    }

    /// Prints a line above the bar.
    pub fn message(&self, text: &str) {
        let mut state = self.inner.lock_or_recover();
        let mut stderr = std::io::stderr().lock();
        if state.drawn {
            let _ = write!(stderr, "\r\x1b[K");
            state.drawn = false;
        }
        let _ = writeln!(stderr, "{text}");
    }

    /// Draws the final state and ends the bar's line.
    pub fn finish(&self) {
        let mut state = self.inner.lock_or_recover();
        if state.terminal && state.drawn {
            state.draw(true);
            let _ = writeln!(std::io::stderr());
            state.drawn = false;
        }
    }
}

impl State {
    fn draw(&mut self, force: bool) {
        if self.quiet {
            return;
        }
        let every = if self.terminal { REDRAW_TERMINAL } else { REDRAW_PLAIN };
        let now = Instant::now();
        if !force && self.last_draw.is_some_and(|last| now - last < every) {
            return;
        }
        if self.last_draw.is_none() && !force {
            // The first line waits one interval: short imports print none.
            self.last_draw = Some(now);
            return;
        }
        self.last_draw = Some(now);
        let line = self.line(now);
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r\x1b[K{line}");
            self.drawn = true;
        } else {
            let _ = writeln!(stderr, "import: {line}");
        }
        let _ = stderr.flush();
    }

    fn line(&self, now: Instant) -> String {
        let seconds = (now - self.started).as_secs_f64().max(1e-3);
        let fraction = if self.total == 0 { 1.0 } else { (self.done as f64 / self.total as f64).min(1.0) };
        let rate = self.rows as f64 / seconds;
        let eta = if fraction > 0.0 { seconds * (1.0 - fraction) / fraction } else { f64::NAN };
        let width = 24;
        let filled = (fraction * width as f64) as usize;
        let bar = format!("{}{}", "=".repeat(filled), " ".repeat(width - filled));
        let eta = if eta.is_finite() { format!("{eta:.0} s") } else { "?".to_string() };
        let done = if self.bytes {
            format!("{:.1}/{:.1} MB", self.done as f64 / 1e6, self.total as f64 / 1e6)
        } else {
            format!("{}/{} units", self.done, self.total)
        };
        format!("[{bar}] {:>5.1}%  {} rows  {rate:.0} rows/s  {done}  ETA {eta}", fraction * 100.0, self.rows)
    }
}
