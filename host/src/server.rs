//! `strata serve`: binds, opens the store, serves, and shuts down in order.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::flight;
use crate::http::{self, AppState};
use crate::lifecycle::Lifecycle;
use crate::policy::watcher::PolicyWatcher;
use crate::policy::{PolicyRuntime, PolicySettings};
use crate::store::Store;

/// Runs the server until SIGTERM or SIGINT, then stops accepting, lets
/// in-flight requests finish, flushes every buffer and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    // Before anything opens the WAL or the catalog, and before listening:
    // a second server on this directory stops here. Held until `run` returns.
    let _data_dir_lock = crate::data_dir::lock_data_dir(&config.server.data_dir)?;
    let (listener, edge) = listen(&config).await?;
    let state = Arc::new(AppState::new(config.clone()));
    let (shutdown_sender, shutdown) = tokio::sync::watch::channel(false);
    // Awaited in this order at shutdown: the server's in-flight requests
    // first, then the background tasks.
    let mut tasks = vec![tokio::spawn(http::serve(listener, edge, state.clone(), shutdown.clone()))];
    let store = open_store(&config, &state).await?;
    if let Some(address) = config.server.flight_listen {
        tasks.push(serve_flight(address, &state, &store, shutdown.clone()).await?);
    }
    tasks.push(tokio::spawn(store.clone().run_flusher(shutdown.clone())));
    // Policies load after the catalog is open and before /ready turns 200.
    let (policies, watcher) = open_policies(&config, &store, &state).await?;
    let lifecycle = {
        let (store, policies, config) = (store.clone(), policies.clone(), config.clone());
        Arc::new(tokio::task::spawn_blocking(move || Lifecycle::open(store, policies, config)).await??)
    };
    let _ = state.lifecycle.set(lifecycle.clone());
    tasks.push(tokio::spawn(lifecycle.clone().run_sweeper(shutdown.clone())));
    tasks.push(tokio::spawn(lifecycle.clone().run_scheduler(shutdown.clone())));
    tasks.push(tokio::spawn(lifecycle.clone().run_compactor(shutdown.clone())));
    tasks.push(tokio::spawn(lifecycle.clone().run_prober(shutdown.clone())));

    wait_for_signal(&policies).await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = shutdown_sender.send(true);
    for task in tasks {
        let _ = task.await;
    }
    tokio::task::spawn_blocking(move || drop(watcher)).await?;
    store.close().await.map_err(|e| anyhow::anyhow!("final flush failed: {e}"))?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Checks that `server.listen` may be used, binds it and says where.
async fn listen(config: &Arc<Config>) -> anyhow::Result<(TcpListener, http::Edge)> {
    let open_file_limit = raise_open_file_limit();
    let checking = config.clone();
    tokio::task::spawn_blocking(move || check_listen(&checking)).await??;
    let listener = TcpListener::bind(config.server.listen).await?;
    let address = listener.local_addr()?;
    let edge = http::Edge::new(&config.server, address, open_file_limit)?;
    // Tests and scripts read this line to find the port when listening on :0.
    println!("strata listening on {}://{address}", edge.scheme());
    tracing::info!(%address, data_dir = %config.server.data_dir.display(), "listening");
    Ok((listener, edge))
}

/// Opens the store (replaying the WAL), then the query engine and the
/// token cache over it, and hands all three to `state`.
async fn open_store(config: &Arc<Config>, state: &AppState) -> anyhow::Result<Arc<Store>> {
    let opening = config.clone();
    let (store, recovery) = tokio::task::spawn_blocking(move || Store::open(opening)).await??;
    tracing::info!(?recovery, "recovered; ready");
    let store = Arc::new(store);
    let _ = state.recovery.set(recovery);
    let engine = crate::query::QueryEngine::new(
        config.query.clone(),
        store.targets().clone(),
        &config.server.data_dir.join("query-tmp"),
    );
    let engine = Arc::new(engine);
    engine.warm_up();
    let tokens = http::auth::TokenCache::open(store.catalog().clone(), config.auth.required).await?;
    let _ = state.tokens.set(tokens);
    let _ = state.query.set(engine);
    let _ = state.store.set(store.clone());
    Ok(store)
}

