//! Recipe text to the same recipe in its one canonical layout, comments kept;
//! and a line diff between the two, for `recipe fmt --check`.
//!
//! [`format()`] parses the text and prints the AST again: two-space indent, one
//! setting per line with `=` aligned in each block, one blank line between
//! blocks, lists and calls on one line unless the line would pass
//! [`MAX_WIDTH`] columns or they hold a comment. Numbers, percents and
//! strings are copied from the source as written, so `1e-3`, `1_000` and
//! string escapes survive untouched.
//!
//! The grammar drops comments, so they are found by a scan of the text that
//! skips strings, and each is attached to what it sits beside before the
//! tree is printed:
//!
//! - a comment after code on its line trails the item (block, setting, list
//!   element or call argument) that ends last before it on that line, or,
//!   right after an opening bracket, stays after that bracket;
//! - a comment on a line of its own leads the next item of its container
//!   (file, block body, list, call), or, with none left, closes the
//!   container and is printed before its closing bracket.
//!
//! Blank lines around comments and between settings are kept, collapsed to
//! one. Trailing comments of consecutive one-line items are aligned to one
//! column.

use super::ast::{Block, File, Ident, Setting, Value, ValueKind};
use super::{parse, SyntaxError};
use crate::span::Span;

/// Lines of code longer than this break their lists and calls, one element
/// a line. Trailing comments do not count.
pub const MAX_WIDTH: usize = 100;

/// Spaces per level of nesting.
const INDENT: usize = 2;

/// Lines of context around each change in a [`diff`].
const CONTEXT: usize = 3;

/// Recipe text in the canonical layout, every comment kept.
///
/// Formatting is idempotent, and the result parses to the same AST as the
/// input but for spans. Text that does not parse gives its syntax errors.
///
/// ```
/// let text = "recipe demo { seed = 42, device = cpu }  # one line\n";
/// let formatted = recipe::syntax::format(text).unwrap();
/// assert_eq!(formatted, "recipe demo {\n  seed   = 42\n  device = cpu\n}  # one line\n");
/// ```
///
/// # Panics
///
/// If the printed text would not parse back to the same recipe, or would
/// lose a comment. That is a bug in the formatter, never a property of the
/// input, and refusing is better than writing a changed recipe.
pub fn format(text: &str) -> Result<String, Vec<SyntaxError>> {
    let file = parse(text)?;
    let comments = scan_comments(text);
    let tree = Builder { src: text }.file(&file, &comments);
    let mut printer = Printer::default();
    printer.file(&tree);
    let out = printer.finish();

    // The tree is rebuilt from the AST, so a mistake here would silently
    // change a recipe; checking the result costs one more parse.
    let again = parse(&out).unwrap_or_else(|e| panic!("formatted recipe does not parse: {e:?}"));
    assert!(erased(file) == erased(again), "formatting changed the recipe");
    let texts = |cs: Vec<Comment>| cs.into_iter().map(|c| c.text).collect::<Vec<_>>();
    assert!(texts(comments) == texts(scan_comments(&out)), "formatting lost a comment");
    Ok(out)
}

// ---------------------------------------------------------------------------
// Comments

/// A `#` comment found in the source.
#[derive(Debug, Clone)]
struct Comment {
    /// The byte offset of its `#`.
    start: usize,
    /// The byte offset of the end of its line.
    end: usize,
    /// From `#` to the end of the line, trailing whitespace trimmed.
    text: String,
    /// Nothing but whitespace and commas before it on its line.
    own_line: bool,
}

