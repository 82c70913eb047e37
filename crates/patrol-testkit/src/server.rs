//! `patrol-server` as a child process on a loopback port: over a fresh data directory with its
//! sites and a first administrator, again over the same directory after a crash, or over a
//! PostgreSQL database that several servers share.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};

use crate::bins::{bins, run_ok};

/// A running `patrol-server` on 127.0.0.1 with its own data directory; killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub url: String,
    /// The side port serving `/metrics`, whose own traffic the server does not count.
    pub metrics_url: Option<String>,
    pub data_dir: PathBuf,
    /// The token of the first administrator (over all sites), made with
    /// `patrol-server admin create` before the server started.
    pub admin_token: String,
    /// The certificate `patrol` commands made by [`Server::control`] trust for HTTPS, when the
    /// server serves it (`serve --tls-cert`).
    pub ca_cert: Option<PathBuf>,
}

impl Server {
    /// Creates `sites` and a first administrator in a fresh store under `data_dir`, then starts
    /// the server on a free port.
    pub fn start(data_dir: &Path, sites: &[&str]) -> Result<Server> {
        Self::start_with(data_dir, sites, false)
    }

    /// As [`Server::start`], with a metrics side port when `metrics` is set.
    pub fn start_with(data_dir: &Path, sites: &[&str], metrics: bool) -> Result<Server> {
        Self::start_with_args(data_dir, sites, metrics, &[])
    }

    /// As [`Server::start_with`], passing `args` to `serve` as well.
    pub fn start_with_args(
        data_dir: &Path,
        sites: &[&str],
        metrics: bool,
        args: &[&str],
    ) -> Result<Server> {
        let admin_token = Self::prepare_dir(data_dir, sites)?;
        Self::serve(data_dir, metrics, args, admin_token)
    }

    /// As [`Server::start_with_args`], with the server's log (stderr, `warn` and above) written
    /// to `log` instead of the test's own stderr, for tests that check what it logs.
    pub fn start_logging_to(
        data_dir: &Path,
        sites: &[&str],
        args: &[&str],
        log: &Path,
    ) -> Result<Server> {
        let admin_token = Self::prepare_dir(data_dir, sites)?;
        let mut cmd = serve_command(data_dir)?;
        cmd.stderr(std::fs::File::create(log).context("creating the server's log file")?);
        Self::spawn(cmd, data_dir, false, args, admin_token)
    }

    /// Creates `sites` and a first administrator in a fresh store under `data_dir`; returns
    /// the administrator's token.
    fn prepare_dir(data_dir: &Path, sites: &[&str]) -> Result<String> {
        let bins = bins()?;
        for site in sites {
            run_ok(
                Command::new(&bins.server)
                    .args(["site", "create", site, "--data-dir"])
                    .arg(data_dir),
            )?;
        }
        let admin_token = run_ok(
            Command::new(&bins.server)
                .args(["admin", "create", "e2e-admin", "--data-dir"])
                .arg(data_dir),
        )?
        .trim()
        .to_owned();
        Ok(admin_token)
    }

    /// Starts the server again on an existing data directory, creating nothing (a restart
    /// after a crash); `admin_token` is the administrator's from the first start.
    pub fn restart(data_dir: &Path, admin_token: &str) -> Result<Server> {
        Self::serve(data_dir, false, &[], admin_token.to_owned())
    }

    /// As [`Server::restart`], passing `args` to `serve` as well.
    pub fn restart_with_args(data_dir: &Path, admin_token: &str, args: &[&str]) -> Result<Server> {
        Self::serve(data_dir, false, args, admin_token.to_owned())
    }

    fn serve(data_dir: &Path, metrics: bool, args: &[&str], admin_token: String) -> Result<Server> {
        let cmd = serve_command(data_dir)?;
        Self::spawn(cmd, data_dir, metrics, args, admin_token)
    }

