//! `patrol-server`: parses the command line, sets up logging (to stderr; stdout carries only
//! what scripts read) and runs the command. An error ends it with `error: <what went wrong>` on
//! stderr and a failure status; a reader of its output that went away (`| head -1`) ends it
//! quietly, with success.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use patrol_core::SiteId;
use patrol_server::config::{
    AdminCommand, Cli, Command, DataDirArg, ServeArgs, SiteCommand, UserCommand,
};
use patrol_server::credentials::passwords::NewPassword;
use patrol_server::credentials::{self, Role, User};
use patrol_server::listing::{self, describe_scope};
use patrol_server::store::Site;
use patrol_server::store::sqlite::DB_FILE;
use patrol_server::tls::{CertificateReloader, TlsFiles};
use patrol_server::{
    ApiConfig, AppState, ConnectionLimits, PostgresOptions, PostgresStore, SqliteStore, Store,
    listener, now_ms, serve_metrics, serve_tls_with_limits, serve_with_limits, shutdown_signal,
};
use patrol_term::closed_pipe;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever reads the output stopped (`patrol-server site list | head -1`): nothing is
        // wrong.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // The causes in one line, never a backtrace; if stderr is gone too, there is no one
            // left to tell.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout and flushes it, returning the error (a closed pipe above all)
/// instead of panicking as `print!` does.
fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// `text` and a line break on stderr, for the person who ran the command. Unlike `eprintln!`,
/// it does not panic when stderr is gone: then there is no one to tell.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// `text` and a line break on stdout, as [`out`].
fn outln(text: &str) -> std::io::Result<()> {
    out(&format!("{text}\n"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The server logs what it does; a one-off command only what needs attention, so that its
    // stderr holds what it says to the person who ran it.
    let serving = matches!(cli.command, None | Some(Command::Serve(_)));
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if serving { "info" } else { "warn" }));
    // PATROL_LOG_FORMAT=json: one JSON object per line, for a log collector; text otherwise.
    match std::env::var("PATROL_LOG_FORMAT").as_deref() {
        Ok("json") => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        Ok("text") | Err(_) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        Ok(other) => anyhow::bail!("PATROL_LOG_FORMAT must be text or json, not {other:?}"),
    }

    match cli.into_command() {
        Command::Serve(args) => run_server(*args).await,
        Command::Site(SiteCommand::Create {
            site_id,
            name,
            data,
        }) => {
            let id = SiteId::new(site_id).context("invalid site id")?;
            // Checked before the store is opened: a refused name creates nothing.
            let site = Site::new(id, name, now_ms())
                .map_err(|e| anyhow::anyhow!("invalid site name: {e}"))?;
            let store = open_store(&data, StoreUse::Write, PostgresOptions::default()).await?;
            let site = store.create_site(site).await?;
            outln(&format!("created site {} ({})", site.id, site.name))?;
            Ok(())
        }
        Command::Site(SiteCommand::List { json, data }) => {
            let store = open_store(&data, StoreUse::Read, PostgresOptions::default()).await?;
            let sites = store.list_sites().await?;
            if json {
                outln(&listing::sites_json(sites)?)?;
            } else {
                out(&listing::sites_table(&sites, &chrono::Local))?;
            }
            Ok(())
        }
        Command::Admin(AdminCommand::Create {
            name,
            sites,
            password_stdin,
            ttl,
            data,
        }) => {
            let all_sites = sites.is_empty();
            let password = password_stdin.then(read_password).transpose()?;
            let new = NewUserArgs {
                name,
                role: Role::Admin,
                sites,
                all_sites,
                password,
            };
            create_user(&data, new, ttl.ttl_ms()).await
        }
        Command::User(UserCommand::Create {
            name,
            role,
            sites,
            all_sites,
            password_stdin,
            ttl,
            data,
        }) => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let password = password_stdin.then(read_password).transpose()?;
            let new = NewUserArgs {
                name,
                role,
                sites,
                all_sites,
                password,
            };
            create_user(&data, new, ttl.ttl_ms()).await
        }
        Command::User(UserCommand::Password {
            user,
            password_stdin: _,
            data,
        }) => {
            // Read and checked before the store is opened: a refused password changes nothing.
            let password = read_password()?;
            let store = open_store(&data, StoreUse::Read, PostgresOptions::default()).await?;
            let target = find_user(store.as_ref(), &user).await?;
            if target.revoked_at_ms.is_some() {
                anyhow::bail!(
                    "user {} is revoked, and stays so: create a new user instead",
                    target.name
                );
            }
            let hash = tokio::task::spawn_blocking(move || password.hash()).await??;
            let changed = store
                .set_user_password(target.id.clone(), hash, None)
                .await?
                .context("the user disappeared while its password was set")?;
            outln(&format!(
                "set the password of user {} ({}); its sign-in sessions ended",
                changed.name, changed.id
            ))?;
            Ok(())
        }
        Command::User(UserCommand::List { json, data }) => {
            let store = open_store(&data, StoreUse::Read, PostgresOptions::default()).await?;
            let users = store.users().await?;
            if json {
                outln(&listing::users_json(users)?)?;
            } else {
                out(&listing::users_table(&users, now_ms(), &chrono::Local))?;
            }
            Ok(())
        }
        Command::User(UserCommand::Rotate { user, ttl, data }) => {
            let store = open_store(&data, StoreUse::Read, PostgresOptions::default()).await?;
            let target = find_user(store.as_ref(), &user).await?;
            if target.revoked_at_ms.is_some() {
                anyhow::bail!(
                    "user {} is revoked, and stays so: create a new user instead",
                    target.name
                );
            }
            let (rotation, token) =
                credentials::user_rotation(&target, now_ms(), ttl.ttl_ms(), None)?;
            let rotated = store
                .rotate_user_token(target.id.clone(), rotation)
                .await?
                .context("the user disappeared while its token was replaced")?;
            say(&format!(
                "gave user {} ({}) a new token, valid until {}; the old one no longer works (a \
                 running server ends its live streams within --stream-recheck-secs). The token \
                 follows, shown this once: keep it secret",
                rotated.name,
                rotated.id,
                listing::local_time(rotated.token_expires_at_ms, &chrono::Local)
            ));
            outln(token.expose())?;
            Ok(())
        }
        Command::User(UserCommand::Revoke { user, data }) => {
            let store = open_store(&data, StoreUse::Read, PostgresOptions::default()).await?;
            let target = find_user(store.as_ref(), &user).await?;
            let revoked = store
                .revoke_user(target.id.clone(), now_ms())
                .await?
                .context("the user disappeared while being revoked")?;
            outln(&format!(
                "revoked user {} ({}) at {}",
                revoked.name,
                revoked.id,
                revoked
                    .revoked_at_ms
                    .map_or_else(String::new, |t| listing::local_time(t, &chrono::Local))
            ))?;
            Ok(())
        }
    }
}

