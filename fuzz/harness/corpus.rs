//! The kept inputs of a fuzz target (`fuzz/<regressions|seeds>/<target>/`), for the stable-toolchain
//! replays in `cargo test`. Not used by the fuzz targets themselves.

use std::path::Path;

/// The files under `dir` (none if it does not exist), by name, with their contents; hidden
/// files and `README.md` left out.
pub fn files(dir: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_file() && !name.starts_with('.') && name != "README.md" {
            out.push((name, std::fs::read(&path)?));
        }
    }
    out.sort();
    Ok(out)
}
