//! The step cache: takes a step's content hash and returns what that step produced the last
//! time it ran, or stores it.
//!
//! Entries live under `.recipe/cache/HASH/` beside the recipe: a `manifest.json` saying what
//! the entry holds, the payload files it names (weights, a dataset) and copies of the files the
//! step wrote into the recipe's folder, so that a deleted or edited output can be put back
//! without running the step. The manifest's first line is the blake3 hash of the rest, and it
//! lists the hash of every other file, so a damaged entry is found before it is used. Those
//! files are hashed through the remembered hashes of [`crate::digest::FileHashes`], so damage
//! that keeps a file's size and modification time (a failing disk rather than an edit) goes
//! unseen until the memo is removed.
//!
//! An entry is written whole into `tmp-HASH-PID/` and then renamed into place, so a reader
//! sees all of it or none of it; a run that was killed leaves only a temporary folder, which
//! the next run removes. A run holds an exclusive lock on `.recipe/cache/lock` while it works,
//! so two runs in one folder take turns instead of writing over each other.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{self, FileHashes};
use crate::formats::write_synced;

/// Where entries live, relative to the recipe's folder.
pub const CACHE_DIR: &str = ".recipe/cache";

const MANIFEST: &str = "manifest.json";
const TMP_PREFIX: &str = "tmp-";

/// What a cache entry holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub step: String,
    pub kind: String,
    pub hash: String,
    pub program: String,
    /// Payload files in the entry's folder, by name, with their hashes.
    pub payload: BTreeMap<String, String>,
    /// Files the step wrote into the recipe's folder, in the order it wrote them.
    pub outputs: Vec<Output>,
    /// The step's metrics, as the lock file records them.
    pub metrics: BTreeMap<String, f64>,
    /// What the step had to say, one line each.
    pub notes: Vec<String>,
    /// What the artifact needs beyond its payload (an architecture, an eval table), as JSON.
    pub detail: serde_json::Value,
}

/// A file a step wrote, relative to the recipe's folder, and its copy in the entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub path: PathBuf,
    /// The copy's name in the entry's folder.
    pub blob: String,
    pub hash: String,
}

/// What a look-up found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Box<Manifest>),
    Miss,
    /// The entry exists but fails its checks; the reason says how.
    Damaged(String),
}

/// The cache of one recipe folder.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    /// Held for the life of the value; the lock ends when the file closes.
    _lock: Option<File>,
}

impl Cache {
    /// The cache of `base_dir`, locked for this process: waits while another run holds it,
    /// then removes what killed runs left behind.
    pub fn open(base_dir: &Path) -> io::Result<Cache> {
        let root = base_dir.join(CACHE_DIR);
        fs::create_dir_all(&root)?;
        let lock =
            File::options().create(true).truncate(false).write(true).open(root.join("lock"))?;
        if lock.try_lock().is_err() {
            tracing::warn!("another run holds {}; waiting for it", root.display());
            lock.lock()?;
        }
        let cache = Cache { root, _lock: Some(lock) };
        cache.remove_leftovers()?;
        Ok(cache)
    }

    /// The cache of `base_dir` for looking only: no lock, nothing created or removed.
    pub fn read_only(base_dir: &Path) -> Cache {
        Cache { root: base_dir.join(CACHE_DIR), _lock: None }
    }

    fn dir(&self, hash: &str) -> PathBuf {
        self.root.join(hash)
    }

    /// The path of a payload file or output copy of the entry `hash`.
    pub fn file(&self, hash: &str, name: &str) -> PathBuf {
        self.dir(hash).join(name)
    }

    /// The entry for `hash`, checked: the manifest against its own hash, every file it names
    /// against theirs.
    pub fn lookup(&self, hash: &str, hashes: &FileHashes) -> Lookup {
        let dir = self.dir(hash);
        let text = match fs::read_to_string(dir.join(MANIFEST)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Damaged(format!("its manifest cannot be read: {e}")),
        };
        let Some((check, json)) = text.split_once('\n') else {
            return Lookup::Damaged("its manifest is cut short".into());
        };
        if digest::hash_bytes(json.as_bytes()) != check {
            return Lookup::Damaged("its manifest does not match its hash".into());
        }
        let manifest: Manifest = match serde_json::from_str(json) {
            Ok(m) => m,
            Err(e) => return Lookup::Damaged(format!("its manifest does not parse: {e}")),
        };
        if manifest.hash != hash {
            return Lookup::Damaged("its manifest belongs to another step".into());
        }
        let files = manifest
            .payload
            .iter()
            .map(|(name, h)| (name.as_str(), h))
            .chain(manifest.outputs.iter().map(|o| (o.blob.as_str(), &o.hash)));
        for (name, expected) in files {
            match hashes.hash(&dir.join(name)) {
                Ok(actual) if &actual == expected => {}
                Ok(_) => return Lookup::Damaged(format!("`{name}` does not match its hash")),
                Err(e) => return Lookup::Damaged(format!("`{name}` cannot be read: {e}")),
            }
        }
        Lookup::Hit(Box::new(manifest))
    }

