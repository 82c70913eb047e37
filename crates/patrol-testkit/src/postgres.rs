//! Throwaway databases on a PostgreSQL server: each is created empty with a random name and
//! dropped, with any connection still open to it, when its handle is. Tests that need one skip
//! with a notice when no server can be reached, unless `PATROL_REQUIRE_POSTGRES=1`.

use std::io::Write as _;

use anyhow::{Context, Result, anyhow, bail};
use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls};

/// The administrative URL of the PostgreSQL server tests create their databases on:
/// `PATROL_TEST_POSTGRES_URL`, else the local server as `postgres`.
pub fn postgres_admin_url() -> String {
    std::env::var("PATROL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether a test that needs PostgreSQL must fail, rather than skip, when no server is
/// reachable (`PATROL_REQUIRE_POSTGRES=1`, as CI sets it).
pub fn postgres_required() -> bool {
    std::env::var("PATROL_REQUIRE_POSTGRES").as_deref() == Ok("1")
}

/// A database created on the server of an administrative connection URL, dropped (with any
/// connections still open to it) on drop.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin: Config,
    name: String,
    url: String,
}

/// Quotes a value of a key=value connection string.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

async fn admin_client(admin: &Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = admin.connect(NoTls).await?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; an error then is of no interest.
        let _ = connection.await;
    });
    Ok(client)
}

fn parse_admin_url(admin_url: &str) -> Result<Config> {
    admin_url
        .parse()
        .context("the administrative PostgreSQL URL (PATROL_TEST_POSTGRES_URL)")
}

impl ScratchDatabase {
    /// A fresh database on the server [`postgres_admin_url`] names, or `None` (with a notice on
    /// stderr) when that server cannot be connected to, unless [`postgres_required`]: then an
    /// error. Any other failure is an error.
    pub async fn create() -> Result<Option<ScratchDatabase>> {
        let admin = parse_admin_url(&postgres_admin_url())?;
        let client = match admin_client(&admin).await {
            Ok(client) => client,
            Err(e) if postgres_required() => {
                bail!("PostgreSQL is required (PATROL_REQUIRE_POSTGRES=1) but unreachable: {e:#}")
            }
            Err(e) => {
                // Straight to stderr, past the test harness's capture: a skip must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "NOTICE: skipping a PostgreSQL test, no server: {e:#} \
                     (PATROL_REQUIRE_POSTGRES=1 makes this a failure)"
                );
                return Ok(None);
            }
        };
        Self::create_with(&client, admin).await.map(Some)
    }

    /// Creates `patrol_test_<random>` on the server `admin_url` connects to (as a user allowed
    /// to create databases); failing to connect is an error.
    pub async fn create_on(admin_url: &str) -> Result<ScratchDatabase> {
        let admin = parse_admin_url(admin_url)?;
        let client = admin_client(&admin)
            .await
            .context("connecting to PostgreSQL")?;
        Self::create_with(&client, admin).await
    }

    async fn create_with(client: &tokio_postgres::Client, admin: Config) -> Result<Self> {
        let name = format!("patrol_test_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating the scratch database {name}"))?;
        let mut url = Vec::new();
        if let Some(host) = admin.get_hosts().first() {
            let host = match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            url.push(format!("host={}", quote(&host)));
        }
        if let Some(port) = admin.get_ports().first() {
            url.push(format!("port={port}"));
        }
        if let Some(user) = admin.get_user() {
            url.push(format!("user={}", quote(user)));
        }
        if let Some(password) = admin.get_password() {
            url.push(format!(
                "password={}",
                quote(&String::from_utf8_lossy(password))
            ));
        }
        url.push(format!("dbname={name}"));
        Ok(ScratchDatabase {
            admin,
            name,
            url: url.join(" "),
        })
    }

    /// The database's connection string (key=value form), for `--database-url`,
    /// `PATROL_DATABASE_URL` or a store's `connect`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime, which cannot block on another: a thread of its own.
        let dropped = std::thread::spawn(move || -> Result<()> {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async { Ok(admin_client(&admin).await?.batch_execute(&sql).await?) })
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow!("dropping it panicked")));
        if let Err(e) = dropped {
            // A leftover database costs disk, not correctness: say so and carry on.
            let _ = writeln!(
                std::io::stderr(),
                "WARNING: cannot drop the scratch database {}: {e:#}",
                self.name
            );
        }
    }
}
