//! Names and references: the symbol table of blocks, the references each
//! block makes, cycles among them, and the typed lookup of a reference.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::error::CheckError;
use super::outputs::OutputRoot;
use super::spec::{self, Arch, DataRef, Spec, Split, TensorInfo};
use super::value::{closest, list_words, wrong_type, Errors};
use crate::span::Span;
use crate::syntax::ast::{self, Value, ValueKind};

/// What a block produces, which decides where it may be referred to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    Dataset,
    Architecture,
    Weights,
    Metrics,
    File,
}

impl Type {
    pub fn of_kind(kind: &str) -> Type {
        match kind {
            "data" => Type::Dataset,
            "model" => Type::Architecture,
            "eval" => Type::Metrics,
            "save" => Type::File,
            _ => Type::Weights,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Type::Dataset => "a dataset",
            Type::Architecture => "a model",
            Type::Weights => "weights",
            Type::Metrics => "a metrics table",
            Type::File => "a saved file",
        }
    }
}

/// The symbol table and the blocks checked so far.
pub(crate) struct Env<'a> {
    /// Where relative input paths start.
    pub base_dir: &'a Path,
    /// Where the run may write.
    pub out: &'a OutputRoot,
    declared: BTreeMap<&'a str, &'a ast::Block>,
    checked: BTreeMap<String, spec::Block>,
    failed: BTreeSet<String>,
}

impl<'a> Env<'a> {
    pub fn new(base_dir: &'a Path, out: &'a OutputRoot) -> Self {
        Env {
            base_dir,
            out,
            declared: BTreeMap::new(),
            checked: BTreeMap::new(),
            failed: BTreeSet::new(),
        }
    }

    /// Add a block; if the name is taken, the span of the first definition.
    pub fn declare(&mut self, block: &'a ast::Block) -> Option<Span> {
        match self.declared.get(block.name.name.as_str()) {
            Some(first) => Some(first.name.span),
            None => {
                self.declared.insert(&block.name.name, block);
                None
            }
        }
    }

    pub fn blocks(&self) -> impl Iterator<Item = &'a ast::Block> + '_ {
        self.declared.values().copied()
    }

