//! The guest's view of the world: WASI linked with no capabilities, and
//! the host state of one call.
//!
//! Only `wasi:io`, `wasi:cli` (empty environment and arguments, empty
//! stdin, stdout and stderr captured into the log, capped) and
//! `wasi:random/insecure-seed` (a constant, so Rust's `HashMap` works and
//! stays deterministic) are linked, next to the `strata:policy/host`
//! interface (`log`, rate-limited and cut per call). Anything else a
//! component imports is refused before it is instantiated (the allow-list
//! in the sandbox façade).

use std::sync::{Arc, Mutex};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::shared::strata::policy::host as wit_host;
use super::bindings::shared::strata::policy::types as wit;
use super::limits::GuestLimiter;
use crate::sync::Recover as _;
use crate::text::truncate_at_char_boundary;

/// Bytes of guest stdout + stderr kept per call; the rest is dropped (and
/// the drop is logged).
pub(super) const CAPTURED_OUTPUT_BYTES_MAX: usize = 16 * 1024;
/// `log` calls honoured per call; later ones are counted and dropped.
const LOG_MESSAGES_PER_CALL_MAX: u32 = 100;
/// Bytes of one `log` message; longer ones are cut.
const LOG_MESSAGE_BYTES_MAX: usize = 4 * 1024;

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
    log_messages: u32,
}

impl GuestState {
    /// The state of one call of `policy`: stdout and stderr go to
    /// `captured`, the insecure seed is a constant.
    pub(super) fn new(policy: &str, limiter: GuestLimiter, captured: &CapturedOutput) -> GuestState {
        let wasi = WasiCtx::builder().stdout(captured.clone()).stderr(captured.clone()).insecure_random_seed(0).build();
        GuestState { wasi, table: ResourceTable::new(), limiter, policy: policy.to_string(), log_messages: 0 }
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
        let message = truncate_at_char_boundary(&message, LOG_MESSAGE_BYTES_MAX);
        let policy = self.policy.as_str();
        match level {
            wit_host::LogLevel::Debug => tracing::debug!(target: "strata::policy::guest", policy, "{message}"),
            wit_host::LogLevel::Info => tracing::info!(target: "strata::policy::guest", policy, "{message}"),
            wit_host::LogLevel::Warn => tracing::warn!(target: "strata::policy::guest", policy, "{message}"),
            wit_host::LogLevel::Error => tracing::error!(target: "strata::policy::guest", policy, "{message}"),
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

    pub(super) fn forward_to_log(&self, policy: &str) {
        let inner = self.inner.lock_or_recover();
        for line in String::from_utf8_lossy(&inner.kept).lines().filter(|line| !line.trim().is_empty()) {
            tracing::info!(target: "strata::policy::guest", policy, "{line}");
        }
        if inner.dropped > 0 {
            tracing::warn!(
                target: "strata::policy::guest",
                policy,
                dropped_bytes = inner.dropped,
                "policy printed more than {CAPTURED_OUTPUT_BYTES_MAX} bytes; the rest was dropped"
            );
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
}
