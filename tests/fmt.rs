//! `recipe fmt`: recipe text in its one canonical layout, as the library's
//! `syntax::format` and as a command. Formatting keeps every comment, is
//! idempotent and never changes what a recipe means, and the recipes in
//! `recipes/` are kept canonical.

mod common;

use std::path::{Path, PathBuf};

use common::{cli, text};
use recipe::syntax::format;
use recipe::Recipe;

fn package() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.opt` files of a folder of the package, in name order.
fn opt_files(dir: &str) -> Vec<PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(package().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "opt"))
        .collect();
    paths.sort();
    paths
}

fn formatted(text: &str) -> String {
    format(text).unwrap_or_else(|e| panic!("does not parse: {e:?}\n{text}"))
}

/// The AST as JSON without its spans: what a text means before checking.
fn meaning(text: &str) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("span");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let ast = recipe::syntax::parse(text).expect("the text parses");
    let mut json = serde_json::to_value(&ast).expect("an AST is JSON");
    strip(&mut json);
    json
}

/// The checked form as JSON, spans left out, for a text read from `path`
/// (so relative data paths resolve the same).
fn checked(path: &Path, text: &str) -> String {
    let recipe = Recipe::from_bytes(path, text.as_bytes());
    let (_, checked) = recipe.check(&[]).unwrap_or_else(|e| panic!("{}", e.render(80)));
    serde_json::to_string(&checked).expect("a checked form is JSON")
}

/// The text of every comment, found by a scan of its own that skips
/// strings (independent of the formatter's).
fn comments(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    // Lines end as the grammar ends them: at `\n`, `\r\n` or a lone `\r`.
    for line in text.split(['\n', '\r']) {
        let mut in_string = false;
        let mut chars = line.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' if in_string => {
                    chars.next();
                }
                '"' => in_string = !in_string,
                '#' if !in_string => {
                    found.push(line[at..].trim_end().to_string());
                    break;
                }
                _ => {}
            }
        }
    }
    found
}

/// Format `text`, and hold the result to what every formatting promises:
/// formatting it again changes nothing, it means what the input meant, it
/// keeps every comment in order, no line ends in whitespace, and the file
/// ends with one newline.
fn stable(text: &str) -> String {
    let once = formatted(text);
    let twice = formatted(&once);
    assert!(once == twice, "not idempotent:\n{}", recipe::syntax::fmt::diff("once", &once, &twice));
    assert_eq!(meaning(text), meaning(&once), "the AST changed:\n{once}");
    assert_eq!(comments(text), comments(&once), "comments changed:\n{once}");
    assert!(once.lines().all(|l| l == l.trim_end()), "trailing whitespace:\n{once}");
    assert!(once.is_empty() || (once.ends_with('\n') && !once.ends_with("\n\n")), "{once:?}");
    once
}

// ---------------------------------------------------------------------------
// Every recipe the package holds

#[test]
fn recipes_format_idempotently_and_keep_their_meaning() {
    let paths = opt_files("recipes");
    assert!(paths.len() >= 3, "recipes/ holds the example recipes");
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("a recipe is readable");
        let once = stable(&text);
        assert_eq!(checked(&path, &text), checked(&path, &once), "{}", path.display());
    }
}

#[test]
fn bad_recipes_that_parse_format_idempotently() {
    let mut parsed = 0;
    for path in opt_files("tests/bad") {
        let Ok(text) = String::from_utf8(std::fs::read(&path).expect("readable")) else {
            continue;
        };
        if recipe::syntax::parse(&text).is_ok() {
            stable(&text);
            parsed += 1;
        }
    }
    assert!(parsed >= 10, "most bad recipes fail the checker, not the parser");
}

/// The code blocks of the language specification and the README that
/// parse: the examples, whole recipes among them.
#[test]
fn documented_examples_format_idempotently() {
    let mut parsed = 0;
    for doc in ["docs/LANGUAGE.md", "README.md"] {
        let text = std::fs::read_to_string(package().join(doc)).expect("the doc is readable");
        let mut block: Option<String> = None;
        for line in text.lines() {
            match (&mut block, line.starts_with("```")) {
                (None, true) => block = Some(String::new()),
                (Some(code), true) => {
                    if recipe::syntax::parse(code).is_ok() {
                        stable(code);
                        parsed += 1;
                    }
                    block = None;
                }
                (Some(code), false) => {
                    code.push_str(line);
                    code.push('\n');
                }
                (None, false) => {}
            }
        }
    }
    assert!(parsed >= 12, "only {parsed} examples parse");
}