/// Every comment of the text in order. Strings are skipped so that a `#`
/// inside one is not taken for a comment; the text has parsed, so every
/// string ends on its line. The characters that matter are ASCII, so a
/// byte scan cannot stop inside a multi-byte character.
fn scan_comments(src: &str) -> Vec<Comment> {
    let bytes = src.as_bytes();
    let mut comments = Vec::new();
    let mut line_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // The grammar ends a line at `\n`, `\r\n` or a lone `\r`.
        match bytes[i] {
            b'\n' | b'\r' => line_start = i + 1,
            b'"' => {
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'"' | b'\n' | b'\r') {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                // Past the closing quote; a newline is left to the outer
                // loop, which starts a line there.
                if bytes.get(i) == Some(&b'"') {
                    i += 1;
                }
                continue;
            }
            b'#' => {
                let end = src[i..].find(['\n', '\r']).map_or(src.len(), |n| i + n);
                let before = &src[line_start..i];
                comments.push(Comment {
                    start: i,
                    end,
                    text: src[i..end].trim_end().to_string(),
                    own_line: before.chars().all(|c| c.is_whitespace() || c == ','),
                });
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    comments
}

/// Whether a blank line lies between two offsets: a line, neither the first
/// nor the last of the range, with nothing but whitespace on it.
fn blank_between(src: &str, from: usize, to: usize) -> bool {
    let mut lines: Vec<&str> = src[from..to].split('\n').collect();
    lines.pop();
    lines.iter().skip(1).any(|line| line.trim().is_empty())
}

// ---------------------------------------------------------------------------
// The tree to print: the AST with comments and blank lines attached

/// A comment on a line of its own.
#[derive(Debug)]
struct Note {
    text: String,
    blank_before: bool,
}

/// One item of a container with the comments around it.
#[derive(Debug)]
struct Item<T> {
    leading: Vec<Note>,
    /// A blank line between the last leading comment (or the item before)
    /// and this item.
    blank_before: bool,
    node: T,
    trailing: Option<String>,
}

/// The items between a pair of brackets, or of a whole file.
#[derive(Debug)]
struct Group<T> {
    /// A comment right after the opening bracket.
    open: Option<String>,
    items: Vec<Item<T>>,
    /// Comments after the last item.
    closing: Vec<Note>,
}

impl<T> Group<T> {
    fn has_comments(&self) -> bool {
        self.open.is_some()
            || !self.closing.is_empty()
            || self.items.iter().any(|it| !it.leading.is_empty() || it.trailing.is_some())
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty() && !self.has_comments()
    }
}

#[derive(Debug)]
struct BlockNode {
    /// `KIND NAME`.
    head: String,
    body: Group<Entry>,
}

/// A setting (`key` always set), a list element or a call argument (`key`
/// set for a named one).
#[derive(Debug)]
struct Entry {
    key: Option<String>,
    value: Node,
}

#[derive(Debug)]
enum Node {
    /// A value printed as one piece of text.
    Atom(String),
    List(Group<Entry>),
    Call(String, Group<Entry>),
    Block(Group<Entry>),
}

/// Where the comments of one container go, by item index.
struct Attached<'c> {
    open: Option<String>,
    leading: Vec<Vec<Note>>,
    blank_before: Vec<bool>,
    trailing: Vec<Option<String>>,
    closing: Vec<Note>,
    /// The comments inside each item, for its own containers.
    inner: Vec<&'c [Comment]>,
}

impl Attached<'_> {
    fn into_group<T>(self, nodes: Vec<T>) -> Group<T> {
        let items = nodes
            .into_iter()
            .zip(self.leading)
            .zip(self.blank_before)
            .zip(self.trailing)
            .map(|(((node, leading), blank_before), trailing)| Item {
                leading,
                blank_before,
                node,
                trailing,
            })
            .collect();
        Group { open: self.open, items, closing: self.closing }
    }
}

