//! The on-disk cache of NVRTC's cubins, so a device's kernels are compiled once per source,
//! architecture and NVRTC version, not once per process. Entries live in
//! `$ENLIGHTEN_CACHE/kernels`, else `$XDG_CACHE_HOME/enlighten/kernels`, else
//! `~/.cache/enlighten/kernels`, named `<source hash>-sm_XY-nvrtc<major>.<minor>.cubin`; each is
//! written to a temporary file in the same folder and renamed into place, so a reader never sees
//! half an entry, and processes compiling at once each write a whole one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::nvrtc::Arch;

/// The folder of the cache's entries, or None when no base folder is known.
pub(crate) fn folder() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("ENLIGHTEN_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|x| x.join("enlighten")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/enlighten")))
        .map(|base| base.join("kernels"))
}

/// What an entry is keyed by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub source_hash: u64,
    pub arch: Arch,
    pub nvrtc: (i32, i32),
}

impl Key {
    fn file_name(self) -> String {
        let (major, minor) = self.nvrtc;
        format!("{:016x}-{}-nvrtc{major}.{minor}.cubin", self.source_hash, self.arch)
    }

    /// Where this entry is (or would be) stored.
    pub fn path(self) -> Option<PathBuf> {
        folder().map(|f| f.join(self.file_name()))
    }
}

/// The entry's bytes when it exists and is readable.
pub(crate) fn read(key: Key) -> Option<(PathBuf, Vec<u8>)> {
    let path = key.path()?;
    let bytes = fs::read(&path).ok()?;
    Some((path, bytes))
}

/// Stores `bytes` under `key` atomically (temporary file, then rename); returns its path.
pub(crate) fn write(key: Key, bytes: &[u8]) -> Result<PathBuf, String> {
    let path = key
        .path()
        .ok_or("no cache folder: none of ENLIGHTEN_CACHE, XDG_CACHE_HOME, HOME is set")?;
    write_atomically(&path, bytes)?;
    Ok(path)
}

/// `bytes` at `path`, through a temporary file beside it that is renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no folder", path.display()))?;
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = path.file_name().map_or("entry".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_replaced_whole_and_leave_no_temporary_files() {
        let dir = std::env::temp_dir().join(format!("enlighten-cache-test-{}", std::process::id()));
        let path = dir.join("kernels/0123-sm_90-nvrtc13.0.cubin");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_names_source_architecture_and_nvrtc() {
        let key = Key {
            source_hash: 0xabc,
            arch: Arch::new(9, 0),
            nvrtc: (13, 0),
        };
        assert_eq!(key.file_name(), "0000000000000abc-sm_90-nvrtc13.0.cubin");
    }
}
