//! IDX sources (the MNIST file format): takes an images file and a labels
//! file, each optionally gzipped, and returns the samples.
//!
//! Images are `u8` pixels in an `[n, rows, cols]` array (magic
//! `0x00000803`), labels `u8` in an `[n]` array (magic `0x00000801`), all
//! header numbers big-endian. Each image becomes `rows * cols` features so
//! that a linear model takes it directly; a convolutional model reshapes
//! it with `reshape(1, rows, cols)`. Pixels stay in 0..=255: scaling is the
//! `scale` setting's job. Only these two unsigned-byte layouts are read.
//! A gzipped file is recognised by its first two bytes, not its name.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::{resolve, DataError, Raw};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;

/// Read both files; the pixels only when `features` is set (the labels are
/// always read, since the class count comes from them).
pub(super) fn read(
    base_dir: &Path,
    images: &Path,
    labels: &Path,
    features: bool,
) -> Result<Raw, DataError> {
    let ys = read_labels(base_dir, labels)?;

    // Without the pixels, the header alone gives the count and shape.
    let (header, mut file_len) = read_file(base_dir, images, Some(IMAGES_HEADER as u64))?;
    let (n, rows, cols) = images_header(images, &header)?;
    // Three u32 factors may overflow u64; no file is that long, so such a
    // header is reported as a truncated file.
    let body = u128::from(n) * u128::from(rows) * u128::from(cols);
    let expected = u64::try_from(body + IMAGES_HEADER as u128).unwrap_or(u64::MAX);
    // Reading one byte past what the header promises finds trailing bytes without
    // inflating all of a gzip stream that holds far more than it says.
    let image_bytes = if features {
        let (bytes, len) = read_file(base_dir, images, Some(expected.saturating_add(1)))?;
        file_len = len;
        bytes
    } else {
        header
    };

    // An uncompressed file's size is known without reading it, so a check
    // finds a truncated file too; a gzipped one is measured when loaded.
    let actual = match file_len {
        Some(len) => len,
        None if features => image_bytes.len() as u64,
        None => expected,
    };
    check_len(images, expected, actual)?;
    if u64::from(n) != ys.len() as u64 {
        return Err(DataError::CountMismatch {
            images_path: images.to_owned(),
            images: n.into(),
            labels_path: labels.to_owned(),
            labels: ys.len() as u64,
        });
    }

    let xs = if features {
        image_bytes[IMAGES_HEADER..].iter().map(|&p| f32::from(p)).collect()
    } else {
        Vec::new()
    };
    // The pixel count fits in memory when the file does; a check of a
    // gzipped file has not seen the pixels, so it saturates instead.
    let dim = usize::try_from(u64::from(rows) * u64::from(cols)).unwrap_or(usize::MAX);
    Ok(Raw { features: vec![dim], xs, ys })
}

fn read_labels(base_dir: &Path, labels: &Path) -> Result<Vec<u32>, DataError> {
    let (header, _) = read_file(base_dir, labels, Some(LABELS_HEADER as u64))?;
    check_magic(labels, &header, LABELS_MAGIC, "labels")?;
    if header.len() < LABELS_HEADER {
        return Err(DataError::Truncated {
            path: labels.to_owned(),
            expected: LABELS_HEADER as u64,
            actual: header.len() as u64,
        });
    }
    let n = u64::from(be_u32(&header, 4));
    // As for images: one byte past the promised count, and no more, is read.
    let (bytes, _) = read_file(base_dir, labels, Some(LABELS_HEADER as u64 + n + 1))?;
    check_len(labels, LABELS_HEADER as u64 + n, bytes.len() as u64)?;
    Ok(bytes[LABELS_HEADER..].iter().map(|&y| u32::from(y)).collect())
}

/// The image count, rows and columns of an images header.
fn images_header(path: &Path, bytes: &[u8]) -> Result<(u32, u32, u32), DataError> {
    check_magic(path, bytes, IMAGES_MAGIC, "images")?;
    if bytes.len() < IMAGES_HEADER {
        return Err(DataError::Truncated {
            path: path.to_owned(),
            expected: IMAGES_HEADER as u64,
            actual: bytes.len() as u64,
        });
    }
    Ok((be_u32(bytes, 4), be_u32(bytes, 8), be_u32(bytes, 12)))
}

/// The magic number is checked before the length, so that a wrong kind of
/// file is named as such even when it is short. A file too short to hold
/// the magic number is left to the length check.
fn check_magic(
    path: &Path,
    bytes: &[u8],
    expected: u32,
    what: &'static str,
) -> Result<(), DataError> {
    if bytes.len() < 4 {
        return Ok(());
    }
    let found = be_u32(bytes, 0);
    if found != expected {
        return Err(DataError::IdxMagic { path: path.to_owned(), found, expected, what });
    }
    Ok(())
}

/// A file must hold exactly what its header describes: a longer one is
/// most likely not the file its name suggests.
fn check_len(path: &Path, expected: u64, actual: u64) -> Result<(), DataError> {
    if actual < expected {
        return Err(DataError::Truncated { path: path.to_owned(), expected, actual });
    }
    if actual > expected {
        return Err(DataError::TrailingBytes {
            path: path.to_owned(),
            expected,
            extra: actual - expected,
        });
    }
    Ok(())
}

