//! A checkpoint's manifest: the size and digest of each of its files, written last, so that a
//! checkpoint whose bytes changed after it was written (a flipped bit, a truncated copy, a
//! half-synced disk) is refused on resume instead of training on from a corrupt state.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The manifest's file name inside a checkpoint folder.
pub const MANIFEST: &str = "manifest.json";

/// The files of a checkpoint the manifest covers.
pub const FILES: [&str; 2] = ["state.json", "tensors.ot"];

/// What a checkpoint's files were when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The hash below (a name, so that a later format can change it).
    pub digest: String,
    /// Per file: its length in bytes and its digest in hex.
    pub files: BTreeMap<String, FileDigest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    pub bytes: u64,
    pub digest: String,
}

const DIGEST_NAME: &str = "fnv1a64-words";

impl Manifest {
    /// The manifest of the files in `dir` as they are now.
    pub fn of(dir: &Path) -> std::io::Result<Manifest> {
        let mut files = BTreeMap::new();
        for name in FILES {
            files.insert(name.to_string(), digest_file(&dir.join(name))?);
        }
        Ok(Manifest {
            digest: DIGEST_NAME.into(),
            files,
        })
    }

    /// Whether the files in `dir` are still what this manifest says; the error says which file
    /// differs and how.
    pub fn verify(&self, dir: &Path) -> Result<(), String> {
        if self.digest != DIGEST_NAME {
            return Err(format!("unknown digest `{}` (expected {DIGEST_NAME})", self.digest));
        }
        for name in FILES {
            let expected = self
                .files
                .get(name)
                .ok_or_else(|| format!("the manifest does not cover {name}"))?;
            let found = digest_file(&dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
            if found.bytes != expected.bytes {
                return Err(format!(
                    "{name} has {} bytes, the manifest says {}",
                    found.bytes, expected.bytes
                ));
            }
            if found.digest != expected.digest {
                return Err(format!(
                    "{name} has digest {}, the manifest says {} (its bytes changed after it was written)",
                    found.digest, expected.digest
                ));
            }
        }
        Ok(())
    }

    /// The manifest of the checkpoint folder `dir`, read and parsed.
    pub fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST);
        let bytes =
            fs::read(&path).map_err(|e| format!("no readable {MANIFEST} ({e}): the checkpoint is incomplete"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{MANIFEST} is not a manifest: {e}"))
    }
}

/// A file's length and FNV-1a digest, the bytes taken 8 at a time (little-endian words, the tail
/// zero-padded): a few GB/s, enough to catch any accidental change; not a defence against
/// someone forging a checkpoint.
fn digest_file(path: &Path) -> std::io::Result<FileDigest> {
    let mut file = fs::File::open(path)?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut file, &mut buffer)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        for chunk in buffer[..n].chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash = (hash ^ u64::from_le_bytes(word)).wrapping_mul(0x0100_0000_01b3);
        }
        if n < buffer.len() {
            break;
        }
    }
    hash = (hash ^ total).wrapping_mul(0x0100_0000_01b3);
    Ok(FileDigest {
        bytes: total,
        digest: format!("{hash:016x}"),
    })
}

/// Reads until `buffer` is full or the file ends (so chunks of 8 never straddle two reads).
fn read_full(file: &mut fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::Manifest;

    #[test]
    fn a_changed_byte_fails_verification_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!("enlighten-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state.json"), b"{\"step\": 3}").unwrap();
        std::fs::write(dir.join("tensors.ot"), vec![7u8; 3000]).unwrap();
        let m = Manifest::of(&dir).unwrap();
        assert_eq!(m.verify(&dir), Ok(()));
        let mut bytes = vec![7u8; 3000];
        bytes[1234] ^= 1;
        std::fs::write(dir.join("tensors.ot"), bytes).unwrap();
        let e = m.verify(&dir).unwrap_err();
        assert!(e.contains("tensors.ot") && e.contains("digest"), "{e}");
        std::fs::write(dir.join("tensors.ot"), vec![7u8; 2999]).unwrap();
        assert!(m.verify(&dir).unwrap_err().contains("2999 bytes"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