    pub fn declared(&self, name: &str) -> Option<&'a ast::Block> {
        self.declared.get(name).copied()
    }

    pub fn done(&mut self, block: &ast::Block, spec: Spec) {
        let name = block.name.name.clone();
        // Runtime errors point at the block's header, `KIND NAME`.
        let span = Span::new(block.kind.span.start, block.name.span.end);
        self.checked.insert(name.clone(), spec::Block { name, span, spec });
    }

    pub fn skip(&mut self, block: &ast::Block) {
        self.failed.insert(block.name.name.clone());
    }

    pub fn failed(&self, name: &str) -> bool {
        self.failed.contains(name)
    }

    pub fn spec(&self, name: &str) -> Option<&Spec> {
        self.checked.get(name).map(|b| &b.spec)
    }

    /// The checked blocks in the order of the file.
    pub fn into_checked(mut self, file: &ast::File) -> Vec<spec::Block> {
        file.blocks.iter().filter_map(|b| self.checked.remove(&b.name.name)).collect()
    }

    /// A reference to a block producing one of `want`. Undefined names and
    /// wrong types are reported; a reference to a block that failed its own
    /// check gives `None` silently.
    pub fn reference(
        &self,
        key: &str,
        v: &'a Value,
        want: &[Type],
        errors: &mut Errors,
    ) -> Option<&'a str> {
        let ValueKind::Word(name) = &v.kind else {
            let expected = want.iter().map(|t| t.describe()).collect::<Vec<_>>().join(" or ");
            errors.push(wrong_type(key, v, &format!("the name of a block ({expected})"), "net"));
            return None;
        };
        self.resolve(key, name, v.span, want, errors)
    }

    fn resolve(
        &self,
        key: &str,
        name: &str,
        span: Span,
        want: &[Type],
        errors: &mut Errors,
    ) -> Option<&'a str> {
        let Some(block) = self.declared(name) else {
            let fitting: Vec<&str> = self
                .declared
                .iter()
                .filter(|(_, b)| want.contains(&Type::of_kind(&b.kind.name)))
                .map(|(n, _)| *n)
                .collect();
            errors.push(CheckError::UndefinedBlock {
                span,
                name: name.to_string(),
                suggestion: closest(name, fitting.iter().copied()),
                known: list_words(fitting),
            });
            return None;
        };
        let found = Type::of_kind(&block.kind.name);
        if !want.contains(&found) {
            let expected = want.iter().map(|t| t.describe()).collect::<Vec<_>>().join(" or ");
            let kinds: Vec<&str> = super::KINDS[1..]
                .iter()
                .copied()
                .filter(|k| want.contains(&Type::of_kind(k)))
                .collect();
            errors.push(CheckError::WrongReference {
                span,
                key: key.to_string(),
                name: name.to_string(),
                expected: expected.clone(),
                found: format!("{} (a `{}` block)", found.describe(), block.kind.name),
                help: format!("`{key}` takes the name of a {} block", kinds.join(" or ")),
            });
            return None;
        }
        if self.checked.contains_key(name) {
            Some(block.name.name.as_str())
        } else {
            None
        }
    }

    /// A dataset split: `digits` (then `default` is the split) or
    /// `digits.test`.
    pub fn data_ref(
        &self,
        key: &str,
        v: &'a Value,
        default: Split,
        errors: &mut Errors,
    ) -> Option<DataRef> {
        match &v.kind {
            ValueKind::Word(_) => {
                let block = self.reference(key, v, &[Type::Dataset], errors)?;
                Some(DataRef { block: block.to_string(), split: default })
            }
            ValueKind::Path(parts) if parts.len() == 2 => {
                let block =
                    self.resolve(key, &parts[0].name, parts[0].span, &[Type::Dataset], errors);
                let split = match parts[1].name.as_str() {
                    "train" => Some(Split::Train),
                    "val" => Some(Split::Val),
                    "test" => Some(Split::Test),
                    other => {
                        let splits = ["train", "val", "test"];
                        errors.push(CheckError::UnknownOption {
                            span: parts[1].span,
                            what: "split".into(),
                            word: other.to_string(),
                            suggestion: closest(other, splits),
                            known: list_words(splits),
                        });
                        None
                    }
                };
                Some(DataRef { block: block?.to_string(), split: split? })
            }
            _ => {
                let expected = "a dataset or one of its splits";
                errors.push(wrong_type(key, v, expected, &format!("{key} = digits.test")));
                None
            }
        }
    }

    /// Report a dataset split that holds no samples where samples are
    /// needed; `at` is the value that names it.
    pub fn require_samples(&self, data: &DataRef, at: &Value, errors: &mut Errors) -> Option<()> {
        let Some(Spec::Data(d)) = self.spec(&data.block) else { return None };
        let counts = crate::data::split_counts(d.shape.samples, d.split);
        let index = match data.split {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test => 2,
        };
        if counts[index] > 0 {
            return Some(());
        }
        errors.push(CheckError::EmptySplit {
            span: at.span,
            split: data.split.name().to_string(),
            data: data.block.clone(),
        });
        None
    }

    /// The architecture of the weights a block produces, if it has one.
    pub fn arch(&self, name: &str) -> Option<&Arch> {
        match self.spec(name)? {
            Spec::Model(m) => Some(&m.arch),
            Spec::Load(l) => l.arch.as_ref(),
            Spec::Train(t) => Some(&t.arch),
            Spec::Search(s) => Some(&s.train.arch),
            Spec::Prune(p) => self.arch(&p.from),
            Spec::Quantize(q) => self.arch(&q.from),
            _ => None,
        }
    }

    /// The tensors of the weights a block produces, as far as they are
    /// known before running.
    pub fn tensors(&self, name: &str) -> Vec<TensorInfo> {
        match (self.arch(name), self.spec(name)) {
            (_, Some(Spec::Load(l))) => l.tensors.clone(),
            (Some(arch), _) => arch
                .params()
                .into_iter()
                .map(|(name, shape)| TensorInfo { name, dtype: "F32".into(), shape })
                .collect(),
            _ => vec![],
        }
    }

    /// The data of the training that produced a block's weights, followed
    /// back through searches, prunes and quantizations.
    pub fn train_data(&self, name: &str) -> Option<&spec::DataRef> {
        match self.spec(name)? {
            Spec::Train(t) => Some(&t.data),
            Spec::Search(s) => Some(&s.train.data),
            Spec::Prune(p) => self.train_data(&p.from),
            Spec::Quantize(q) => self.train_data(&q.from),
            _ => None,
        }
    }

    /// The training settings that produced a block's weights, followed
    /// back through searches, prunes and quantizations.
    pub fn train_settings(&self, name: &str) -> Option<&spec::TrainSettings> {
        match self.spec(name)? {
            Spec::Train(t) => Some(&t.settings),
            Spec::Search(s) => Some(&s.train.settings),
            Spec::Prune(p) => self.train_settings(&p.from),
            Spec::Quantize(q) => self.train_settings(&q.from),
            _ => None,
        }
    }
}

