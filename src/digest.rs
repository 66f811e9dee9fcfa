//! Content hashes of files: takes a path and returns the blake3 hash of its bytes, remembering
//! it by path, size and modification time so that an unchanged file is not read again.
//!
//! Step hashes cover the files a step reads, and cache entries and outputs are checked against
//! the hashes they were written with, so a run hashes every data file, weight file and cached
//! payload it touches. The memo keeps that to a `stat` per file on a rerun: it lives in
//! `.recipe/hashes.json` beside the recipe and is rewritten (atomically) when it changed.
//!
//! A file rewritten within the same clock tick as it was hashed would keep its size and
//! modification time while its bytes changed (git's "racy" case). Hashes of files modified in
//! the last [`RACY_WINDOW`] are therefore used but not remembered.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where the memo lives, relative to the recipe's folder.
pub const MEMO_FILE: &str = ".recipe/hashes.json";

/// Files modified more recently than this are hashed every time.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Memo {
    size: u64,
    /// Nanoseconds since the Unix epoch.
    mtime: u128,
    hash: String,
}

/// The hashes of the files one recipe folder's runs have read and written.
#[derive(Debug, Default)]
pub struct FileHashes {
    /// The memo file; `None` keeps nothing between runs.
    memo_path: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    memo: BTreeMap<PathBuf, Memo>,
    dirty: bool,
}

impl FileHashes {
    /// Hashes remembered in `base_dir`'s memo. A memo that cannot be read or parsed is
    /// ignored: it only saves time.
    pub fn open(base_dir: &Path) -> FileHashes {
        let memo_path = base_dir.join(MEMO_FILE);
        let memo = fs::read(&memo_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        FileHashes { memo_path: Some(memo_path), state: Mutex::new(State { memo, dirty: false }) }
    }

    /// Hashes that are remembered for this value's lifetime only.
    pub fn in_memory() -> FileHashes {
        FileHashes::default()
    }

    /// The hex blake3 hash of the file at `path`.
    pub fn hash(&self, path: &Path) -> io::Result<String> {
        let meta = fs::metadata(path)?;
        let key = fs::canonicalize(path)?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        if let Some(mtime) = mtime {
            let state = self.state.lock().expect("no thread panics holding the memo");
            if let Some(m) = state.memo.get(&key) {
                if m.size == meta.len() && m.mtime == mtime.as_nanos() {
                    return Ok(m.hash.clone());
                }
            }
        }

        let hash = hash_file(path)?;
        let settled = mtime.is_some_and(|m| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .is_ok_and(|now| now.saturating_sub(m) > RACY_WINDOW)
        });
        if let (true, Some(mtime)) = (settled, mtime) {
            let mut state = self.state.lock().expect("no thread panics holding the memo");
            let memo = Memo { size: meta.len(), mtime: mtime.as_nanos(), hash: hash.clone() };
            if state.memo.get(&key) != Some(&memo) {
                state.memo.insert(key, memo);
                state.dirty = true;
            }
        }
        Ok(hash)
    }

    /// Write the memo back when it learned something. Entries of files that no longer exist
    /// are dropped on the way.
    pub fn save(&self) -> io::Result<()> {
        let Some(path) = &self.memo_path else { return Ok(()) };
        let mut state = self.state.lock().expect("no thread panics holding the memo");
        if !state.dirty {
            return Ok(());
        }
        state.memo.retain(|p, _| p.exists());
        let json = serde_json::to_vec(&state.memo).expect("the memo serialises");
        crate::formats::write_atomic(path, &json)?;
        state.dirty = false;
        Ok(())
    }
}

/// The hex blake3 hash of a file's bytes, read in pieces each hashed on several threads.
///
/// Reading rather than mapping the file keeps resident memory at one piece: the pages of a
/// map count towards the process for as long as the map lives, which for a checkpoint of
/// many gigabytes is more memory than the rest of a run needs.
pub fn hash_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    const PIECE: usize = 16 << 20;
    let mut file = fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; PIECE];
    loop {
        let mut filled = 0;
        while filled < PIECE {
            match file.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        hasher.update_rayon(&buf[..filled]);
        if filled < PIECE {
            break;
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// The hex blake3 hash of bytes in memory.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_hashes_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.csv");
        fs::write(&file, b"a,b\n1,2\n").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        fs::File::options().write(true).open(&file).unwrap().set_modified(old).unwrap();

        let hashes = FileHashes::open(dir.path());
        let first = hashes.hash(&file).unwrap();
        assert_eq!(first, hash_bytes(b"a,b\n1,2\n"));
        hashes.save().unwrap();

        // A new process reads the memo; a changed file is hashed again.
        let hashes = FileHashes::open(dir.path());
        assert_eq!(hashes.hash(&file).unwrap(), first);
        fs::write(&file, b"a,b\n1,3\n").unwrap();
        assert_eq!(hashes.hash(&file).unwrap(), hash_bytes(b"a,b\n1,3\n"));
    }

    #[test]
    fn fresh_files_are_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.bin");
        fs::write(&file, b"x").unwrap();
        let hashes = FileHashes::open(dir.path());
        hashes.hash(&file).unwrap();
        assert!(!hashes.state.lock().unwrap().dirty);
    }
}