/// Binds `address` and serves Arrow Flight SQL there over the same query
/// engine and tokens as HTTP; says where, for tests and scripts when the
/// port is 0.
async fn serve_flight(
    address: std::net::SocketAddr,
    state: &AppState,
    store: &Arc<Store>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("server.flight_listen = {address}: cannot listen: {e}"))?;
    let bound = listener.local_addr()?;
    let engine = state.query.get().expect("opened with the store").clone();
    let tokens = state.tokens.get().expect("opened with the store").clone();
    let authenticate: flight::Authenticate = Arc::new(move |headers| tokens.readable_by(headers));
    let service = flight::Gateway::new(flight::FlightSql::new(store.clone(), engine, authenticate));
    tracing::info!("strata flight listening on grpc://{bound}");
    Ok(tokio::spawn(async move {
        if let Err(error) = flight::serve(listener, service, shutdown).await {
            tracing::error!(%error, "the Flight SQL server stopped");
        }
    }))
}

/// Loads the policy directory, starts watching it and attaches the
/// policies to the store and to `state`.
async fn open_policies(
    config: &Config,
    store: &Arc<Store>,
    state: &AppState,
) -> anyhow::Result<(Arc<PolicyRuntime>, PolicyWatcher)> {
    let settings = PolicySettings {
        directory: config.policies.dir.clone(),
        cache_dir: config.policy_cache_dir(),
        debounce: std::time::Duration::from_millis(config.policies.reload_debounce_ms),
        limits: (&config.policies).into(),
    };
    let catalog = store.catalog().clone();
    let policies = Arc::new(tokio::task::spawn_blocking(move || PolicyRuntime::open(settings, catalog)).await??);
    let watcher = PolicyWatcher::start(policies.clone())?;
    store.attach_policies(policies.clone());
    let _ = state.policies.set(policies.clone());
    tracing::info!(directory = ?config.policies.dir, "policies ready");
    Ok((policies, watcher))
}

/// Raises the open-file limit as far as allowed; returns it (`None`: unknown).
fn raise_open_file_limit() -> Option<u64> {
    match http::raise_open_file_limit() {
        Ok((before, after)) => {
            if after > before {
                tracing::info!(before, after, "raised the open-file limit");
            }
            Some(after)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-file limit");
            None
        }
    }
}

/// Refuses to listen beyond loopback while authentication is off: that is
/// while the catalog holds no token and `auth.required` is unset.
fn check_listen(config: &Config) -> anyhow::Result<()> {
    let exposed = [Some(config.server.listen), config.server.flight_listen]
        .into_iter()
        .flatten()
        .find(|address| !address.ip().is_loopback());
    let Some(listen) = exposed else { return Ok(()) };
    if config.auth.required {
        return Ok(());
    }
    let path = Catalog::path_in(&config.server.data_dir);
    if path.exists() && Catalog::open(&path)?.has_tokens()? {
        return Ok(());
    }
    anyhow::bail!(
        "{listen} (server.listen or server.flight_listen) is not a loopback address, and authentication is off (the catalog in {} holds no \
         token); create one first with `strata token create --name admin --scope admin --data-dir {}`, or listen on \
         127.0.0.1",
        config.server.data_dir.display(),
        config.server.data_dir.display()
    )
}

/// Waits for SIGTERM or SIGINT; reloads the policies on every SIGHUP.
async fn wait_for_signal(policies: &Arc<PolicyRuntime>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = terminate.recv() => return,
            _ = interrupt.recv() => return,
            _ = hangup.recv() => {
                let runtime = policies.clone();
                match tokio::task::spawn_blocking(move || runtime.reload()).await {
                    Ok(report) => tracing::info!(
                        activated = ?report.activated,
                        failed = report.failed.len(),
                        removed = ?report.removed,
                        "policies reloaded on SIGHUP"
                    ),
                    Err(error) => tracing::error!(%error, "policy reload on SIGHUP failed"),
                }
            }
        }
    }
}
