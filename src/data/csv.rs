//! CSV sources: takes the text of a comma-separated file and returns its
//! samples, one per row, with one column as the class label and every
//! other column as a numeric feature.
//!
//! This is plain comma-separated values: no quoting, so no cell may
//! contain a comma or a quote character. Cells are trimmed of spaces,
//! blank lines are skipped, and `\r\n` line ends are accepted. Row numbers
//! in errors count data rows from 1, so they match the line number minus
//! the header.

use std::path::Path;

use super::{DataError, Raw};

/// Which column holds the labels.
pub(super) enum LabelColumn<'a> {
    /// The file has a header row, and the labels are in the column of this
    /// name.
    Named(&'a str),
    /// The file has no header, and the labels are in the last column.
    LastNoHeader,
}

/// Parse every row; the feature cells only when `features` is set, so a
/// check can count samples and classes without converting every number.
pub(super) fn parse(
    text: &str,
    path: &Path,
    label: LabelColumn<'_>,
    features: bool,
) -> Result<Raw, DataError> {
    let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());

    // Name the columns, from the header or by position.
    let (columns, label_idx, first_row) = match label {
        LabelColumn::Named(label) => {
            let Some((_, header)) = lines.next() else {
                return Err(DataError::NoHeader { path: path.to_owned() });
            };
            let columns: Vec<String> = header.split(',').map(|c| c.trim().to_owned()).collect();
            let Some(label_idx) = columns.iter().position(|c| c == label) else {
                let listed: Vec<String> = columns.iter().map(|c| format!("`{c}`")).collect();
                return Err(DataError::NoLabelColumn {
                    path: path.to_owned(),
                    label: label.to_owned(),
                    columns: listed.join(", "),
                });
            };
            (columns, label_idx, None)
        }
        LabelColumn::LastNoHeader => {
            let first = lines.next();
            let width = first.map_or(0, |(_, line)| line.split(',').count());
            let columns: Vec<String> = (1..=width).map(|k| k.to_string()).collect();
            (columns, width.saturating_sub(1), first)
        }
    };

    // With a header the data rows start on the second line.
    let row_offset = match label {
        LabelColumn::Named(_) => 0,
        LabelColumn::LastNoHeader => 1,
    };
    let width = columns.len();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (line_idx, line) in first_row.into_iter().chain(lines) {
        let row = line_idx + row_offset;
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != width {
            return Err(DataError::Ragged {
                path: path.to_owned(),
                row,
                found: cells.len(),
                expected: width,
            });
        }
        for (col, cell) in cells.iter().enumerate() {
            if col == label_idx {
                ys.push(parse_label(cell).ok_or_else(|| DataError::BadLabel {
                    path: path.to_owned(),
                    place: format!("row {row}, column `{}`", columns[col]),
                    value: (*cell).to_owned(),
                })?);
            } else if features {
                xs.push(parse_feature(path, row, &columns[col], cell)?);
            }
        }
    }

    Ok(Raw { features: vec![width.saturating_sub(1)], xs, ys })
}

/// A class index: a non-negative integer that fits in u32. `3.0` counts,
/// since tools that write every column as floats are common.
fn parse_label(cell: &str) -> Option<u32> {
    if let Ok(y) = cell.parse::<u32>() {
        return Some(y);
    }
    let y = cell.parse::<f64>().ok()?;
    let integral = y.is_finite() && y >= 0.0 && y.fract() == 0.0 && y <= f64::from(u32::MAX);
    integral.then_some(y as u32)
}

fn parse_feature(path: &Path, row: usize, column: &str, cell: &str) -> Result<f32, DataError> {
    let Ok(x) = cell.parse::<f64>() else {
        return Err(DataError::NotANumber {
            path: path.to_owned(),
            row,
            column: column.to_owned(),
            cell: cell.to_owned(),
        });
    };
    // A value beyond the f32 range would become infinite after the cast.
    let x32 = x as f32;
    if !x32.is_finite() {
        return Err(DataError::NotFinite {
            path: path.to_owned(),
            place: format!("row {row}, column `{column}`"),
            value: cell.to_owned(),
        });
    }
    Ok(x32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(text: &str) -> Result<Raw, String> {
        parse(text, Path::new("train.csv"), LabelColumn::Named("target"), true)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_features_and_labels() {
        let raw = named("a, target ,b\r\n1,0,2.5\n\n-3e2,2.0,4\n").unwrap();
        assert_eq!(raw.features, [2]);
        assert_eq!(raw.xs, [1.0, 2.5, -300.0, 4.0]);
        assert_eq!(raw.ys, [0, 2]);
    }

    #[test]
    fn errors_name_the_row_and_column() {
        assert_eq!(
            named("a,target\n1,0\n2\n").unwrap_err(),
            "`train.csv` row 2: 1 cells, the header has 2"
        );
        assert_eq!(
            named("a,age,target\n1,2,0\n3,abc,1\n").unwrap_err(),
            "`train.csv` row 2, column `age`: `abc` is not a number"
        );
        assert_eq!(
            named("a,target\nnan,0\n").unwrap_err(),
            "`train.csv` row 1, column `a`: `nan` is not a finite number"
        );
        assert_eq!(
            named("a,target\n1e39,0\n").unwrap_err(),
            "`train.csv` row 1, column `a`: `1e39` is not a finite number"
        );
        assert_eq!(
            named("a,target\n1,0.5\n").unwrap_err(),
            "`train.csv` row 1, column `target`: label `0.5` is not a non-negative integer"
        );
        assert_eq!(
            named("a,target\n1,-1\n").unwrap_err(),
            "`train.csv` row 1, column `target`: label `-1` is not a non-negative integer"
        );
        assert_eq!(
            named("a,label\n1,0\n").unwrap_err(),
            "`train.csv` has no column `target`; its columns are `a`, `label`"
        );
        assert_eq!(
            named("\n").unwrap_err(),
            "`train.csv` is empty: a header row naming the columns is required"
        );
    }

    #[test]
    fn labels_alone_skip_the_features() {
        // The bad feature cell is not parsed when only labels are wanted.
        let raw =
            parse("x,target\nabc,3\n", Path::new("t.csv"), LabelColumn::Named("target"), false)
                .unwrap();
        assert!(raw.xs.is_empty());
        assert_eq!((raw.features, raw.ys), (vec![1], vec![3]));
    }

    #[test]
    fn headerless_rows_count_from_one() {
        let path = Path::new("builtin");
        let raw = parse("1,2,0\n3,4,1\n", path, LabelColumn::LastNoHeader, true).unwrap();
        assert_eq!((raw.features, raw.ys), (vec![2], vec![0, 1]));
        let err = parse("1,2,0\n3,x,1\n", path, LabelColumn::LastNoHeader, true).unwrap_err();
        assert_eq!(err.to_string(), "`builtin` row 2, column `2`: `x` is not a number");
    }
}