/// Attach the comments of a container to its items. `open` is the offset
/// just after the opening bracket (0 for a file), `spans` those of the
/// items in order, `comments` every comment inside the container.
fn attach<'c>(src: &str, open: usize, spans: &[Span], comments: &'c [Comment]) -> Attached<'c> {
    let n = spans.len();
    let mut a = Attached {
        open: None,
        leading: (0..n).map(|_| Vec::new()).collect(),
        blank_before: Vec::with_capacity(n),
        trailing: vec![None; n],
        closing: Vec::new(),
        inner: Vec::with_capacity(n),
    };
    let mut rest = comments;
    let mut prev = open;
    for i in 0..=n {
        // The gap before item `i` (or before the closing bracket).
        let gap_end = spans.get(i).map_or(usize::MAX, |s| s.start);
        let (gap, after) = rest.split_at(rest.partition_point(|c| c.start < gap_end));
        for c in gap {
            let beside_prev = i > 0 && !src[spans[i - 1].end..c.start].contains('\n');
            let beside_open = i == 0 && !src[open..c.start].contains('\n');
            if !c.own_line && beside_prev && a.trailing[i - 1].is_none() {
                a.trailing[i - 1] = Some(c.text.clone());
            } else if !c.own_line && beside_open && a.open.is_none() {
                a.open = Some(c.text.clone());
            } else {
                // Own-line comments; anything else cannot follow code on its
                // line, and becomes one too.
                let note =
                    Note { text: c.text.clone(), blank_before: blank_between(src, prev, c.start) };
                match a.leading.get_mut(i) {
                    Some(leading) => leading.push(note),
                    None => a.closing.push(note),
                }
            }
            prev = c.end;
        }
        rest = after;

        if let Some(span) = spans.get(i) {
            a.blank_before.push(blank_between(src, prev, span.start));
            let (inside, after) = rest.split_at(rest.partition_point(|c| c.start < span.end));
            a.inner.push(inside);
            rest = after;
            prev = span.end;
        }
    }
    a
}

/// Builds the tree to print from the AST, the source and its comments.
struct Builder<'s> {
    src: &'s str,
}

impl Builder<'_> {
    fn file(&self, file: &File, comments: &[Comment]) -> Group<BlockNode> {
        let spans: Vec<Span> = file.blocks.iter().map(|b| b.span).collect();
        let a = attach(self.src, 0, &spans, comments);
        let nodes = file.blocks.iter().zip(&a.inner).map(|(b, cs)| self.block(b, cs)).collect();
        a.into_group(nodes)
    }

    fn block(&self, block: &Block, comments: &[Comment]) -> BlockNode {
        // Only spaces lie between the name and the brace: a comment there
        // would swallow the brace.
        let after_name = block.name.span.end;
        let brace = self.src[after_name..].find('{').expect("a block body opens with `{`");
        BlockNode {
            head: format!("{} {}", block.kind.name, block.name.name),
            body: self.body(after_name + brace + 1, &block.settings, comments),
        }
    }

    fn body(&self, open: usize, settings: &[Setting], comments: &[Comment]) -> Group<Entry> {
        let spans: Vec<Span> = settings.iter().map(|s| s.span).collect();
        let a = attach(self.src, open, &spans, comments);
        let nodes = settings
            .iter()
            .zip(&a.inner)
            .map(|(s, cs)| Entry { key: Some(s.key.name.clone()), value: self.value(&s.value, cs) })
            .collect();
        a.into_group(nodes)
    }

    fn value(&self, value: &Value, comments: &[Comment]) -> Node {
        let source = || self.src[value.span.start..value.span.end].to_string();
        match &value.kind {
            ValueKind::Int(_) | ValueKind::Float(_) | ValueKind::Percent(_) | ValueKind::Str(_) => {
                Node::Atom(source())
            }
            ValueKind::Bool(b) => Node::Atom(b.to_string()),
            ValueKind::Word(w) => Node::Atom(w.clone()),
            ValueKind::Path(parts) => {
                Node::Atom(parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join("."))
            }
            ValueKind::List(items) => {
                let entries: Vec<(Option<&Ident>, &Value)> =
                    items.iter().map(|v| (None, v)).collect();
                Node::List(self.entries(value.span.start + 1, &entries, comments))
            }
            ValueKind::Call(call) => {
                let after_name = call.name.span.end;
                let paren = self.src[after_name..].find('(').expect("a call opens with `(`");
                let entries: Vec<(Option<&Ident>, &Value)> = call
                    .args
                    .iter()
                    .map(|v| (None, v))
                    .chain(call.named.iter().map(|(k, v)| (Some(k), v)))
                    .collect();
                let args = self.entries(after_name + paren + 1, &entries, comments);
                Node::Call(call.name.name.clone(), args)
            }
            ValueKind::Block(settings) => {
                Node::Block(self.body(value.span.start + 1, settings, comments))
            }
        }
    }

    /// List elements or call arguments, with the name of each named one.
    fn entries(
        &self,
        open: usize,
        entries: &[(Option<&Ident>, &Value)],
        comments: &[Comment],
    ) -> Group<Entry> {
        let spans: Vec<Span> = entries
            .iter()
            .map(|(key, v)| Span::new(key.map_or(v.span.start, |k| k.span.start), v.span.end))
            .collect();
        let a = attach(self.src, open, &spans, comments);
        let nodes = entries
            .iter()
            .zip(&a.inner)
            .map(|((key, v), cs)| Entry {
                key: key.map(|k| k.name.clone()),
                value: self.value(v, cs),
            })
            .collect();
        a.into_group(nodes)
    }
}

