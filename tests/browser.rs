//! A real headless Chromium driven over WebDriver (chromedriver, through `fantoccini`), for the
//! web console's tests. [`Browser::start`] starts chromedriver on a free loopback port with a
//! fresh, empty profile; the browser and the driver are ended when it is dropped (or closed).
//!
//! Without Chromium on the machine the tests skip, saying so, unless `PATROL_REQUIRE_BROWSER`
//! is set (CI sets it): then a missing browser fails them. Every wait polls for what a person
//! would see, up to a generous bound ([`WAIT`]); no sleep stands in for an assertion.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a test waits for what it expects to see on screen.
pub const WAIT: Duration = Duration::from_secs(30);

/// The desktop size the console is built for; tests also look at it at [`TABLET`].
pub const DESKTOP: (u32, u32) = (1280, 800);
/// A tablet held in landscape.
pub const TABLET: (u32, u32) = (1024, 768);

/// A headless Chromium session and the chromedriver serving it.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// `name` on `PATH`, or the first of `fallbacks` that exists.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Whether a missing browser must fail the tests rather than skip them.
pub fn browser_required() -> bool {
    std::env::var_os("PATROL_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty() && v != "0")
}

impl Browser {
    /// A fresh browser at the desktop size, or `None` (with a notice) when Chromium or
    /// chromedriver is missing and `PATROL_REQUIRE_BROWSER` is unset.
    pub async fn start() -> Result<Option<Browser>> {
        let chromium = std::env::var_os("PATROL_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| find_program(&["chromium", "chromium-browser", "google-chrome"]));
        let driver = std::env::var_os("PATROL_CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| find_program(&["chromedriver"]));
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            if browser_required() {
                bail!(
                    "PATROL_REQUIRE_BROWSER is set but chromium or chromedriver is missing \
                     (Debian: apt-get install chromium chromium-driver)"
                );
            }
            eprintln!(
                "skipping: no chromium and chromedriver on PATH (Debian: apt-get install \
                 chromium chromium-driver; PATROL_REQUIRE_BROWSER=1 makes this a failure)"
            );
            return Ok(None);
        };
        Self::launch(&chromium, &driver).await.map(Some)
    }

    async fn launch(chromium: &Path, driver_path: &Path) -> Result<Browser> {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let mut cmd = Command::new(driver_path);
        cmd.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that dropping the browser ends chromedriver and every
        // Chromium process it started, and nothing else.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().context("starting chromedriver")?;
        let profile = tempfile::tempdir()?;
        let browser = Browser {
            client: connect(port, chromium, profile.path())
                .await
                .inspect_err(|_| kill_group(driver.id()))?,
            driver,
            _profile: profile,
        };
        browser.resize(DESKTOP).await?;
        Ok(browser)
    }

    /// Resizes the browser's viewport's window.
    pub async fn resize(&self, (width, height): (u32, u32)) -> Result<()> {
        self.client.set_window_size(width, height).await?;
        Ok(())
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// Waits until `script` returns something truthy (not null, false, 0 or ""), and returns
    /// it; fails after [`WAIT`] with `what` and the last value.
    pub async fn wait_for(&self, what: &str, script: &str, args: Vec<Value>) -> Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let last = match self.js(script, args.clone()).await {
                Ok(v) => {
                    let truthy = match &v {
                        Value::Null => false,
                        Value::Bool(b) => *b,
                        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                        Value::String(s) => !s.is_empty(),
                        _ => true,
                    };
                    if truthy {
                        return Ok(v);
                    }
                    v
                }
                Err(e) => json!(format!("script error: {e:#}")),
            };
            if Instant::now() > deadline {
                bail!("waited {WAIT:?} for {what}; last saw {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the first element matching `css` contains `text`.
    pub async fn wait_text(&self, css: &str, text: &str) -> Result<String> {
        let v = self
            .wait_for(
                &format!("{text:?} in {css}"),
                "const el = document.querySelector(arguments[0]);
                 return el && el.innerText.includes(arguments[1]) ? el.innerText : null;",
                vec![json!(css), json!(text)],
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The text of the first element matching `css` ("" when there is none).
    pub async fn text(&self, css: &str) -> Result<String> {
        let v = self
            .js(
                "const el = document.querySelector(arguments[0]); return el ? el.innerText : '';",
                vec![json!(css)],
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Clicks the first element matching `css`, once it is there.
    pub async fn click(&self, css: &str) -> Result<()> {
        self.wait_for(
            &format!("{css} to be there"),
            "return !!document.querySelector(arguments[0])",
            vec![json!(css)],
        )
        .await?;
        self.client.find(Locator::Css(css)).await?.click().await?;
        Ok(())
    }

    /// Types `text` into the field matching `css`, replacing what it held.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        self.click(css).await?;
        let field = self.client.find(Locator::Css(css)).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    /// Signs in on the console at `url` as a person would: the form, the name, the password,
    /// the button.
    pub async fn sign_in(&self, url: &str, name: &str, password: &str) -> Result<()> {
        self.goto(&format!("{url}/")).await?;
        self.type_into("#signin-name", name).await?;
        self.type_into("#signin-password", password).await?;
        self.click("#signin-submit").await?;
        Ok(())
    }

    /// A PNG of the window, written to `docs/images/console-<name>.png` when
    /// `PATROL_WRITE_SCREENSHOTS` is set (so the documentation's pictures are what the test
    /// saw); CI leaves it unset and the repository untouched.
    pub async fn screenshot(&self, name: &str) -> Result<()> {
        if std::env::var_os("PATROL_WRITE_SCREENSHOTS").is_none_or(|v| v.is_empty() || v == "0") {
            return Ok(());
        }
        let png = self.client.screenshot().await?;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/images");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("console-{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
        Ok(())
    }

    /// Ends the WebDriver session (Chromium quits), then the driver.
    pub async fn close(self) -> Result<()> {
        let closed = self.client.clone().close().await;
        // Dropping it ends the driver.
        drop(self);
        closed.map_err(|e| anyhow!("closing the browser: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(self.driver.id());
        let _ = self.driver.wait();
    }
}

/// SIGKILLs the process group `pgid` (chromedriver's, which its Chromium shares).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// A WebDriver session on the chromedriver at `port`, once it answers, running `chromium`
/// headless on `profile`.
async fn connect(port: u16, chromium: &Path, profile: &Path) -> Result<Client> {
    let url = format!("http://127.0.0.1:{port}");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                // The machine has no network beyond loopback: no background fetches that fail.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // The alarm's sound plays without a click first (a test cannot hear it anyway,
                // but the page's state says whether it plays).
                "--autoplay-policy=no-user-gesture-required",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            ],
        }),
    );
    // Prompts (a confirm() before revoking) are accepted, as the person clicking would.
    caps.insert("unhandledPromptBehavior".into(), json!("accept"));
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await;
        match attempt {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => {
                bail!("chromedriver on {url} gave no session: {e}")
            }
            // Not listening yet.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
