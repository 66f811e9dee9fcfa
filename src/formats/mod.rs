//! Tensor file formats: takes tensors and metadata and returns files, and
//! the reverse.
//!
//! [`safetensors`] reads and writes weight files; [`write_atomic`] is the
//! crash-safe way every output file of a run (weights, reports) is written.
//! [`sparse`] and [`quant`] are the pruned and integer-quantized layouts of
//! tensors inside a safetensors file; [`gguf`] writes and reads the GGML formats.

pub mod gguf;
pub mod inspect;
pub mod quant;
pub mod safetensors;
pub mod sparse;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Write `bytes` to `path` so that a reader sees either the old file or the
/// whole new one, never a part.
///
/// The bytes go to a temporary file `.NAME.tmp-PID` in the same folder (a
/// rename is only atomic within one file system), which is synced to disk
/// and then renamed over `path`. Missing parent folders are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let parent = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent)?;

    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = parent.join(tmp_name);

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