/// Comments may stand at the end of any line and on a line of their own
/// wherever a line break may: each recipe with one of each around every
/// line, and with one line in three commented, formats stably.
#[test]
fn comments_anywhere_format_stably() {
    for path in opt_files("recipes") {
        let text = std::fs::read_to_string(&path).expect("a recipe is readable");
        for every in [1, 3] {
            let commented: String = text
                .lines()
                .enumerate()
                .map(|(n, line)| match n % every {
                    0 => format!("# before {n}\n{line} # after {n}\n"),
                    _ => format!("{line}\n"),
                })
                .collect();
            stable(&commented);
        }
    }
}

/// The recipes in `recipes/` are what users copy, so they are canonical.
#[test]
fn recipes_are_canonical() {
    let paths = opt_files("recipes");
    let mut args = vec!["fmt".to_string(), "--check".to_string()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let out = cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &package());
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
}

// ---------------------------------------------------------------------------
// The messy file: every rule at once

const MESSY: &str = include_str!("fmt/messy.opt");

#[test]
fn messy_file_formats_to_its_snapshot() {
    let once = stable(MESSY);
    insta::assert_snapshot!("messy", once);
}

#[test]
fn messy_file_keeps_its_checked_form() {
    let path = package().join("tests/fmt/messy.opt");
    assert_eq!(checked(&path, MESSY), checked(&path, &formatted(MESSY)));
}

// ---------------------------------------------------------------------------
// One rule at a time