/// The one user whose id or name is `user`.
async fn find_user(store: &dyn Store, user: &str) -> anyhow::Result<User> {
    let mut found: Vec<User> = store
        .users()
        .await?
        .into_iter()
        .filter(|u| u.id == user || u.name == user)
        .collect();
    match found.pop() {
        Some(target) if found.is_empty() => Ok(target),
        _ => {
            anyhow::bail!("no user with id or name {user:?}; `patrol-server user list` lists them")
        }
    }
}

/// A password read as one line from standard input (its line break dropped), checked.
fn read_password() -> anyhow::Result<NewPassword> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    Ok(NewPassword::new(line.to_owned())?)
}

/// A user to create, as the command line gives it.
struct NewUserArgs {
    name: String,
    role: Role,
    sites: Vec<String>,
    all_sites: bool,
    password: Option<NewPassword>,
}

/// Creates a user on the data directory and prints its token, alone, on stdout (so that a
/// script can capture it); what was done goes to stderr.
async fn create_user(data: &DataDirArg, new: NewUserArgs, token_ttl_ms: i64) -> anyhow::Result<()> {
    let NewUserArgs {
        name,
        role,
        sites,
        all_sites,
        password,
    } = new;
    let sites = sites
        .into_iter()
        .map(SiteId::new)
        .collect::<Result<Vec<_>, _>>()
        .context("invalid site id")?;
    let scope =
        credentials::user_scope(&name, role, sites, all_sites).map_err(anyhow::Error::msg)?;
    let (mut new, token) = credentials::new_user(name, role, scope, None, now_ms(), token_ttl_ms)?;
    let new_has_password = password.is_some();
    if let Some(password) = password {
        new.password = Some(tokio::task::spawn_blocking(move || password.hash()).await??);
    }
    let store = open_store(data, StoreUse::Write, PostgresOptions::default()).await?;
    let user = store.create_user(new).await?;
    say(&format!(
        "created {} {} ({}){} over {}; its token, valid until {}, follows, shown this once: keep \
         it secret",
        user.role.as_str(),
        user.name,
        user.id,
        if new_has_password {
            " with a password"
        } else {
            ""
        },
        match describe_scope(&user.scope).as_str() {
            "all" => "all sites".to_owned(),
            sites => format!("site(s) {sites}"),
        },
        listing::local_time(user.token_expires_at_ms, &chrono::Local)
    ));
    outln(token.expose())?;
    Ok(())
}

/// What a command does with the embedded store, which decides what happens when the data
/// directory holds none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreUse {
    /// Reads or changes what is there (`site list`, `user list`, `user revoke`): without a
    /// store there is nothing to read, so it fails and creates nothing.
    Read,
    /// Adds to it (`site create`, `admin create`, `user create`): a new store is created, and
    /// the command says so on stderr, naming the path, so that a mistyped `--data-dir` is
    /// noticed.
    Write,
    /// `serve`: as `Write`, said in the log.
    Serve,
}