// ---------------------------------------------------------------------------
// Printing

/// One output line: code at an indent and an optional comment after it. A
/// line with neither is blank; one with only a comment is an own-line
/// comment at the indent.
#[derive(Debug, Default)]
struct Line {
    indent: usize,
    code: String,
    comment: Option<String>,
    /// The column a trailing comment is aligned to, when it is one of a run.
    column: Option<usize>,
}

impl Line {
    fn code(indent: usize, code: String) -> Line {
        Line { indent, code, ..Line::default() }
    }

    fn width(&self) -> usize {
        self.indent + self.code.chars().count()
    }
}

#[derive(Default)]
struct Printer {
    lines: Vec<Line>,
}

/// The one-line form of a value, if it has one: no comment inside it and no
/// non-empty block.
fn flat(node: &Node) -> Option<String> {
    let items = |g: &Group<Entry>| -> Option<String> {
        if g.has_comments() {
            return None;
        }
        let parts: Option<Vec<String>> = g.items.iter().map(|it| flat_entry(&it.node)).collect();
        Some(parts?.join(", "))
    };
    match node {
        Node::Atom(text) => Some(text.clone()),
        Node::List(g) => Some(format!("[{}]", items(g)?)),
        Node::Call(name, g) => Some(format!("{name}({})", items(g)?)),
        Node::Block(g) if g.is_empty() => Some("{}".into()),
        Node::Block(_) => None,
    }
}

fn flat_entry(entry: &Entry) -> Option<String> {
    let value = flat(&entry.value)?;
    Some(match &entry.key {
        Some(key) => format!("{key} = {value}"),
        None => value,
    })
}

impl Printer {
    fn push(&mut self, line: Line) {
        self.lines.push(line);
    }

    fn blank(&mut self) {
        self.push(Line::default());
    }

    fn file(&mut self, file: &Group<BlockNode>) {
        self.group(file, 0, true, |p, block, indent| p.block(block, indent));
    }

    fn block(&mut self, block: &BlockNode, indent: usize) {
        self.braces(format!("{} ", block.head), &block.body, indent, "");
    }

    /// `PREFIX{ settings }SUFFIX`: `{}` when empty, else the settings on
    /// lines of their own one level deeper.
    fn braces(&mut self, prefix: String, body: &Group<Entry>, indent: usize, suffix: &str) {
        if body.is_empty() {
            self.push(Line::code(indent, format!("{prefix}{{}}{suffix}")));
            return;
        }
        self.push(Line { comment: body.open.clone(), ..Line::code(indent, format!("{prefix}{{")) });
        // Keys are padded to the longest among the `key = value` settings;
        // nested blocks are not written with `=` and take no part.
        let pad = body
            .items
            .iter()
            .filter(|it| !matches!(it.node.value, Node::Block(_)))
            .filter_map(|it| it.node.key.as_ref().map(|k| k.chars().count()))
            .max()
            .unwrap_or(0);
        self.group(body, indent + INDENT, false, |p, entry, indent| p.setting(entry, pad, indent));
        self.push(Line::code(indent, format!("}}{suffix}")));
    }