    /// Creates `sites` and a first administrator in the PostgreSQL database `database_url`
    /// (see [`crate::ScratchDatabase`]); returns the administrator's token.
    pub fn prepare_database(database_url: &str, sites: &[&str]) -> Result<String> {
        let bins = bins()?;
        for site in sites {
            run_ok(
                Command::new(&bins.server)
                    .args(["site", "create", site])
                    // The environment rather than an argument: a URL may hold a password.
                    .env("PATROL_DATABASE_URL", database_url),
            )?;
        }
        Ok(run_ok(
            Command::new(&bins.server)
                .args(["admin", "create", "e2e-admin"])
                .env("PATROL_DATABASE_URL", database_url),
        )?
        .trim()
        .to_owned())
    }

    /// Starts a server on a free port over the PostgreSQL database `database_url` (prepared by
    /// [`Server::prepare_database`], whose administrator token is `admin_token`); other servers
    /// may share it. `data_dir` is unused by the server but is its working directory's place.
    pub fn start_on_database(
        database_url: &str,
        admin_token: &str,
        data_dir: &Path,
    ) -> Result<Server> {
        let mut cmd = serve_command(data_dir)?;
        cmd.env("PATROL_DATABASE_URL", database_url);
        Self::spawn(cmd, data_dir, false, &[], admin_token.to_owned())
    }

    /// Runs `cmd` (a `serve` command, to which `args` are added) and waits until it prints the
    /// addresses it serves on.
    fn spawn(
        mut cmd: Command,
        data_dir: &Path,
        metrics: bool,
        args: &[&str],
        admin_token: String,
    ) -> Result<Server> {
        if metrics {
            cmd.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        cmd.args(args);
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting patrol-server")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut url = String::new();
        let mut metrics_url = None;
        while addr.is_none() || (metrics && metrics_url.is_none()) {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("patrol-server exited ({status}) before it was listening");
            };
            let line = line?;
            if let Some(rest) = line.split("listening on ").nth(1) {
                let rest = rest.trim();
                let bound = rest
                    .strip_prefix("http://")
                    .or_else(|| rest.strip_prefix("https://"))
                    .ok_or_else(|| anyhow!("no scheme in {line:?}"))?;
                addr = Some(bound.parse::<SocketAddr>()?);
                url = rest.to_owned();
            } else if let Some(rest) = line.split("metrics on http://").nth(1) {
                metrics_url = Some(format!("http://{}", rest.trim()));
            }
        }
        let addr = addr.ok_or_else(|| anyhow!("no listening address"))?;
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            addr,
            url,
            metrics_url,
            data_dir: data_dir.to_path_buf(),
            admin_token,
            ca_cert: None,
        })
    }

    /// The command `patrol control --server <url> --token <token> <args>`, not yet run.
    pub fn control(&self, token: &str, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(&bins()?.patrol);
        cmd.args(["control", "--server", &self.url, "--token", token]);
        if let Some(ca) = &self.ca_cert {
            cmd.arg("--ca-cert").arg(ca);
        }
        cmd.args(args);
        Ok(cmd)
    }

    /// A one-time code enrolling a phone on `site`, issued by the administrator through the
    /// `patrol` command.
    pub fn enrollment_code(&self, site: &str) -> Result<String> {
        Ok(
            run_ok(&mut self.control(&self.admin_token, &["enrollment-code", "--site", site])?)?
                .trim()
                .to_owned(),
        )
    }

    /// The server's SQLite database.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("patrol.db")
    }

    /// SIGKILLs the server, as the kernel's OOM killer or a power cut of the process would:
    /// no shutdown, no flush, in-flight requests cut off wherever they are.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill().context("killing patrol-server")?;
        self.child.wait()?;
        Ok(())
    }

    /// The server's process id, to read its memory and CPU from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `patrol-server serve` on a free loopback port over `data_dir`, not yet run. Under the
/// profiler `PATROL_SERVER_WRAPPER` names (`valgrind --tool=callgrind ...`), for benchmarks that
/// count the server's instructions; it must exec the server in its own process.
fn serve_command(data_dir: &Path) -> Result<Command> {
    let server = &bins()?.server;
    let wrapper = std::env::var("PATROL_SERVER_WRAPPER").unwrap_or_default();
    let mut wrapper = wrapper.split_whitespace();
    let mut cmd = match wrapper.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(wrapper).arg(server);
            cmd
        }
        None => Command::new(server),
    };
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    Ok(cmd)
}
