//! Real headless browsers driven over WebDriver (through `fantoccini`), for the web console's
//! tests: Chromium through chromedriver and Firefox through geckodriver ([`Kind`]).
//! [`Browser::start`] starts the driver on a free loopback port with a fresh, empty profile;
//! the browser and the driver are ended when it is dropped (or closed).
//!
//! Without a browser or its driver on the machine, the tests in it skip, saying so, unless
//! `PATROL_REQUIRE_BROWSER` is set (CI sets it): then a missing browser, either one, fails them.
//! Every wait polls for what a person would see, up to a generous bound ([`WAIT`]); no sleep
//! stands in for an assertion.

use std::fmt;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use fantoccini::error::NewSessionError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Map, Value, json};

/// How long a test waits for what it expects to see on screen.
pub const WAIT: Duration = Duration::from_secs(30);

/// The desktop size the console is built for; tests also look at it at [`TABLET`].
pub const DESKTOP: (u32, u32) = (1280, 800);
/// A tablet held in landscape.
pub const TABLET: (u32, u32) = (1024, 768);

/// Which browser a test drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Debian's `chromium`, through `chromedriver` (`chromium-driver`).
    Chromium,
    /// Debian's `firefox-esr`, through `geckodriver` (`cargo install geckodriver`).
    Firefox,
}

/// Where a browser and its driver are found, and how to get them.
struct Programs {
    browser_env: &'static str,
    browsers: &'static [&'static str],
    driver_env: &'static str,
    driver: &'static str,
    install: &'static str,
}

impl Kind {
    fn programs(self) -> Programs {
        match self {
            Kind::Chromium => Programs {
                browser_env: "PATROL_CHROMIUM",
                browsers: &["chromium", "chromium-browser", "google-chrome"],
                driver_env: "PATROL_CHROMEDRIVER",
                driver: "chromedriver",
                install: "Debian: apt-get install chromium chromium-driver",
            },
            Kind::Firefox => Programs {
                browser_env: "PATROL_FIREFOX",
                browsers: &["firefox-esr", "firefox"],
                driver_env: "PATROL_GECKODRIVER",
                driver: "geckodriver",
                install: "Debian: apt-get install firefox-esr; geckodriver, which Debian does not \
                          package: cargo install --locked geckodriver (the version .ci/run pins)",
            },
        }
    }

    /// The driver's arguments: its WebDriver port, and anything else it needs of `profile`.
    fn driver_args(self, port: u16, profile: &Path) -> Result<Vec<String>> {
        Ok(match self {
            Kind::Chromium => vec![format!("--port={port}")],
            Kind::Firefox => vec![
                format!("--port={port}"),
                // Firefox's profile is made in the test's own directory, removed with it even
                // if geckodriver is killed. (The Marionette port is the system's pick already.)
                "--profile-root".into(),
                profile.display().to_string(),
                // Its WebDriver BiDi port is a fixed 9222 otherwise, which parallel tests
                // would share.
                "--websocket-port".into(),
                free_port()?.to_string(),
            ],
        })
    }

    /// The session's capabilities: `binary` headless at the desktop size, on `profile`.
    fn capabilities(self, binary: &Path, profile: &Path) -> Map<String, Value> {
        let mut caps = Map::new();
        match self {
            Kind::Chromium => caps.insert(
                "goog:chromeOptions".into(),
                json!({
                    "binary": binary,
                    "args": [
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--disable-quic",
                        "--no-first-run",
                        // The machine has no network beyond loopback: no background fetches
                        // that fail.
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        // The alarm's sound plays without a click first (a test cannot hear it
                        // anyway, but the page's state says whether it plays).
                        "--autoplay-policy=no-user-gesture-required",
                        "--hide-scrollbars",
                        "--force-device-scale-factor=1",
                        format!("--user-data-dir={}", profile.display()),
                        format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                    ],
                }),
            ),
            // geckodriver's own automation preferences already turn off Firefox's updates and
            // background fetches; the window is sized through WebDriver once it is up.
            Kind::Firefox => caps.insert(
                "moz:firefoxOptions".into(),
                json!({
                    "binary": binary,
                    "args": ["-headless"],
                    "prefs": {
                        // As Chromium's autoplay policy above: sound without a click first.
                        "media.autoplay.default": 0,
                        "media.autoplay.block-webaudio": false,
                        "layout.css.devPixelsPerPx": "1.0",
                    },
                }),
            ),
        };
        // Prompts (a confirm() before revoking) are accepted, as the person clicking would.
        caps.insert("unhandledPromptBehavior".into(), json!("accept"));
        caps
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Chromium => "Chromium",
            Kind::Firefox => "Firefox",
        })
    }
}

/// A headless browser session and the driver serving it.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    pub kind: Kind,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// `names`' first on `PATH`.
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

