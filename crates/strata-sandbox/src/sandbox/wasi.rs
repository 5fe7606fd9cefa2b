//! The guest's view of the world: WASI linked with no capabilities, and
//! the host state of one call.
//!
//! Only `wasi:io`, `wasi:cli` (empty environment and arguments, empty
//! stdin, stdout and stderr captured into the log, capped; stderr's last
//! words — a Rust guest's panic message — also go into the trap's error) and
//! `wasi:random/insecure-seed` (a constant, so Rust's `HashMap` works and
//! stays deterministic) are linked, next to the `strata:policy/host`
//! interface (`log`, rate-limited and cut per call). Anything else a
//! component imports is refused before it is instantiated (the allow-list
//! in the sandbox façade).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::shared::strata::policy::host as wit_host;
use super::bindings::shared::strata::policy::types as wit;
use super::limits::GuestLimiter;
use crate::sync::{Recover as _, RecoverRw as _};
use crate::text::truncate_at_char_boundary;

/// Bytes of guest stdout + stderr kept per call; the rest is dropped (and
/// the drop is logged).
pub(super) const CAPTURED_OUTPUT_BYTES_MAX: usize = 16 * 1024;
/// `log` calls honoured per call; later ones are counted and dropped.
const LOG_MESSAGES_PER_CALL_MAX: u32 = 100;
/// Bytes of one `log` message; longer ones are cut.
const LOG_MESSAGE_BYTES_MAX: usize = 4 * 1024;
/// Bytes of the guest's stderr quoted in a trap's error.
const GUEST_MESSAGE_BYTES_MAX: usize = 1024;

/// The least severe guest `log` level a policy's messages are shown at
/// (the policy TOML's `log_level`). Messages below it are dropped; the
/// others reach the server log at their own level, except `debug`
/// messages, which a policy set to `debug` logs at `info` (tagged
/// `guest_level = "debug"`) so that they show without turning on the
/// server's own debug log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestLogLevel {
    /// Everything, `debug` included.
    Debug,
    /// `info`, `warn` and `error` (the default).
    #[default]
    Info,
    /// `warn` and `error`.
    Warn,
    /// `error` only.
    Error,
}

/// The guest log level of each policy, by name; shared by the sandbox and
/// every component it loads. A policy not listed logs at `info`.
#[derive(Debug, Clone, Default)]
pub(super) struct GuestLogLevels {
    levels: Arc<RwLock<HashMap<String, GuestLogLevel>>>,
}

impl GuestLogLevels {
    pub(super) fn set(&self, policy: &str, level: GuestLogLevel) {
        let mut levels = self.levels.write_or_recover();
        if level == GuestLogLevel::default() {
            levels.remove(policy);
        } else {
            levels.insert(policy.to_string(), level);
        }
    }

    pub(super) fn get(&self, policy: &str) -> GuestLogLevel {
        self.levels.read_or_recover().get(policy).copied().unwrap_or_default()
    }
}

/// Links the WASI interfaces std guests import, with no capabilities:
/// streams and polling, the cli interfaces (empty environment, arguments
/// and stdin; stdout/stderr captured) and a constant insecure seed.
pub(super) fn link_capability_free_wasi(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{cli, io, random, sync};
    io::error::add_to_linker::<GuestState, HasResourceTable>(linker, |state| &mut state.table)?;
    sync::io::poll::add_to_linker::<GuestState, HasResourceTable>(linker, |state| &mut state.table)?;
    sync::io::streams::add_to_linker::<GuestState, HasResourceTable>(linker, |state| &mut state.table)?;
    cli::environment::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::exit::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::stdin::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::stdout::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::stderr::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::terminal_input::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::terminal_output::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::terminal_stdin::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::terminal_stdout::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::terminal_stderr::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    random::insecure_seed::add_to_linker::<GuestState, WasiRandom>(linker, |state| state.wasi.random())?;
    Ok(())
}

/// Links `strata:policy/host`, which every world imports. The built-ins do
/// not call it, so their components do not import it, and an unused
/// definition is fine.
pub(super) fn link_host_interface(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    wit_host::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |state| state)
}

/// `HasData` for the `wasi:io` interfaces, which only need the resource table.
struct HasResourceTable;

impl wasmtime::component::HasData for HasResourceTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// The host state of one Store (one call).
pub(super) struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: GuestLimiter,
    policy: String,
    /// The component's sha256 prefix, tagging what it logs.
    version: String,
    log_level: GuestLogLevel,
    log_messages: u32,
}

/// Who a call's guest state serves: the policy, the component version and
/// the policy's log level.
pub(super) struct GuestIdentity<'a> {
    pub(super) policy: &'a str,
    pub(super) version: &'a str,
    pub(super) log_level: GuestLogLevel,
}

