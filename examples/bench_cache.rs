//! What the step cache costs: the wall time of rerunning an unchanged `recipes/digits.opt`
//! (the `recipe` binary, start to exit) and of hashing a 1 GiB data file, first in full and
//! then through the remembered hash; beside them, in the same run, the time to read the same
//! file once (the physical limit of hashing it) and to start the binary with `--version`.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_cache
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use recipe::digest::{self, FileHashes};

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the example knows where it is");
    // target/release/examples/bench_cache -> target/release/recipe
    exe.parent().and_then(Path::parent).expect("examples live under the profile").join("recipe")
}

fn timed(mut f: impl FnMut()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

fn main() {
    let bin = binary();
    assert!(bin.exists(), "build the binary first: cargo build --release");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/digits.opt");
    std::fs::copy(&recipe, dir.path().join("digits.opt")).expect("copy the recipe");
    let run = || {
        let out = Command::new(&bin).args(["run", "digits.opt"]).current_dir(dir.path()).output();
        assert!(out.expect("the binary runs").status.success());
    };

    let first = timed(run);
    let reruns: Vec<Duration> = (0..10).map(|_| timed(run)).collect();
    let start: Vec<Duration> =
        (0..10).map(|_| timed(|| drop(Command::new(&bin).arg("--version").output()))).collect();
    println!("recipes/digits.opt, 9 steps");
    println!("  first run                 {:>8.1} ms", first.as_secs_f64() * 1e3);
    println!("  unchanged rerun (median)  {:>8.1} ms", median(reruns).as_secs_f64() * 1e3);
    println!("  `recipe --version`        {:>8.1} ms", median(start).as_secs_f64() * 1e3);

    // A 1 GiB file of varied bytes, old enough for its hash to be remembered.
    let data = dir.path().join("data.bin");
    {
        let mut file = std::fs::File::create(&data).expect("create the data file");
        let mut block = vec![0u8; 1 << 20];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1024 {
            for b in block.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            file.write_all(&block).expect("write the data file");
        }
        let old = std::time::SystemTime::now() - Duration::from_secs(60);
        file.set_modified(old).expect("set the modification time");
    }
    let gib = 1u64 << 30;
    // Reading into one reused buffer: what any hash of the file must at least do.
    let read_through = || {
        let mut file = std::fs::File::open(&data).expect("open");
        let mut buf = vec![0u8; 1 << 20];
        while std::io::Read::read(&mut file, &mut buf).expect("read") > 0 {}
    };
    let read: Vec<Duration> = (0..3).map(|_| timed(read_through)).collect();
    let hash: Vec<Duration> =
        (0..3).map(|_| timed(|| drop(digest::hash_file(&data).expect("hash")))).collect();
    let hashes = FileHashes::open(dir.path());
    hashes.hash(&data).expect("hash");
    let memo: Vec<Duration> =
        (0..10).map(|_| timed(|| drop(hashes.hash(&data).expect("hash")))).collect();
    let rate = |d: Duration| gib as f64 / d.as_secs_f64() / 1e9;
    println!("1 GiB file (in the page cache)");
    let (read, hash) = (median(read), median(hash));
    println!("  read once      {:>9.1} ms  {:>5.2} GB/s", read.as_secs_f64() * 1e3, rate(read));
    println!("  blake3 hash    {:>9.1} ms  {:>5.2} GB/s", hash.as_secs_f64() * 1e3, rate(hash));
    println!("  remembered     {:>9.3} ms", median(memo).as_secs_f64() * 1e3);
}