#[test]
fn blocks_open_their_body_on_a_new_line() {
    insta::assert_snapshot!(stable("recipe demo { seed = 42 }\nmodel   m{}\ndata d {\n\n}"), @r"
    recipe demo {
      seed = 42
    }

    model m {}

    data d {}
    ");
}

#[test]
fn settings_split_and_align_per_block() {
    let text = "search s { train = base, objective = maximize(accuracy)\n\
                space { optimizer.lr = loguniform(1e-3, 1.0), batch = choice(16, 32) } }";
    insta::assert_snapshot!(stable(text), @r"
    search s {
      train     = base
      objective = maximize(accuracy)
      space {
        optimizer.lr = loguniform(1e-3, 1.0)
        batch        = choice(16, 32)
      }
    }
    ");
}

#[test]
fn literals_are_copied_as_written() {
    let text = r#"t x { a = 1e-3, b = 1_000, c = 80%, d = 0.5%, e = -2.5, f = 1E+3
        g = "tab\there \"quoted\" back\\slash # not a comment", h = [ true,false ] }"#;
    insta::assert_snapshot!(stable(text), @r#"
    t x {
      a = 1e-3
      b = 1_000
      c = 80%
      d = 0.5%
      e = -2.5
      f = 1E+3
      g = "tab\there \"quoted\" back\\slash # not a comment"
      h = [true, false]
    }
    "#);
}

#[test]
fn blank_lines_collapse_and_none_touch_a_brace() {
    let text =
        "\n\n# header\n\n\nd x {\n\n\n  a = 1\n\n\n\n  b = 2\n  c = 3\n\n}\n\n\n\n\nd y {}\n\n";
    insta::assert_snapshot!(stable(text), @r"
    # header

    d x {
      a = 1

      b = 2
      c = 3
    }

    d y {}
    ");
}

#[test]
fn lists_break_past_100_columns_and_their_elements_try_one_line() {
    // At 100 columns the line stays whole; one more and the list breaks.
    let fits = format!("m x {{\n  layers = [{}]\n}}\n", "a".repeat(100 - 13));
    assert_eq!(stable(&fits), fits);
    let text = format!(
        "m x {{ layers = [{}, [1, 2], call(a = 1, b = [3, 4]), [{}]] }}",
        "a".repeat(40),
        "b, ".repeat(40)
    );
    insta::assert_snapshot!(stable(&text), @r"
    m x {
      layers = [
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,
        [1, 2],
        call(a = 1, b = [3, 4]),
        [
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
          b,
        ],
      ]
    }
    ");
}

#[test]
fn a_comment_breaks_its_list_and_every_list_around_it() {
    let text = "m x { layers = [linear(2), f(1, # one\n 2), relu] # after\n}";
    insta::assert_snapshot!(stable(text), @r"
    m x {
      layers = [
        linear(2),
        f(
          1,  # one
          2,
        ),
        relu,
      ]  # after
    }
    ");
}

#[test]
fn trailing_comments_align_within_runs() {
    let text = "t x {\n  model = net # a\n  optimizer = sgd(lr = 0.1)\n  epochs = 20    # b\n\n  \
                batch = 32 # c\n  # own line\n  schedule = cosine # d\n  stop = patience(3) # e\n}";
    insta::assert_snapshot!(stable(text), @r"
    t x {
      model     = net  # a
      optimizer = sgd(lr = 0.1)
      epochs    = 20   # b

      batch     = 32  # c
      # own line
      schedule  = cosine       # d
      stop      = patience(3)  # e
    }
    ");
}

#[test]
fn comments_after_opening_brackets_stay_there() {
    let text =
        "d x { # brace\n  split = [ # bracket\n 0.7, 0.3], source = csv( # paren\n \"a.csv\")\n}";
    insta::assert_snapshot!(stable(text), @r#"
    d x {  # brace
      split  = [  # bracket
        0.7,
        0.3,
      ]
      source = csv(  # paren
        "a.csv",
      )
    }
    "#);
}

#[test]
fn comments_before_closing_brackets_and_at_the_end_stay_last() {
    let text =
        "d x {\n  a = [1,\n  # last in the list\n  ]\n\n  # last in the block\n}\n\n# the end\n";
    insta::assert_snapshot!(stable(text), @r"
    d x {
      a = [
        1,
        # last in the list
      ]

      # last in the block
    }

    # the end
    ");
}

#[test]
fn nested_blocks_written_with_equals_lose_it() {
    let text = "s x { space = { a = 1 }, empty = {}, list = [{}, { b = 2 }] }";
    insta::assert_snapshot!(stable(text), @r"
    s x {
      space {
        a = 1
      }
      empty {}
      list = [
        {},
        {
          b = 2
        },
      ]
    }
    ");
}

#[test]
fn files_of_nothing_or_only_comments() {
    assert_eq!(stable(""), "");
    assert_eq!(stable("\n \n\t\n"), "");
    assert_eq!(stable("  # one   \n\n\n# two"), "# one\n\n# two\n");
}

#[test]
fn windows_line_endings_become_newlines() {
    assert_eq!(stable("d x {\r\n  a = 1 # c\r\n}\r\n"), "d x {\n  a = 1  # c\n}\n");
}

/// Shapes the rules above do not cover one by one, each held to every
/// promise of [`stable`].
#[test]
fn odd_inputs_stay_stable() {
    let inputs = [
        "a b {} c d {} # two blocks on a line\n",
        "a b { x = 1 } # after\n# own\na c { # open\n}",
        "a b {\n  x = 1\n  , # after a lone comma\n  y = 2\n}",
        "a b { x = [\n\n  1,\n\n  # c\n\n  2\n\n] }",
        "a b { x = f(\n  # leading the first argument\n  1, k = 2 # named\n) }",
        "a b { x = [] # empty\n y = [ # open\n ]\n z = f()\n}",
        "a b { x = [ [ [ # deep\n 1 ] ] ] }",
        "a b { s { # open\n }\n t {\n # only a closing comment\n } }",
        "a b { x = \"ü # ß\" # ünïcödé\n}",
        "# only\n# comments\n\n\n# here",
    ];
    for text in inputs {
        stable(text);
    }
}

#[test]
fn diff_shows_changed_lines_with_context() {
    let before = "recipe demo { seed = 42 }\n\ndata d {\n  a = 1\n}\n";
    let after = formatted(before);
    // An empty line of context is a single space, as in `diff -u`.
    let expected = [
        "--- demo.opt",
        "+++ demo.opt (formatted)",
        "@@ -1,4 +1,6 @@",
        "-recipe demo { seed = 42 }",
        "+recipe demo {",
        "+  seed = 42",
        "+}",
        " ",
        " data d {",
        "   a = 1",
    ]
    .map(|line| format!("{line}\n"))
    .concat();
    assert_eq!(recipe::syntax::fmt::diff("demo.opt", before, &after), expected);
    assert_eq!(recipe::syntax::fmt::diff("same.opt", &after, &after), "");
}

// ---------------------------------------------------------------------------
// The command

#[test]
fn fmt_check_reports_then_fmt_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messy.opt");
    std::fs::write(&file, MESSY).unwrap();

    let out = cli(&["fmt", "--check", "messy.opt"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let diff = text(&out.stdout);
    assert!(diff.starts_with("--- messy.opt\n+++ messy.opt (formatted)\n@@ -"), "{diff}");
    assert!(diff.contains("\n-recipe   messy{seed=42,device = cpu}"), "{diff}");
    assert!(diff.contains("\n+  device = cpu\n"), "{diff}");
    assert!(text(&out.stderr).contains("`messy.opt` is not formatted"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), MESSY, "--check writes nothing");

    let out = cli(&["fmt", "messy.opt"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), formatted(MESSY));
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["messy.opt"], "no temporary file is left behind");

    let out = cli(&["fmt", "--check", "messy.opt"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn fmt_leaves_a_file_that_does_not_parse_alone() {
    let dir = tempfile::tempdir().unwrap();
    let broken = "data   d {\n  split = [0.7, 0.3\n}\n";
    std::fs::write(dir.path().join("broken.opt"), broken).unwrap();
    std::fs::write(dir.path().join("fine.opt"), "data   d { a = 1 }\n").unwrap();

    for check in [true, false] {
        let mut args = vec!["fmt", "broken.opt", "fine.opt"];
        if check {
            args.insert(1, "--check");
        }
        let out = cli(&args, dir.path());
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("recipe::syntax::unexpected"), "{err}");
        assert!(err.contains("broken.opt"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("broken.opt")).unwrap(), broken);
    }
    // The file that parses was still formatted by the run without `--check`.
    let fine = std::fs::read_to_string(dir.path().join("fine.opt")).unwrap();
    assert_eq!(fine, "data d {\n  a = 1\n}\n");
}

#[test]
fn fmt_needs_a_file() {
    assert_eq!(cli(&["fmt"], &package()).status.code(), Some(2));
}

// ---------------------------------------------------------------------------
// Generated recipes

/// Recipe text generated from the grammar: any block kinds and names, settings separated by
/// newlines or commas, every value form nested a few levels deep, and comments wherever a line
/// may end.
mod generated {
    use proptest::prelude::*;

    fn ident() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_]{0,7}"
    }

    fn key() -> impl Strategy<Value = String> {
        prop::collection::vec(ident(), 1..3).prop_map(|parts| parts.join("."))
    }

    fn comment() -> BoxedStrategy<String> {
        prop_oneof![
            3 => Just(String::new()),
            1 => "[ a-zA-Z0-9=,#{}\\[\\]()\"'.-]{0,20}".prop_map(|c| format!("  # {c}")),
        ]
        .boxed()
    }

    /// Digits, with an underscore between groups now and then.
    fn digits() -> impl Strategy<Value = String> {
        (0u32..2_000_000, any::<bool>()).prop_map(|(n, grouped)| {
            let plain = n.to_string();
            if !grouped {
                return plain;
            }
            let mut out = String::new();
            for (i, c) in plain.chars().enumerate() {
                if i > 0 && (plain.len() - i) % 3 == 0 {
                    out.push('_');
                }
                out.push(c);
            }
            out
        })
    }

    fn number() -> impl Strategy<Value = String> {
        let sign = prop_oneof![Just(""), Just("-")];
        let body = prop_oneof![
            digits(),
            (digits(), "[0-9]{1,4}").prop_map(|(a, b)| format!("{a}.{b}")),
            (digits(), "[eE]", "[+-]?", 0u32..30).prop_map(|(a, e, s, x)| format!("{a}{e}{s}{x}")),
            ("[0-9]", "[0-9]{1,3}", -20i32..20).prop_map(|(a, b, x)| format!("{a}.{b}e{x}")),
        ];
        (sign, body).prop_map(|(s, b)| format!("{s}{b}"))
    }

    fn string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => "[ a-zA-Z0-9/._#,=é]".prop_map(|c| c.to_string()),
            1 => prop_oneof![Just("\\\""), Just("\\\\"), Just("\\n"), Just("\\t")]
                .prop_map(str::to_string),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    fn leaf() -> impl Strategy<Value = String> {
        prop_oneof![
            number(),
            number().prop_map(|n| format!("{n}%")),
            string(),
            prop_oneof![Just("true"), Just("false")].prop_map(str::to_string),
            ident(),
            (ident(), prop::collection::vec(ident(), 1..3))
                .prop_map(|(a, rest)| format!("{a}.{}", rest.join("."))),
        ]
    }

    /// Items separated by commas, each on its own line (with a comment) or all on one, with or
    /// without a trailing comma.
    fn separated(items: Vec<(String, String)>, multiline: bool, trailing: bool) -> String {
        if items.is_empty() {
            return String::new();
        }
        let n = items.len();
        let mut out = String::new();
        for (i, (item, comment)) in items.into_iter().enumerate() {
            out.push_str(&item);
            if i + 1 < n || trailing {
                out.push(',');
            }
            if multiline {
                out.push_str(&comment);
                out.push('\n');
            } else if i + 1 < n {
                out.push(' ');
            }
        }
        if multiline {
            format!("\n{out}")
        } else {
            out
        }
    }

    pub fn value() -> impl Strategy<Value = String> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            let items = prop::collection::vec((inner.clone(), comment()), 0..4);
            let named = prop::collection::vec(((ident(), inner.clone()), comment()), 0..3);
            prop_oneof![
                (items.clone(), any::<bool>(), any::<bool>())
                    .prop_map(|(items, m, t)| { format!("[{}]", separated(items, m, t)) }),
                (ident(), items, named, any::<bool>(), any::<bool>()).prop_map(
                    |(name, positional, named, m, t)| {
                        let mut args = positional;
                        args.extend(named.into_iter().map(|((k, v), c)| (format!("{k} = {v}"), c)));
                        format!("{name}({})", separated(args, m, t))
                    }
                ),
                prop::collection::vec(((key(), inner), comment()), 0..3)
                    .prop_map(|settings| body(settings, false)),
            ]
        })
    }

    /// `{ ... }` holding `settings`, one a line, or comma-separated on one line.
    fn body(settings: Vec<((String, String), String)>, one_line: bool) -> String {
        if settings.is_empty() {
            return "{}".into();
        }
        if one_line {
            let parts: Vec<String> =
                settings.into_iter().map(|((k, v), _)| format!("{k} = {v}")).collect();
            return format!("{{ {} }}", parts.join(", "));
        }
        let mut out = String::from("{\n");
        for ((k, v), comment) in settings {
            out.push_str(&format!("    {k} = {v}{comment}\n"));
        }
        out.push('}');
        out
    }

    pub fn file() -> impl Strategy<Value = String> {
        let setting = ((key(), value()), comment());
        let block =
            (ident(), ident(), prop::collection::vec(setting, 0..5), any::<bool>(), comment())
                .prop_map(|(kind, name, settings, one_line, above)| {
                    let above = above.trim_start().to_string();
                    let above = if above.is_empty() { above } else { format!("{above}\n") };
                    // A comment ends its line, so a one-line body cannot hold one.
                    let one_line = one_line && !body_has_comments(&settings);
                    format!("{above}{kind} {name} {}", body(settings, one_line))
                });
        prop::collection::vec(block, 0..4).prop_map(|blocks| blocks.join("\n\n") + "\n")
    }

    fn body_has_comments(settings: &[((String, String), String)]) -> bool {
        settings.iter().any(|((_, v), c)| !c.is_empty() || v.contains('#'))
    }
}

proptest::proptest! {
    // A failure prints its shrunk input; nothing is written into the source tree.
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Any recipe the grammar allows formats to a text with the same AST and the same comments,
    /// which formats to itself.
    #[test]
    fn generated_recipes_format_stably(text in generated::file()) {
        recipe::syntax::parse(&text)
            .unwrap_or_else(|e| panic!("generated text parses: {e:?}\n{text}"));
        stable(&text);
    }
}