    /// Store an entry: `payload` files given as bytes, output copies taken from the recipe's
    /// folder `base_dir`. The manifest's file hashes are filled in here.
    pub fn store(
        &self,
        mut manifest: Manifest,
        payload: &[(String, Vec<u8>)],
        base_dir: &Path,
    ) -> io::Result<Manifest> {
        let tmp = self.root.join(format!("{TMP_PREFIX}{}-{}", manifest.hash, std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let result = (|| {
            manifest.payload.clear();
            for (name, bytes) in payload {
                write_synced(&tmp.join(name), bytes)?;
                manifest.payload.insert(name.clone(), digest::hash_bytes(bytes));
            }
            // Outputs may be larger than memory (a converted checkpoint): copied and hashed
            // as files. A copy, not a link, so that an output edited in place can still be
            // put back.
            for (idx, output) in manifest.outputs.iter_mut().enumerate() {
                output.blob = format!("output-{idx}");
                let copy = tmp.join(&output.blob);
                fs::copy(base_dir.join(&output.path), &copy)?;
                File::open(&copy)?.sync_all()?;
                output.hash = digest::hash_file(&copy)?;
            }
            let json = serde_json::to_string_pretty(&manifest).expect("manifests serialise");
            let text = format!("{}\n{json}", digest::hash_bytes(json.as_bytes()));
            write_synced(&tmp.join(MANIFEST), text.as_bytes())?;

            // A damaged entry of the same hash is replaced.
            let dir = self.dir(&manifest.hash);
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            fs::rename(&tmp, &dir)?;
            if let Ok(root) = File::open(&self.root) {
                let _ = root.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result.map(|()| manifest)
    }

    /// Remove the entry `hash`, if there is one.
    pub fn remove(&self, hash: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.dir(hash)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The hashes of every entry, sorted.
    pub fn entries(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let dir = match fs::read_dir(&self.root) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in dir {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() && !name.starts_with(TMP_PREFIX) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The bytes an entry takes on disk.
    pub fn entry_bytes(&self, hash: &str) -> u64 {
        fs::read_dir(self.dir(hash))
            .map(|dir| dir.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }

    /// Temporary entry folders of runs that were killed. Only a run holding the lock removes
    /// them, since a running writer's folder looks the same.
    fn remove_leftovers(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.root)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                tracing::debug!(path = %entry.path().display(), "removing a killed run's entry");
                fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }
}

/// Remove the temporary files [`crate::formats::write_atomic`] leaves beside `path` when a
/// run is killed between writing and renaming (`.NAME.tmp-PID`), those of live processes
/// excepted (see [`crate::formats::is_leftover`]).
pub fn remove_stale_temporaries(path: &Path) {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(dir) = fs::read_dir(parent) else { return };
    for entry in dir.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) && crate::formats::is_leftover(&file) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(hash: &str) -> Manifest {
        Manifest {
            step: "base".into(),
            kind: "train".into(),
            hash: hash.into(),
            program: "test".into(),
            payload: BTreeMap::new(),
            outputs: vec![],
            metrics: BTreeMap::from([("val_accuracy".to_string(), 0.97)]),
            notes: vec![],
            detail: serde_json::Value::Null,
        }
    }

    #[test]
    fn entries_round_trip_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let hashes = FileHashes::in_memory();
        let cache = Cache::open(dir.path()).unwrap();
        assert!(matches!(cache.lookup("abc", &hashes), Lookup::Miss));

        let stored = cache
            .store(manifest("abc"), &[("weights.bin".into(), vec![1, 2, 3])], dir.path())
            .unwrap();
        match cache.lookup("abc", &hashes) {
            Lookup::Hit(m) => assert_eq!(*m, stored),
            other => panic!("expected a hit, got {other:?}"),
        }

        // One flipped byte in the payload, then one in the manifest.
        fs::write(cache.file("abc", "weights.bin"), [1, 2, 4]).unwrap();
        let hashes = FileHashes::in_memory();
        assert!(matches!(cache.lookup("abc", &hashes), Lookup::Damaged(_)));
        let path = cache.file("abc", MANIFEST);
        let text = fs::read_to_string(&path).unwrap().replace("0.97", "0.37");
        fs::write(&path, text).unwrap();
        match cache.lookup("abc", &hashes) {
            Lookup::Damaged(why) => assert!(why.contains("manifest"), "{why}"),
            other => panic!("expected damage, got {other:?}"),
        }
    }

    #[test]
    fn leftovers_of_killed_runs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(CACHE_DIR);
        fs::create_dir_all(root.join("tmp-abc-1")).unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        assert!(!root.join("tmp-abc-1").exists());
        assert!(cache.entries().unwrap().is_empty());
    }
}
