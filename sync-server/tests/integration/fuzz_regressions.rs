//! Replays the `http_body` fuzzer's kept inputs on the stable toolchain, through the very code
//! the fuzz target runs (its harness file is compiled in here): the crashes it found, kept
//! under `fuzz/regressions/http_body/` and named `<expected status>-<what it was>`, and the seed
//! corpus under `fuzz/seeds/http_body/` (written by patrol-core's `write_seed_corpus`).

#[path = "../../../fuzz/harness/corpus.rs"]
mod corpus;
#[path = "../../../fuzz/harness/http.rs"]
mod harness;

use std::path::{Path, PathBuf};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join("http_body")
}

/// The files of `fuzz/<kind>/http_body/`: `(name, bytes)`.
fn files(kind: &str) -> TestResult<Vec<(String, Vec<u8>)>> {
    Ok(corpus::files(&dir(kind))?)
}

#[test]
fn http_body_regressions_replay() -> TestResult {
    let server = harness::Harness::new()?;
    for (name, data) in files("regressions")? {
        let expected: u16 = name.split('-').next().unwrap_or_default().parse()?;
        assert_eq!(server.run(&data), expected, "{name}");
    }
    Ok(())
}

#[test]
fn http_body_seeds_are_answered() -> TestResult {
    let server = harness::Harness::new()?;
    let seeds = files("seeds")?;
    assert!(
        !seeds.is_empty(),
        "no seed corpus under {}",
        dir("seeds").display()
    );
    for (name, data) in seeds {
        // The harness checks every answer (no 5xx, the JSON error body); valid sync requests
        // and the read-only pages must also succeed.
        let status = server.run(&data);
        if (name.starts_with("sync-") && name != "sync-content-type" && name != "sync-raw")
            || [
                "feed",
                "feed-cursor",
                "devices",
                "healthz",
                "metrics",
                "stream",
            ]
            .contains(&name.as_str())
        {
            assert_eq!(status, 200, "seed {name}");
        }
        if name == "unauthenticated-sync" {
            assert_eq!(status, 401, "seed {name}");
        }
        if name == "json-post" {
            assert_eq!(status, 415, "seed {name}: the sync endpoint takes no JSON");
        }
    }
    Ok(())
}