/// The big-endian u32 at `at`; callers have checked the length.
fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

/// The bytes of a file, decompressed if it is gzipped, at most `limit` of
/// them; and the file's length when it is not compressed (so it measures
/// the content).
fn read_file(
    base_dir: &Path,
    path: &Path,
    limit: Option<u64>,
) -> Result<(Vec<u8>, Option<u64>), DataError> {
    let read_err = |source| DataError::Read { path: path.to_owned(), source };
    let mut file = File::open(resolve(base_dir, path)).map_err(read_err)?;
    let mut magic = Vec::with_capacity(2);
    (&mut file).take(2).read_to_end(&mut magic).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;

    let gzipped = magic == [0x1f, 0x8b];
    let file_len = if gzipped { None } else { Some(file.metadata().map_err(read_err)?.len()) };
    let reader: Box<dyn Read> = if gzipped {
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut bytes = Vec::new();
    let result = match limit {
        Some(limit) => reader.take(limit).read_to_end(&mut bytes),
        None => {
            let mut reader = reader;
            reader.read_to_end(&mut bytes)
        }
    };
    result.map_err(|source: io::Error| {
        if gzipped {
            DataError::Gzip { path: path.to_owned(), source }
        } else {
            read_err(source)
        }
    })?;
    Ok((bytes, file_len))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The bytes of an images file and a labels file holding `n` images of
    /// 2x3 pixels, pixel `k` of image `i` being `10 * i + k`.
    fn files(n: u8) -> (Vec<u8>, Vec<u8>) {
        let mut images = IMAGES_MAGIC.to_be_bytes().to_vec();
        for v in [u32::from(n), 2, 3] {
            images.extend_from_slice(&v.to_be_bytes());
        }
        for i in 0..n {
            images.extend((0..6).map(|k| 10 * i + k));
        }
        let mut labels = LABELS_MAGIC.to_be_bytes().to_vec();
        labels.extend_from_slice(&u32::from(n).to_be_bytes());
        labels.extend((0..n).map(|i| i % 3));
        (images, labels)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn read_pair(images: &[u8], labels: &[u8], features: bool) -> Result<Raw, DataError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("images.idx"), images).unwrap();
        std::fs::write(dir.path().join("labels.idx"), labels).unwrap();
        read(dir.path(), Path::new("images.idx"), Path::new("labels.idx"), features)
    }

    #[test]
    fn round_trip_plain_and_gzipped() {
        let (images, labels) = files(4);
        for (images, labels) in [(images.clone(), labels.clone()), (gzip(&images), gzip(&labels))] {
            let raw = read_pair(&images, &labels, true).unwrap();
            assert_eq!(raw.features, [6]);
            assert_eq!(raw.ys, [0, 1, 2, 0]);
            assert_eq!(raw.xs.len(), 24);
            assert_eq!(raw.xs[6..9], [10.0, 11.0, 12.0]);

            let peeked = read_pair(&images, &labels, false).unwrap();
            assert!(peeked.xs.is_empty());
            assert_eq!((peeked.features, peeked.ys), (raw.features, raw.ys));
        }
    }

    #[test]
    fn wrong_magic_is_reported() {
        let (images, labels) = files(2);
        let err = read_pair(&labels, &labels, true).unwrap_err().to_string();
        assert_eq!(
            err,
            "`images.idx`: magic number 0x00000801 is not 0x00000803, that of IDX images"
        );
        let err = read_pair(&images, &images, true).unwrap_err().to_string();
        assert!(err.contains("`labels.idx`: magic number 0x00000803 is not 0x00000801"), "{err}");
    }

    #[test]
    fn truncated_files_are_reported() {
        let (images, labels) = files(3);
        let cut = &images[..images.len() - 1];
        let err = read_pair(cut, &labels, true).unwrap_err().to_string();
        assert_eq!(err, "`images.idx` is truncated: its header promises 34 bytes, it holds 33");
        // An uncompressed file is measured even when only its header is read.
        assert!(read_pair(cut, &labels, false).is_err());
        // The same cut inside a gzip stream is found when the pixels are read.
        let err = read_pair(&gzip(cut), &labels, true).unwrap_err().to_string();
        assert!(err.contains("is truncated"), "{err}");

        // A gzip stream that stops early is a decompression error.
        let zipped = gzip(&images);
        let err = read_pair(&zipped[..zipped.len() - 12], &labels, true).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
        assert!(err.to_string().starts_with("`images.idx`: the gzip stream is corrupt"));

        let err = read_pair(&images[..10], &labels, true).unwrap_err().to_string();
        assert_eq!(err, "`images.idx` is truncated: its header promises 16 bytes, it holds 10");
    }

    #[test]
    fn counts_must_agree() {
        let (images, _) = files(3);
        let (_, labels) = files(2);
        let err = read_pair(&images, &labels, true).unwrap_err().to_string();
        assert_eq!(err, "`images.idx` holds 3 images but `labels.idx` holds 2 labels");
    }
}