/// The program named by the environment variable `env`, or else the first of `names` on `PATH`.
fn program(env: &str, names: &[&str]) -> Option<PathBuf> {
    std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| find_program(names))
}

/// A loopback port free at the time of asking.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether a missing browser must fail the tests rather than skip them.
pub fn browser_required() -> bool {
    std::env::var_os("PATROL_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty() && v != "0")
}

impl Browser {
    /// A fresh `kind` browser at the desktop size, or `None` (with a notice) when it or its
    /// driver is missing and `PATROL_REQUIRE_BROWSER` is unset.
    pub async fn start(kind: Kind) -> Result<Option<Browser>> {
        let programs = kind.programs();
        let browser = program(programs.browser_env, programs.browsers);
        let driver = program(programs.driver_env, &[programs.driver]);
        let (Some(browser), Some(driver)) = (browser, driver) else {
            let (browsers, driver) = (programs.browsers.join(", "), programs.driver);
            if browser_required() {
                bail!(
                    "PATROL_REQUIRE_BROWSER is set but {kind} ({browsers}) or {driver} is \
                     missing ({})",
                    programs.install
                );
            }
            eprintln!(
                "skipping {kind}: no {browsers} or no {driver} on PATH ({}; \
                 PATROL_REQUIRE_BROWSER=1 makes this a failure)",
                programs.install
            );
            return Ok(None);
        };
        Self::launch(kind, &browser, &driver).await.map(Some)
    }

    async fn launch(kind: Kind, binary: &Path, driver_path: &Path) -> Result<Browser> {
        let port = free_port()?;
        let profile = tempfile::tempdir().context("making the browser's profile directory")?;
        // What the driver and its browser say, kept for the error if no session comes.
        let log_path = profile.path().join("driver.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(driver_path);
        cmd.args(kind.driver_args(port, profile.path())?)
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group, so that dropping the browser ends the driver and every
        // browser process it started, and nothing else.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut driver = cmd
            .spawn()
            .with_context(|| format!("starting {}", driver_path.display()))?;
        let caps = kind.capabilities(binary, profile.path());
        let client = match connect(port, caps).await {
            Ok(client) => client,
            Err(e) => {
                kill_group(driver.id());
                let _ = driver.wait();
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(e.context(format!(
                    "{kind}: {} gave no session; it said:\n{said}",
                    driver_path.display()
                )));
            }
        };
        let browser = Browser {
            client,
            kind,
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

    /// Clicks the first element matching `css`, once it is there. A table row is clicked on its
    /// cell under the row's middle, where a person's click lands: Firefox hit-tests cells, not
    /// rows, so geckodriver refuses to click a row itself ("could not be scrolled into view").
    pub async fn click(&self, css: &str) -> Result<()> {
        let cell = self
            .wait_for(
                &format!("{css} to be there"),
                "const el = document.querySelector(arguments[0]);
                 if (!el) return null;
                 if (el.tagName !== 'TR') return -1;
                 const r = el.getBoundingClientRect(), middle = r.left + r.width / 2;
                 return 1 + [...el.cells].findIndex(c => {
                     const b = c.getBoundingClientRect();
                     return b.left <= middle && middle < b.right;
                 }) || -1;",
                vec![json!(css)],
            )
            .await?;
        let mut target = self.client.find(Locator::Css(css)).await?;
        if let Some(n) = cell.as_u64() {
            target = target
                .find(Locator::Css(&format!(":scope > :nth-child({n})")))
                .await?;
        }
        target
            .click()
            .await
            .with_context(|| format!("clicking {css}"))?;
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
    /// saw); CI leaves it unset and the repository untouched. The pictures are Chromium's: in
    /// another browser this does nothing, so one run does not write two browsers' pictures.
    pub async fn screenshot(&self, name: &str) -> Result<()> {
        if self.kind != Kind::Chromium
            || std::env::var_os("PATROL_WRITE_SCREENSHOTS").is_none_or(|v| v.is_empty() || v == "0")
        {
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

    /// Ends the WebDriver session (the browser quits), then the driver.
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

/// SIGKILLs the process group `pgid` (the driver's, which its browser's processes share).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// A WebDriver session with `caps` on the driver at `port`, once it answers.
async fn connect(port: u16, caps: Map<String, Value>) -> Result<Client> {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await;
        match attempt {
            Ok(client) => return Ok(client),
            // Not listening yet.
            Err(
                NewSessionError::Failed(_) | NewSessionError::FailedC(_) | NewSessionError::Lost(_),
            ) if Instant::now() <= deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Listening, and refusing (a browser that would not start): asking again would
            // start another.
            Err(e) => bail!("no session on {url}: {e}"),
        }
    }
}
