//! Where a run may write: inside one folder, the recipe's own or the one chosen with
//! `--out-dir`.
//!
//! A recipe from someone else should be as safe to run as a data file is to open, so every
//! path a run writes (saved weights, eval reports, search tables, the cache, the lock file)
//! is resolved the way the operating system will resolve it, `..` and symbolic links
//! included, and refused when it lands outside that folder. Inputs may be read from
//! anywhere.
//!
//! Checking happens before anything runs and again just before each file is written, so a
//! link put in place while a long step ran is caught too. What no check of this kind can
//! close is a race with another process that swaps a folder for a link between that last
//! check and the write itself.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::error::CheckError;
use super::value::Errors;
use crate::span::Span;

/// The folder a run writes into.
#[derive(Debug, Clone)]
pub struct OutputRoot {
    /// The folder as given: relative paths of the recipe are joined to it, and messages
    /// show paths under it.
    pub dir: PathBuf,
    /// The folder with every `..` and symbolic link resolved.
    real: PathBuf,
    /// Whether the user chose the folder; only then may a recipe name an absolute path.
    chosen: bool,
}

/// Why an output path was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Escape {
    /// An absolute path, and no `--out-dir` to allow it.
    Absolute,
    /// The path leaves the folder through `..`.
    Parent,
    /// The path leaves the folder through a symbolic link: the written prefix that is one.
    Link(PathBuf),
    /// A symbolic link on the way points nowhere, or a folder on the way cannot be read.
    Unresolved(PathBuf, String),
}

impl Escape {
    /// Why the path is refused, for a message that has already named it and the folder.
    pub fn reason(&self) -> String {
        match self {
            Escape::Absolute => "it is an absolute path".into(),
            Escape::Parent => "`..` leads out of it".into(),
            Escape::Link(link) => {
                format!("`{}` is a symbolic link that leads out of it", link.display())
            }
            Escape::Unresolved(link, why) => {
                format!("`{}` cannot be resolved: {why}", link.display())
            }
        }
    }
}

impl OutputRoot {
    /// The folder `dir`; `chosen` when the user named it rather than it being the
    /// recipe's own.
    pub fn new(dir: &Path, chosen: bool) -> io::Result<OutputRoot> {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let real = real_path(dir).map_err(|(_, e)| e)?.path;
        Ok(OutputRoot { dir: dir.to_path_buf(), real, chosen })
    }

    /// Whether the user chose the folder with `--out-dir`.
    pub fn chosen(&self) -> bool {
        self.chosen
    }

    /// The full path of `path`, a path a recipe writes, if it stays inside the folder.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, Escape> {
        if path.is_absolute() && !self.chosen {
            return Err(Escape::Absolute);
        }
        let full = self.dir.join(path);
        let real = real_path(&full).map_err(|(at, e)| {
            let shown = at.strip_prefix(&self.dir).map(Path::to_path_buf).unwrap_or(at);
            Escape::Unresolved(shown, e.to_string())
        })?;
        if real.path.starts_with(&self.real) {
            return Ok(full);
        }
        Err(match real.link {
            Some(link) => {
                Escape::Link(link.strip_prefix(&self.dir).map(Path::to_path_buf).unwrap_or(link))
            }
            None if path.is_absolute() => Escape::Absolute,
            None => Escape::Parent,
        })
    }
}

impl OutputRoot {
    /// How messages name the folder.
    fn shown(&self) -> String {
        if self.chosen {
            format!("the output folder `{}`", self.dir.display())
        } else {
            "the recipe's folder".into()
        }
    }

    fn help(&self) -> String {
        if self.chosen {
            format!("write a path relative to `{}` that stays inside it", self.dir.display())
        } else {
            "write a path relative to the recipe's folder that stays inside it, or pass \
             `--out-dir DIR` to write under another folder"
                .into()
        }
    }

    /// Check `path`, written at `span`, as a path the recipe writes.
    pub(crate) fn check(&self, path: &Path, span: Span, errors: &mut Errors) -> Option<()> {
        match self.resolve(path) {
            Ok(_) => Some(()),
            Err(escape) => {
                errors.push(CheckError::OutputOutside {
                    span,
                    path: path.display().to_string(),
                    reason: escape.reason(),
                    root: self.shown(),
                    help: self.help(),
                });
                None
            }
        }
    }
}

/// Check the paths every run writes besides the recipe's own outputs: the cache, the stored
/// search trials, the memo of file hashes, the Slurm job scripts and logs, and the lock file
/// `NAME.lock`.
pub(crate) fn check_state(out: &OutputRoot, recipe_stem: &str, errors: &mut Errors) {
    let lock = format!("{recipe_stem}.lock");
    let state = [
        ("the step cache", crate::exec::cache::CACHE_DIR),
        ("the stored search trials", crate::steps::search::TRIAL_STORE),
        ("the memo of file hashes", crate::digest::MEMO_FILE),
        ("the Slurm job scripts and logs", crate::exec::slurm::SLURM_DIR),
        ("the lock file", lock.as_str()),
    ];
    for (what, path) in state {
        if let Err(escape) = out.resolve(Path::new(path)) {
            errors.push(CheckError::StateOutside {
                what: what.into(),
                path: path.into(),
                reason: escape.reason(),
                root: out.shown(),
                help: "replace the link with a folder of its own, or pass `--out-dir DIR` to \
                       write under another folder"
                    .into(),
            });
        }
    }
}