/// PostgreSQL if a database URL is given, else SQLite in the data directory.
async fn open_store(
    data: &DataDirArg,
    usage: StoreUse,
    options: PostgresOptions,
) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = &data.database_url {
        // The URL may hold a password: it goes in no message.
        let store = PostgresStore::connect(url, options)
            .await
            .context("cannot open the PostgreSQL store (--database-url)")?;
        return Ok(Arc::new(store));
    }
    let db = data.data_dir.join(DB_FILE);
    if !db.exists() {
        let shown = full_path(&db);
        match usage {
            StoreUse::Read => anyhow::bail!(
                "there is no store at {shown}: check --data-dir (or PATROL_DATA_DIR); \
                 `patrol-server site create` or `patrol-server serve` creates one"
            ),
            StoreUse::Write => say(&format!("creating a new, empty store at {shown}")),
            StoreUse::Serve => tracing::warn!(
                db = %shown,
                "no store in the data directory: creating a new, empty one (check --data-dir if \
                 one was expected)"
            ),
        }
    }
    let dir = data.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open_dir(&dir))
        .await?
        .with_context(|| format!("cannot open the store in {}", data.data_dir.display()))?;
    tracing::info!(db = %store.path().display(), "opened the store");
    Ok(Arc::new(store))
}

/// `path` from the root, so that a message says exactly where (as given if the working
/// directory cannot be read).
fn full_path(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

async fn run_server(args: ServeArgs) -> anyhow::Result<()> {
    // Before the store opens its files, so that everything counts against the raised limit.
    let fd_limit = listener::raise_fd_limit();
    let mut limits = ConnectionLimits::from(&args);
    let reserved = listener::RESERVED_FDS + args.database_max_connections as u64;
    let fitted = listener::fit_to_fd_limit(limits.max_connections, fd_limit, reserved);
    if fitted < limits.max_connections {
        tracing::warn!(
            fd_limit,
            asked = limits.max_connections,
            max_connections = fitted,
            "the open-file limit cannot hold --max-connections; lowered (raise `ulimit -n`)"
        );
        limits.max_connections = fitted;
    }
    // Before the store opens: a certificate that does not load stops the start at once.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let reloader = CertificateReloader::new(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .context("cannot use the TLS certificate (--tls-cert, --tls-key)")?;
            let acceptor = reloader.acceptor().context("cannot configure TLS")?;
            Some((reloader, acceptor))
        }
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %args.listen,
            "serving plain HTTP off loopback: tokens and guards' records cross the network \
             readable; use --tls-cert/--tls-key or a TLS-terminating proxy (docs/operations.md)"
        );
    }
    let store = open_store(
        &args.data,
        StoreUse::Serve,
        PostgresOptions {
            max_connections: args.database_max_connections,
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match args.metrics_listen {
        Some(metrics_addr) => Some(
            tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {metrics_addr}"))?,
        ),
        None => None,
    };
    // Signal handlers before the lines below: whoever reads them may stop the server at once.
    let shutdown = shutdown_signal();
    // Tests and scripts that pass port 0 read the real addresses from these lines. Both
    // sockets are bound before either line is printed, so each is ready once it is read.
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut lines = format!("listening on {scheme}://{addr}\n");
    if let Some(l) = &metrics_listener {
        lines.push_str(&format!("metrics on http://{}\n", l.local_addr()?));
    }
    // A reader that went away (`patrol-server | head -1`) does not stop the server.
    if let Err(e) = out(&lines) {
        tracing::warn!(error = %e, "cannot print the listening address on stdout");
    }

    let mut state = AppState::with_config(store, ApiConfig::from(&args));
    if let Some(n) = args.max_concurrent_syncs {
        state = state.with_max_concurrent_syncs(n);
    }
    if let Some(n) = args.max_queued_syncs {
        state = state.with_max_queued_syncs(n);
    }
    state = state
        .with_max_sync_wait(std::time::Duration::from_millis(args.max_sync_wait_ms))
        .with_sync_retry_after(args.sync_retry_after_secs);
    // The side listener runs until the API server has stopped, so the counters stay readable
    // while in-flight requests finish.
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics_listener.map(|l| {
        tokio::spawn(serve_metrics(l, state.metrics.clone(), async move {
            // An error only means the sender is gone, which is a stop too.
            let _ = metrics_stopped.await;
        }))
    });
    let served = match tls {
        Some((reloader, acceptor)) => {
            reloader.reload_on_sighup();
            serve_tls_with_limits(listener, state, limits, acceptor, shutdown).await
        }
        None => serve_with_limits(listener, state, limits, shutdown).await,
    }
    .context("server failed");
    drop(stop_metrics);
    if let Some(task) = metrics_task {
        match tokio::time::timeout(METRICS_STOP_TIMEOUT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "metrics listener failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "metrics listener task failed"),
            Err(_) => tracing::warn!("metrics listener did not stop in time; leaving it"),
        }
    }
    served
}

/// How long the metrics side listener may take to finish its requests after the API stopped.
const METRICS_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
