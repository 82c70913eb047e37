//! Throwaway databases on a PostgreSQL server, for tests and trials: each is created empty with
//! a random name and dropped when its handle is.

use std::str::FromStr;

use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

use crate::store::StoreError;

/// A database created on the server of an administrative connection URL, dropped (with any
/// connections still open to it) on drop.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin: tokio_postgres::Config,
    name: String,
    url: String,
}

/// Quotes a value of a key=value connection string.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

async fn admin_client(
    admin: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = admin.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "scratch database admin connection ended");
        }
    });
    Ok(client)
}

impl ScratchDatabase {
    /// Creates `patrol_test_<random>` on the server `admin_url` connects to (as a user allowed
    /// to create databases).
    pub async fn create(admin_url: &str) -> Result<Self, StoreError> {
        let admin = tokio_postgres::Config::from_str(admin_url)
            .map_err(|e| StoreError::DatabaseUrl(e.to_string()))?;
        let name = format!("patrol_test_{}", uuid::Uuid::new_v4().simple());
        let client = admin_client(&admin).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
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

    /// The database's connection string (key=value form), for `--database-url`.
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
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                admin_client(&admin).await?.batch_execute(&sql).await?;
                Ok::<(), StoreError>(())
            })?;
            Ok::<(), StoreError>(())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, database = %self.name, "cannot drop"),
            Err(_) => tracing::warn!(database = %self.name, "dropping it panicked"),
        }
    }
}