impl GuestState {
    /// The state of one call: stdout and stderr go to their captures, the
    /// insecure seed is a constant.
    pub(super) fn new(
        identity: GuestIdentity<'_>,
        limiter: GuestLimiter,
        stdout: &CapturedOutput,
        stderr: &CapturedOutput,
    ) -> GuestState {
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).insecure_random_seed(0).build();
        GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            policy: identity.policy.to_string(),
            version: identity.version.to_string(),
            log_level: identity.log_level,
            log_messages: 0,
        }
    }

    /// Logs how many `log` calls past [`LOG_MESSAGES_PER_CALL_MAX`] were dropped.
    pub(super) fn report_dropped_logs(&self) {
        let dropped_logs = self.log_messages.saturating_sub(LOG_MESSAGES_PER_CALL_MAX);
        if dropped_logs > 0 {
            tracing::warn!(policy = self.policy.as_str(), dropped_logs, "policy logged too much; messages dropped");
        }
    }

    fn cli_view(&mut self) -> wasmtime_wasi::cli::WasiCliCtxView<'_> {
        wasmtime_wasi::cli::WasiCliCtxView { ctx: self.wasi.cli(), table: &mut self.table }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wit_host::Host for GuestState {
    fn log(&mut self, level: wit_host::LogLevel, message: String) {
        self.log_messages = self.log_messages.saturating_add(1);
        if self.log_messages > LOG_MESSAGES_PER_CALL_MAX {
            return;
        }
        let guest_level = match level {
            wit_host::LogLevel::Debug => GuestLogLevel::Debug,
            wit_host::LogLevel::Info => GuestLogLevel::Info,
            wit_host::LogLevel::Warn => GuestLogLevel::Warn,
            wit_host::LogLevel::Error => GuestLogLevel::Error,
        };
        if guest_level < self.log_level {
            return;
        }
        let message = truncate_at_char_boundary(&message, LOG_MESSAGE_BYTES_MAX);
        let (policy, version) = (self.policy.as_str(), self.version.as_str());
        match guest_level {
            GuestLogLevel::Debug => {
                tracing::info!(target: "strata::policy::guest", policy, version, guest_level = "debug", "{message}")
            }
            GuestLogLevel::Info => tracing::info!(target: "strata::policy::guest", policy, version, "{message}"),
            GuestLogLevel::Warn => tracing::warn!(target: "strata::policy::guest", policy, version, "{message}"),
            GuestLogLevel::Error => tracing::error!(target: "strata::policy::guest", policy, version, "{message}"),
        }
    }
}

impl wit::Host for GuestState {}

/// Guest stdout and stderr of one call: kept up to a cap, later bytes are
/// counted and dropped (never an error for the guest, which would make a
/// chatty `println!` panic).
#[derive(Clone)]
pub(super) struct CapturedOutput {
    inner: Arc<Mutex<CapturedBytes>>,
}

struct CapturedBytes {
    kept: Vec<u8>,
    dropped: usize,
    bytes_max: usize,
}

impl CapturedOutput {
    pub(super) fn new(bytes_max: usize) -> CapturedOutput {
        CapturedOutput { inner: Arc::new(Mutex::new(CapturedBytes { kept: Vec::new(), dropped: 0, bytes_max })) }
    }

    fn append(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock_or_recover();
        let room = inner.bytes_max.saturating_sub(inner.kept.len());
        let kept = bytes.len().min(room);
        inner.kept.extend_from_slice(&bytes[..kept]);
        inner.dropped += bytes.len() - kept;
    }

    pub(super) fn forward_to_log(&self, policy: &str, version: &str) {
        let inner = self.inner.lock_or_recover();
        for line in String::from_utf8_lossy(&inner.kept).lines().filter(|line| !line.trim().is_empty()) {
            tracing::info!(target: "strata::policy::guest", policy, version, "{line}");
        }
        if inner.dropped > 0 {
            tracing::warn!(
                target: "strata::policy::guest",
                policy,
                version,
                dropped_bytes = inner.dropped,
                "policy printed more than {CAPTURED_OUTPUT_BYTES_MAX} bytes; the rest was dropped"
            );
        }
    }
}

impl CapturedOutput {
    /// What the guest wrote, as one line for an error: from a Rust panic's
    /// `panicked at` on (else all of it), lines joined with spaces, the
    /// `RUST_BACKTRACE` note dropped, control characters removed, at most
    /// [`GUEST_MESSAGE_BYTES_MAX`] bytes. `None` when it wrote nothing.
    pub(super) fn guest_message(&self) -> Option<String> {
        let inner = self.inner.lock_or_recover();
        let text = String::from_utf8_lossy(&inner.kept);
        let text = text.find("panicked at").map_or(&*text, |at| &text[at..]);
        let joined = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE"))
            .collect::<Vec<_>>()
            .join(" ");
        let clean: String = joined.chars().filter(|c| !c.is_control()).collect();
        let kept = truncate_at_char_boundary(&clean, GUEST_MESSAGE_BYTES_MAX);
        match kept.len() {
            0 => None,
            len if len < clean.len() => Some(format!("{kept}…")),
            _ => Some(clean),
        }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(bytes);
        std::task::Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_output_is_capped_without_failing_the_guest() {
        let captured = CapturedOutput::new(10);
        let mut stream = captured.clone();
        stream.write(bytes::Bytes::from_static(b"hello ")).unwrap();
        stream.write(bytes::Bytes::from_static(b"world, and more")).unwrap();
        assert!(stream.check_write().unwrap() > 0, "a full buffer never blocks or closes the stream");
        let inner = captured.inner.lock().unwrap();
        assert_eq!(inner.kept, b"hello worl");
        assert_eq!(inner.dropped, 11);
    }

    #[test]
    fn a_panic_message_becomes_one_clean_bounded_line() {
        let captured = CapturedOutput::new(CAPTURED_OUTPUT_BYTES_MAX);
        captured.append(b"starting\nthread '<unnamed>' panicked at src/lib.rs:12:5:\nboom: \x1b[31mbad\x07 config\n");
        captured.append(b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n");
        assert_eq!(captured.guest_message().unwrap(), "panicked at src/lib.rs:12:5: boom: [31mbad config");
        assert_eq!(CapturedOutput::new(100).guest_message(), None);
        let chatty = CapturedOutput::new(CAPTURED_OUTPUT_BYTES_MAX);
        chatty.append("é".repeat(GUEST_MESSAGE_BYTES_MAX).as_bytes());
        let message = chatty.guest_message().unwrap();
        assert!(message.len() <= GUEST_MESSAGE_BYTES_MAX + '…'.len_utf8() && message.ends_with('…'), "{message}");
    }
}