    fn setting(&mut self, entry: &Entry, pad: usize, indent: usize) {
        let key = entry.key.as_deref().expect("a setting has a key");
        match &entry.value {
            Node::Block(body) => self.braces(format!("{key} "), body, indent, ""),
            value => self.value(format!("{key:<pad$} = "), value, indent, ""),
        }
    }

    fn element(&mut self, entry: &Entry, indent: usize) {
        let prefix = entry.key.as_ref().map_or(String::new(), |k| format!("{k} = "));
        self.value(prefix, &entry.value, indent, ",");
    }

    /// `PREFIX value SUFFIX` on one line if it fits, else with its list or
    /// call broken one element a line.
    fn value(&mut self, prefix: String, value: &Node, indent: usize, suffix: &str) {
        if let Some(text) = flat(value) {
            let line = format!("{prefix}{text}{suffix}");
            if indent + line.chars().count() <= MAX_WIDTH || matches!(value, Node::Atom(_)) {
                self.push(Line::code(indent, line));
                return;
            }
        }
        let (open, items, close) = match value {
            Node::List(items) => ("[".to_string(), items, "]"),
            Node::Call(name, args) => (format!("{name}("), args, ")"),
            Node::Block(body) => return self.braces(prefix, body, indent, suffix),
            Node::Atom(_) => unreachable!("an atom always has a one-line form"),
        };
        self.push(Line { comment: items.open.clone(), ..Line::code(indent, prefix + &open) });
        self.group(items, indent + INDENT, false, |p, entry, indent| p.element(entry, indent));
        self.push(Line::code(indent, format!("{close}{suffix}")));
    }

    /// The items of a container at `indent`, each after its leading
    /// comments and with its trailing one, with the blank lines the source
    /// had between them; `blocks` puts exactly one blank line between items
    /// instead, as between the blocks of a file.
    fn group<T>(
        &mut self,
        group: &Group<T>,
        indent: usize,
        blocks: bool,
        mut item: impl FnMut(&mut Self, &T, usize),
    ) {
        let mut emitted = false;
        // The lines of consecutive one-line items, whose trailing comments
        // are aligned.
        let mut run: Vec<usize> = Vec::new();
        for (idx, it) in group.items.iter().enumerate() {
            let mut first = true;
            for note in &it.leading {
                if emitted && (note.blank_before || (first && blocks && idx > 0)) {
                    self.blank();
                }
                self.align(&mut run);
                self.push(Line {
                    comment: Some(note.text.clone()),
                    ..Line::code(indent, "".into())
                });
                emitted = true;
                first = false;
            }
            if emitted && (it.blank_before || (first && blocks && idx > 0)) {
                self.blank();
                self.align(&mut run);
            }

            let start = self.lines.len();
            item(self, &it.node, indent);
            emitted = true;
            let last = self.lines.last_mut().expect("an item prints a line");
            last.comment = it.trailing.clone();
            if self.lines.len() - start == 1 {
                run.push(start);
            } else {
                self.align(&mut run);
            }
        }
        self.align(&mut run);
        for note in &group.closing {
            if emitted && note.blank_before {
                self.blank();
            }
            self.push(Line { comment: Some(note.text.clone()), ..Line::code(indent, "".into()) });
            emitted = true;
        }
    }