/// A path resolved as the operating system would, and the last symbolic link it went
/// through, as written.
struct Real {
    path: PathBuf,
    link: Option<PathBuf>,
}

/// How many links one path may go through, as Linux allows, so that a loop ends.
const MAX_LINKS: usize = 40;

/// `path` with `.`, `..` and every symbolic link resolved, whether or not it exists: the
/// part that exists is resolved through the file system, the rest by its text (nothing
/// that does not exist can be a link). A link to nothing resolves to where it points, since
/// creating a file through it would create it there. On failure, the written prefix where
/// it failed.
fn real_path(path: &Path) -> Result<Real, (PathBuf, io::Error)> {
    let start = if path.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir()
            .and_then(std::fs::canonicalize)
            .map_err(|e| (PathBuf::from("."), e))?
    };
    let mut real = Real { path: start, link: None };
    let (mut written, mut exists, mut links) = (PathBuf::new(), true, 0);
    for part in path.components() {
        written.push(part);
        let was_link = walk(&mut real.path, part, &mut exists, &mut links)
            .map_err(|e| (written.clone(), e))?;
        if was_link {
            real.link = Some(written.clone());
        }
    }
    Ok(real)
}

/// Apply one component to `at`, a path holding no link, following it if it is a link
/// (which it says). `exists` is whether `at` exists.
fn walk(
    at: &mut PathBuf,
    part: Component,
    exists: &mut bool,
    links: &mut usize,
) -> io::Result<bool> {
    match part {
        Component::Prefix(_) | Component::RootDir => at.push(part),
        Component::CurDir => {}
        // `at` holds no links, so its parent is the folder `..` names.
        Component::ParentDir => {
            at.pop();
        }
        Component::Normal(name) => {
            at.push(name);
            if !*exists {
                return Ok(false);
            }
            match std::fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    *links += 1;
                    if *links > MAX_LINKS {
                        return Err(io::Error::other("too many levels of symbolic links"));
                    }
                    let target = std::fs::read_link(&at)?;
                    at.pop();
                    for inner in target.components() {
                        walk(at, inner, exists, links)?;
                    }
                    return Ok(true);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => *exists = false,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(dir: &Path) -> OutputRoot {
        OutputRoot::new(dir, false).unwrap()
    }

    #[test]
    fn paths_inside_resolve_under_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let r = root(dir.path());
        for ok in ["m.safetensors", "out/m.safetensors", "new/deeper/m.gguf", "out/../m.json"] {
            assert_eq!(r.resolve(Path::new(ok)), Ok(dir.path().join(ok)), "{ok}");
        }
        // A folder that does not exist yet may be stepped out of again by its text.
        assert!(r.resolve(Path::new("a/b/../../m.safetensors")).is_ok());
    }

    #[test]
    fn escapes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("recipes");
        std::fs::create_dir(&inner).unwrap();
        let r = root(&inner);
        assert_eq!(r.resolve(Path::new("/tmp/m.safetensors")), Err(Escape::Absolute));
        assert_eq!(r.resolve(Path::new("../m.safetensors")), Err(Escape::Parent));
        assert_eq!(r.resolve(Path::new("a/../../m.safetensors")), Err(Escape::Parent));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path(), inner.join("up")).unwrap();
            std::os::unix::fs::symlink("missing", inner.join("dangling")).unwrap();
            let link = PathBuf::from("up");
            assert_eq!(r.resolve(Path::new("up/m.safetensors")), Err(Escape::Link(link)));
            // A link that stays inside is fine.
            std::os::unix::fs::symlink(&inner, inner.join("here")).unwrap();
            assert!(r.resolve(Path::new("here/m.safetensors")).is_ok());
            // A link to nothing inside the folder is a folder to be; a loop is an error.
            assert!(r.resolve(Path::new("dangling/m.safetensors")).is_ok());
            std::os::unix::fs::symlink("loop", inner.join("loop")).unwrap();
            let err = r.resolve(Path::new("loop/m.safetensors")).unwrap_err();
            assert!(matches!(err, Escape::Unresolved(p, _) if p == Path::new("loop")));
        }
    }

    #[test]
    fn a_chosen_folder_takes_absolute_paths_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = OutputRoot::new(dir.path(), true).unwrap();
        let inside = dir.path().join("m.safetensors");
        assert_eq!(r.resolve(&inside), Ok(inside.clone()));
        assert_eq!(r.resolve(Path::new("/elsewhere/m.safetensors")), Err(Escape::Absolute));
        // A chosen folder need not exist yet.
        let fresh = OutputRoot::new(&dir.path().join("new/run"), true).unwrap();
        assert!(fresh.resolve(Path::new("m.safetensors")).is_ok());
        assert_eq!(fresh.resolve(Path::new("../../../m.safetensors")), Err(Escape::Parent));
    }
}
