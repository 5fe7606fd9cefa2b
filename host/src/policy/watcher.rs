//! Hot reload from file changes: watches the policy directory (a directory,
//! not files, so that editors' rename-saves are seen) and the directories
//! of plugin files, debounces bursts of events and reloads on one thread.
//!
//! One thread, one reload at a time: a storm of writes coalesces into a few
//! reloads, and the last one reads the final content.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};

use notify::{EventKind, RecursiveMode, Watcher as _};

use super::PolicyRuntime;

/// A watcher failure.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The OS watcher could not be created or could not watch a directory.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The directory.
        path: String,
        /// Why.
        source: notify::Error,
    },
    /// The thread could not start.
    #[error("cannot start the policy watcher thread: {0}")]
    Thread(std::io::Error),
}

enum Message {
    Event(notify::Result<notify::Event>),
    Stop,
}

/// Watches until dropped; dropping stops and joins the thread.
#[derive(Debug)]
pub struct PolicyWatcher {
    sender: mpsc::Sender<Message>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        let _ = self.sender.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl PolicyWatcher {
    /// Starts watching the runtime's policy directory (if it has one) and
    /// the directories of its plugin files.
    pub fn start(runtime: Arc<PolicyRuntime>) -> Result<PolicyWatcher, WatchError> {
        let (sender, receiver) = mpsc::channel();
        let events = sender.clone();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = events.send(Message::Event(event));
        })
        .map_err(|source| WatchError::Watch { path: "(watcher)".into(), source })?;
        let mut watched = BTreeSet::new();
        update_watches(&runtime, &mut watcher, &mut watched);
        let thread = std::thread::Builder::new()
            .name("strata-policy-watch".into())
            .spawn(move || run(runtime, watcher, watched, receiver))
            .map_err(WatchError::Thread)?;
        Ok(PolicyWatcher { sender, thread: Some(thread) })
    }
}

fn run(
    runtime: Arc<PolicyRuntime>,
    mut watcher: notify::RecommendedWatcher,
    mut watched: BTreeSet<PathBuf>,
    receiver: mpsc::Receiver<Message>,
) {
    let debounce = runtime.settings().debounce;
    loop {
        // Wait for a relevant event.
        match receiver.recv() {
            Ok(Message::Event(event)) if is_relevant(&runtime, &event) => {}
            Ok(Message::Event(_)) => continue,
            Ok(Message::Stop) | Err(_) => return,
        }
        // Then for `debounce` of quiet.
        loop {
            match receiver.recv_timeout(debounce) {
                Ok(Message::Event(_)) => continue,
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        let report = runtime.reload();
        tracing::info!(
            activated = ?report.activated,
            failed = report.failed.len(),
            removed = ?report.removed,
            duration_ms = report.duration_ms,
            "policies reloaded after a file change"
        );
        update_watches(&runtime, &mut watcher, &mut watched);
    }
}

fn is_relevant(runtime: &PolicyRuntime, event: &notify::Result<notify::Event>) -> bool {
    let event = match event {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "policy watcher error; reloading to be safe");
            return true;
        }
    };
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    let plugins = runtime.plugin_files();
    event.paths.iter().any(|path| {
        path.extension().is_some_and(|e| e == "toml" || e == "wasm") || plugins.iter().any(|plugin| plugin == path)
    })
}

/// Watches the policy directory and every directory holding a plugin file.
fn update_watches(runtime: &PolicyRuntime, watcher: &mut notify::RecommendedWatcher, watched: &mut BTreeSet<PathBuf>) {
    let mut wanted: BTreeSet<PathBuf> = BTreeSet::new();
    if let Some(directory) = &runtime.settings().directory {
        wanted.insert(directory.clone());
    }
    for plugin in runtime.plugin_files() {
        if let Some(parent) = plugin.parent() {
            wanted.insert(parent.to_path_buf());
        }
    }
    for stale in watched.difference(&wanted).cloned().collect::<Vec<_>>() {
        let _ = watcher.unwatch(&stale);
        watched.remove(&stale);
    }
    for directory in wanted {
        if watched.contains(&directory) || !directory.is_dir() {
            continue;
        }
        match watcher.watch(Path::new(&directory), RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(directory);
            }
            Err(error) => tracing::warn!(directory = %directory.display(), %error, "cannot watch for policy changes"),
        }
    }
}