    /// Align the trailing comments of a run of lines two spaces after the
    /// longest code among those that have one, and start a new run.
    fn align(&mut self, run: &mut Vec<usize>) {
        let commented: Vec<usize> =
            run.drain(..).filter(|&i| self.lines[i].comment.is_some()).collect();
        if let Some(widest) = commented.iter().map(|&i| self.lines[i].width()).max() {
            for i in commented {
                self.lines[i].column = Some(widest + 2);
            }
        }
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            let mut text = " ".repeat(line.indent) + &line.code;
            if let Some(comment) = &line.comment {
                if !line.code.is_empty() {
                    let column = line.column.unwrap_or(0).max(line.width() + 2);
                    text.push_str(&" ".repeat(column - line.width()));
                }
                text.push_str(comment);
            }
            if line.code.is_empty() && line.comment.is_none() {
                text.clear();
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Comparing before and after

/// The AST with every span set to zero, to compare two texts' meaning.
fn erased(mut file: File) -> File {
    fn ident(id: &mut Ident) {
        id.span = Span::default();
    }
    fn setting(s: &mut Setting) {
        ident(&mut s.key);
        value(&mut s.value);
        s.span = Span::default();
    }
    fn value(v: &mut Value) {
        v.span = Span::default();
        match &mut v.kind {
            ValueKind::Path(parts) => parts.iter_mut().for_each(ident),
            ValueKind::Call(call) => {
                ident(&mut call.name);
                call.args.iter_mut().for_each(value);
                call.named.iter_mut().for_each(|(k, v)| {
                    ident(k);
                    value(v);
                });
            }
            ValueKind::List(items) => items.iter_mut().for_each(value),
            ValueKind::Block(settings) => settings.iter_mut().for_each(setting),
            _ => {}
        }
    }
    for block in &mut file.blocks {
        ident(&mut block.kind);
        ident(&mut block.name);
        block.settings.iter_mut().for_each(setting);
        block.span = Span::default();
    }
    file
}

/// What changes from `before` to `after`, as a unified diff of lines with
/// three lines of context, headed by `name`. Empty when they are equal.
///
/// ```
/// let diff = recipe::syntax::fmt::diff("a.opt", "x {}\ny {}\n", "x {}\nz {}\n");
/// assert_eq!(diff, "--- a.opt\n+++ a.opt (formatted)\n@@ -1,2 +1,2 @@\n x {}\n-y {}\n+z {}\n");
/// ```
pub fn diff(name: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    let old: Vec<&str> = before.split_inclusive('\n').collect();
    let new: Vec<&str> = after.split_inclusive('\n').collect();
    let ops = line_ops(&old, &new);

    let mut out = format!("--- {name}\n+++ {name} (formatted)\n");
    let changes: Vec<usize> =
        ops.iter().enumerate().filter(|(_, op)| op.kind != OpKind::Same).map(|(k, _)| k).collect();
    let mut k = 0;
    while k < changes.len() {
        // A hunk takes every change closer to the last than twice the
        // context, so that the context of two changes never overlaps.
        let first = changes[k];
        let mut last = first;
        while k + 1 < changes.len() && changes[k + 1] - last <= 2 * CONTEXT {
            k += 1;
            last = changes[k];
        }
        k += 1;
        let lo = first.saturating_sub(CONTEXT);
        let hi = (last + 1 + CONTEXT).min(ops.len());
        let hunk = &ops[lo..hi];

        let old_len = hunk.iter().filter(|op| op.kind != OpKind::Added).count();
        let new_len = hunk.iter().filter(|op| op.kind != OpKind::Removed).count();
        // An empty side names the line before it, as `diff -u` does.
        let old_at = hunk[0].old + usize::from(old_len > 0);
        let new_at = hunk[0].new + usize::from(new_len > 0);
        out.push_str(&format!("@@ -{old_at},{old_len} +{new_at},{new_len} @@\n"));
        for op in hunk {
            let (sign, line) = match op.kind {
                OpKind::Same => (' ', old[op.old]),
                OpKind::Removed => ('-', old[op.old]),
                OpKind::Added => ('+', new[op.new]),
            };
            out.push(sign);
            match line.strip_suffix('\n') {
                Some(line) => {
                    out.push_str(line);
                    out.push('\n');
                }
                None => {
                    out.push_str(line);
                    out.push_str("\n\\ No newline at end of file\n");
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Same,
    Removed,
    Added,
}

/// One step of a line diff, with the line indices in both texts before it.
#[derive(Debug, Clone, Copy)]
struct Op {
    kind: OpKind,
    old: usize,
    new: usize,
}

/// Above this many pairs of middle lines, a diff replaces the whole middle
/// instead of searching for a longest common subsequence.
const MAX_DIFF_CELLS: usize = 4_000_000;

/// The steps from `old` to `new` along a longest common subsequence of
/// lines, removals before additions where both happen.
fn line_ops(old: &[&str], new: &[&str]) -> Vec<Op> {
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (a, b) = (&old[prefix..old.len() - suffix], &new[prefix..new.len() - suffix]);
    let (n, m) = (a.len(), b.len());

    // lcs[i * (m + 1) + j]: the longest common subsequence of a[i..], b[j..].
    let width = m + 1;
    let lcs = if n.saturating_mul(m) <= MAX_DIFF_CELLS {
        let mut lcs = vec![0u32; (n + 1) * width];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * width + j] = if a[i] == b[j] {
                    lcs[(i + 1) * width + j + 1] + 1
                } else {
                    lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
                };
            }
        }
        Some(lcs)
    } else {
        None
    };

    let mut ops: Vec<Op> = (0..prefix).map(|i| Op { kind: OpKind::Same, old: i, new: i }).collect();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        let at = |kind| Op { kind, old: prefix + i, new: prefix + j };
        let kind = match &lcs {
            Some(_) if i < n && j < m && a[i] == b[j] => OpKind::Same,
            _ if j == m => OpKind::Removed,
            _ if i == n => OpKind::Added,
            Some(lcs) if lcs[(i + 1) * width + j] >= lcs[i * width + j + 1] => OpKind::Removed,
            Some(_) => OpKind::Added,
            None => OpKind::Removed,
        };
        ops.push(at(kind));
        match kind {
            OpKind::Same => (i, j) = (i + 1, j + 1),
            OpKind::Removed => i += 1,
            OpKind::Added => j += 1,
        }
    }
    let (old_end, new_end) = (prefix + n, prefix + m);
    ops.extend((0..suffix).map(|s| Op { kind: OpKind::Same, old: old_end + s, new: new_end + s }));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comments(src: &str) -> Vec<(String, bool)> {
        scan_comments(src).into_iter().map(|c| (c.text, c.own_line)).collect()
    }

    #[test]
    fn comments_skip_strings() {
        let src = "a b { x = \"# not\\\" # still not\", y = \"#\" # yes  \n  # own\n , # comma\n}";
        assert_eq!(
            comments(src),
            [("# yes".into(), false), ("# own".into(), true), ("# comma".into(), true)]
        );
    }

    #[test]
    fn blank_lines_are_lines_of_whitespace() {
        assert!(!blank_between("1\n2", 0, 3));
        assert!(blank_between("1\n \t\n2", 0, 6));
        assert!(!blank_between("1\n,\n2", 0, 5));
    }

    #[test]
    fn diffs_of_whole_replacements_and_missing_newlines() {
        assert_eq!(
            diff("f", "a", "a\n"),
            "--- f\n+++ f (formatted)\n@@ -1,1 +1,1 @@\n-a\n\\ No newline at end of file\n+a\n"
        );
        assert_eq!(diff("f", "", "a\n"), "--- f\n+++ f (formatted)\n@@ -0,0 +1,1 @@\n+a\n");
    }

    #[test]
    fn diffs_keep_distant_changes_apart() {
        let old: String = (0..20).map(|i| format!("{i}\n")).collect();
        let new = old.replace("2\n", "two\n").replace("17\n", "seventeen\n");
        let d = diff("f", &old, &new);
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
        assert!(d.contains("@@ -1,6 +1,6 @@\n 0\n 1\n-2\n+two\n 3\n 4\n 5\n"), "{d}");
    }
}
