//! Tensor file formats: takes tensors and metadata and returns files, and
//! the reverse.
//!
//! [`safetensors`] reads and writes weight files; [`write_atomic`] is the
//! crash-safe way every output file of a run (weights, reports) is written.
//! [`sparse`] and [`quant`] are the pruned and integer-quantized layouts of
//! tensors inside a safetensors file; [`gguf`] writes and reads the GGML formats.

pub mod checkpoint;
pub mod gguf;
pub mod inspect;
pub mod quant;
pub mod safetensors;
pub mod sparse;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` so that a reader sees either the old file or the
/// whole new one, never a part.
///
/// The bytes go to a temporary file `.NAME.tmp-PID` in the same folder (a
/// rename is only atomic within one file system), which is synced to disk
/// and then renamed over `path`. Missing parent folders are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if path.file_name().is_none() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file"));
    }
    let parent = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent)?;
    let tmp = temporary(path, "");

    let result = write_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        // The temporary file is useless once anything failed; a failure to
        // remove it would hide the error that matters, so it is ignored.
        let _ = fs::remove_file(&tmp);
        return result;
    }

    // Syncing the folder makes the rename itself durable. Not every platform
    // can open a folder as a file, and the data is already safe, so a
    // failure here is not an error.
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The temporary file beside `path` that a write in progress goes to, `.NAME.tmp-PID`, with
/// `suffix` appended; a run removes those that killed runs left.
pub fn temporary(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}{suffix}", std::process::id()))
}

/// Whether `name`, a temporary file of [`temporary`]'s form, is a leftover: its writer is not
/// this process and, where `/proc` lists the processes that run, no longer runs. Without
/// `/proc` every other writer's file counts as a leftover, and the folder's lock must keep
/// live writers out.
pub fn is_leftover(name: &str) -> bool {
    let Some((_, rest)) = name.rsplit_once(".tmp-") else { return false };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Ok(pid) = rest[..digits].parse::<u32>() else { return true };
    if pid == std::process::id() {
        return false;
    }
    let proc = Path::new("/proc");
    !(proc.join("self").exists() && proc.join(pid.to_string()).exists())
}

/// A file written piece by piece that appears at its path whole or not at all: the pieces
/// go to a temporary file that [`AtomicFile::commit`] syncs and renames into place, and that
/// is removed if the writer is dropped before.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let tmp = temporary(path, "");
        let file = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        Ok(AtomicFile { path: path.to_path_buf(), tmp, file: Some(file) })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.as_mut().expect("a file is written until committed").write_all(bytes)
    }

    /// Sync the file and rename it into place.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("a file is committed once");
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent().and_then(|p| File::open(p).ok()) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Copy the file `from` to `to` as [`write_atomic`] writes, without holding it in memory.
pub fn copy_atomic(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let tmp = temporary(to, "");
    let result = fs::copy(from, &tmp)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, to));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Write `bytes` to a new file at `path` and sync it to disk, for a file that only becomes
/// visible by a later rename (of itself or of its folder).
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_temporaries_of_ended_writers_are_leftovers() {
        let name = |pid: u32| format!(".out.safetensors.tmp-{pid}.part");
        assert!(!is_leftover(&name(std::process::id())), "this process's own");
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        ended.wait().unwrap();
        assert!(is_leftover(&name(ended.id())));
        assert!(is_leftover(".out.tmp-"), "no writer named");
        assert!(!is_leftover("out.safetensors"), "not a temporary");
        if Path::new("/proc/self").exists() {
            let mut running = std::process::Command::new("sleep").arg("10").spawn().unwrap();
            assert!(!is_leftover(&name(running.id())), "a live writer's file");
            running.kill().unwrap();
            running.wait().unwrap();
        }
    }

    #[test]
    fn atomic_write_creates_folders_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/report.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");

        // Nothing but the target is left behind in the folder.
        let names: Vec<_> = fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