/// The blocks a block refers to, with the span of each reference, from the
/// settings that hold references in its kind.
pub(crate) fn references(block: &ast::Block) -> Vec<(&str, Span)> {
    let keys: &[&str] = match block.kind.name.as_str() {
        "model" => &["input"],
        "load" => &["model"],
        "train" => &["model", "data"],
        "search" => &["train"],
        "prune" | "quantize" | "save" => &["from", "finetune"],
        "eval" => &["models", "data"],
        _ => &[],
    };
    let mut out = Vec::new();
    for s in block.settings.iter().filter(|s| keys.contains(&s.key.name.as_str())) {
        collect_names(&s.value, s.key.name == "finetune", &mut out);
    }
    out
}

fn collect_names<'a>(v: &'a Value, in_finetune: bool, out: &mut Vec<(&'a str, Span)>) {
    match &v.kind {
        ValueKind::Word(w) if !in_finetune => out.push((w, v.span)),
        ValueKind::Path(parts) if !in_finetune => out.push((&parts[0].name, parts[0].span)),
        ValueKind::List(items) => items.iter().for_each(|i| collect_names(i, in_finetune, out)),
        // Inside `finetune = train(...)` only the `data` argument refers to a
        // block; the other arguments are options such as `sgd`.
        ValueKind::Call(call) if in_finetune => {
            for (key, value) in &call.named {
                if key.name == "data" {
                    collect_names(value, false, out);
                }
            }
        }
        _ => {}
    }
}

/// Report every cycle once and return the blocks on cycles.
pub(crate) fn cycles(
    deps: &BTreeMap<&str, Vec<(&str, Span)>>,
    errors: &mut Errors,
) -> BTreeSet<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = deps.keys().map(|k| (*k, Mark::New)).collect();
    let mut on_cycle = BTreeSet::new();

    // An explicit stack instead of recursion: a long chain of blocks must
    // not overflow the stack.
    for &root in deps.keys() {
        if marks[root] != Mark::New {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        marks.insert(root, Mark::Active);
        while let Some((node, next)) = stack.last().copied() {
            let edges = &deps[node];
            if next == edges.len() {
                marks.insert(node, Mark::Done);
                stack.pop();
                continue;
            }
            stack.last_mut().expect("the stack is not empty").1 += 1;
            let (target, span) = edges[next];
            match marks.get(target).copied() {
                Some(Mark::New) => {
                    marks.insert(target, Mark::Active);
                    stack.push((target, 0));
                }
                Some(Mark::Active) => {
                    let start = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                    let mut path: Vec<&str> = stack[start..].iter().map(|(n, _)| *n).collect();
                    on_cycle.extend(path.iter().map(|n| n.to_string()));
                    path.push(target);
                    errors.push(CheckError::Cycle { span, path: path.join(" -> ") });
                }
                _ => {}
            }
        }
    }
    on_cycle
}

/// The blocks in an order where each comes after the blocks it reads; ties
/// go by position in the file. Blocks on cycles are left out.
pub(crate) fn dependency_order<'a>(
    env: &Env<'a>,
    deps: &BTreeMap<&str, Vec<(&str, Span)>>,
    in_cycle: &BTreeSet<String>,
) -> Vec<&'a ast::Block> {
    let mut blocks: Vec<&ast::Block> =
        env.blocks().filter(|b| !in_cycle.contains(&b.name.name)).collect();
    blocks.sort_by_key(|b| b.span.start);
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < blocks.len() {
        let before = order.len();
        for b in &blocks {
            let name = b.name.name.as_str();
            if placed.contains(name) {
                continue;
            }
            let ready = deps[name].iter().all(|(d, _)| {
                placed.contains(d) || env.declared(d).is_none() || in_cycle.contains(*d)
            });
            if ready {
                placed.insert(name);
                order.push(*b);
            }
        }
        if order.len() == before {
            // Only blocks that depend on a cycle are left; they are skipped.
            break;
        }
    }
    order
}
