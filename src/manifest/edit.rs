//! Format-preserving edits of one YAML document, verified after the fact.
//!
//! An edit is a set of byte splices into the original text plus the change
//! it is meant to make to the document's value. [`DocEditor::finish`] applies
//! the splices, re-parses the result and requires every document to equal
//! the old one with exactly the intended change applied; otherwise it fails
//! and nothing is written. Bytes outside the splices are never touched, so
//! comments, quoting, key order, blank lines, `---` separators and CRLF line
//! ends survive by construction.
//!
//! New text is rendered in the file's own style: its line ending, its
//! indentation step and its sequence style (`- ` indented under the key or
//! not). A flow collection receives flow text.

use super::ManifestError;
use super::yaml::{self, Entry, Node, NodeKind, Resolver, Stream, Value};

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    pub fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

/// A dotted rendering of a path, for messages: `spec.externalClusters[0].name`.
pub fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// New content to render into the file.
#[derive(Debug, Clone)]
pub enum Out {
    /// A string scalar; quoted when a plain scalar would read differently.
    Str(String),
    /// Text written verbatim (an alias `*name`, or a slice of the original
    /// file) with the value it stands for.
    Raw {
        text: String,
        value: Value,
    },
    Map(Vec<(String, Out)>),
    Seq(Vec<Out>),
}

impl Out {
    pub fn map(entries: Vec<(&str, Out)>) -> Out {
        Out::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    pub fn str(s: &str) -> Out {
        Out::Str(s.to_string())
    }

    /// The value the rendered text must parse back to.
    pub fn value(&self) -> Value {
        match self {
            Out::Str(s) => Value::Str(s.clone()),
            Out::Raw { value, .. } => value.clone(),
            Out::Seq(items) => Value::Seq(items.iter().map(Out::value).collect()),
            Out::Map(entries) => {
                let mut own = Vec::new();
                let mut merged = Vec::new();
                for (k, v) in entries {
                    if k == "<<" {
                        merged.push(v.value());
                    } else {
                        own.push((Value::Str(k.clone()), v.value()));
                    }
                }
                yaml::merge_into(&mut own, merged);
                Value::Map(own)
            }
        }
    }

    /// Converts a resolved value back into renderable content.
    pub fn from_value(v: &Value) -> Out {
        match v {
            Value::Str(s) => Out::Str(s.clone()),
            Value::Seq(items) => Out::Seq(items.iter().map(Out::from_value).collect()),
            Value::Map(entries) => Out::Map(
                entries
                    .iter()
                    .map(|(k, v)| (scalar_key(k), Out::from_value(v)))
                    .collect(),
            ),
            other => Out::Raw {
                text: match other {
                    Value::Null => "null".into(),
                    Value::Bool(b) => b.to_string(),
                    Value::Int(i) => i.to_string(),
                    Value::Float(f) => f.clone(),
                    _ => unreachable!("collections and strings handled above"),
                },
                value: other.clone(),
            },
        }
    }
}

fn scalar_key(k: &Value) -> String {
    match k {
        Value::Str(s) => s.clone(),
        other => other.describe(),
    }
}

/// What a verified edit must do to the document's value.
#[derive(Debug, Clone)]
enum Op {
    Set(Vec<Seg>, Value),
    Remove(Vec<Seg>),
    /// The key `old` of the mapping at the path becomes `new`, in place.
    Rename(Vec<Seg>, String, String),
}

#[derive(Debug, Clone)]
struct Splice {
    start: usize,
    end: usize,
    text: String,
    /// Among insertions at one point, the deeper one (larger column) goes
    /// first: it closes the inner collection before the outer one goes on.
    depth: usize,
}

/// Edits one document of a file.
pub struct DocEditor<'t> {
    text: &'t str,
    stream: Stream,
    doc: usize,
    nl: &'static str,
    step: usize,
    seq_indent: usize,
    splices: Vec<Splice>,
    ops: Vec<Op>,
}

impl<'t> DocEditor<'t> {
    pub fn new(text: &'t str, stream: Stream, doc: usize) -> DocEditor<'t> {
        let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
        let (step, seq_indent) = detect_style(text, &stream.docs[doc]);
        DocEditor {
            text,
            stream,
            doc,
            nl,
            step,
            seq_indent,
            splices: Vec::new(),
            ops: Vec::new(),
        }
    }

    pub fn root(&self) -> &Node {
        &self.stream.docs[self.doc]
    }

    /// The resolved value of the document being edited (before any edit).
    pub fn value(&self) -> Value {
        Resolver::document(self.root())
    }

    /// Finds a node by path through own entries, refusing to pass an alias.
    pub fn locate(&self, path: &[Seg]) -> Result<Option<&Node>, ManifestError> {
        let mut node = self.root();
        for (i, seg) in path.iter().enumerate() {
            if let NodeKind::Alias { name, .. } = &node.kind {
                return Err(ManifestError::ThroughAlias {
                    path: path_string(&path[..i]),
                    alias: name.clone(),
                });
            }
            let next = match seg {
                Seg::Key(k) => node.entry(k).map(|e| &e.value),
                Seg::Index(idx) => node.items().and_then(|items| items.get(*idx)),
            };
            match next {
                Some(n) => node = n,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    fn locate_mapping(&self, path: &[Seg]) -> Result<&Node, ManifestError> {
        match self.locate(path)? {
            Some(n) if n.entries().is_some() => Ok(n),
            Some(n) if n.is_alias() => Err(ManifestError::ThroughAlias {
                path: path_string(path),
                alias: alias_name(n),
            }),
            Some(_) => Err(ManifestError::Shape {
                path: path_string(path),
                expected: "a mapping".into(),
            }),
            None => Err(ManifestError::Shape {
                path: path_string(path),
                expected: "a mapping (it is missing)".into(),
            }),
        }
    }

    fn entry_of<'s>(
        &'s self,
        map: &'s Node,
        key: &str,
        path: &[Seg],
    ) -> Result<&'s Entry, ManifestError> {
        map.entry(key).ok_or_else(|| ManifestError::Shape {
            path: path_string(&with(path, Seg::key(key))),
            expected: "an existing key".into(),
        })
    }

    /// Sets `path.key` to a string scalar: replaces the value in place
    /// (keeping an unused anchor), or adds the key when it is missing.
    pub fn set_scalar(&mut self, path: &[Seg], key: &str, new: &str) -> Result<(), ManifestError> {
        let map = self.locate_mapping(path)?;
        let Some(entry) = map.entry(key) else {
            return self.insert_entry(path, key, Out::str(new));
        };
        let node = &entry.value;
        let flow = map.flow;
        let (start, end) = match &node.kind {
            NodeKind::Scalar { .. } | NodeKind::Alias { .. } => {
                self.check_anchor_unused(node, &with(path, Seg::key(key)))?;
                if node.is_alias() {
                    (node.start, node.end)
                } else {
                    (node.value_start, node.end)
                }
            }
            _ => {
                return Err(ManifestError::Shape {
                    path: path_string(&with(path, Seg::key(key))),
                    expected: "a scalar".into(),
                });
            }
        };
        let text = scalar_text(new, flow);
        // An absent value (`key:`) needs a space after the colon.
        let text = if start == end && self.text[..start].ends_with(':') {
            format!(" {text}")
        } else {
            text
        };
        self.splices.push(Splice {
            start,
            end,
            text,
            depth: 0,
        });
        self.ops.push(Op::Set(
            with(path, Seg::key(key)),
            Value::Str(new.to_string()),
        ));
        Ok(())
    }

    /// Replaces the content of the literal block scalar `path.key` (`|` or
    /// `|-`) with `new`, keeping its header line, its indentation and the
    /// file's line endings; every other byte stays. The value becomes `new`
    /// as the scalar's chomping gives it back (`|`: one final line break,
    /// `|-`: none); `|+` and folded (`>`) scalars are refused.
    pub fn replace_block_scalar(
        &mut self,
        path: &[Seg],
        key: &str,
        new: &str,
    ) -> Result<(), ManifestError> {
        let map = self.locate_mapping(path)?;
        let entry = self.entry_of(map, key, path)?;
        let node = &entry.value;
        let full = with(path, Seg::key(key));
        let shape = |expected: &str| ManifestError::Shape {
            path: path_string(&full),
            expected: expected.into(),
        };
        if !matches!(
            &node.kind,
            NodeKind::Scalar {
                style: saphyr_parser::ScalarStyle::Literal,
                ..
            }
        ) {
            return Err(shape("a literal block scalar (`|` or `|-`)"));
        }
        self.check_anchor_unused(node, &full)?;
        // The parser's span starts at the content; the header (`|-`, maybe
        // a comment) is the rest of the key's line.
        let after_key = entry.colon.map(|c| c + 1).unwrap_or(entry.key.end);
        let header_end = self.text[after_key..]
            .find('\n')
            .map(|i| after_key + i + 1)
            .filter(|e| *e <= node.value_start)
            .ok_or_else(|| shape("a block scalar with content lines"))?;
        let header = self.text[after_key..header_end].trim();
        let indicator: String = header
            .split('#')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let strip = match indicator
            .trim_start_matches('|')
            .trim_matches(|c: char| c.is_ascii_digit())
        {
            "" => false,
            "-" => true,
            _ => return Err(shape("a block scalar kept as `|` or `|-` (not `|+`)")),
        };
        // The content's indentation: that of its first non-blank line.
        let content = &self.text[header_end..node.end.max(header_end)];
        let indent = content
            .split('\n')
            .find(|l| !l.trim().is_empty())
            .map(indent)
            .filter(|n| *n > 0)
            .unwrap_or(self.col(entry.key.start) + self.step);
        let body = new.strip_suffix('\n').unwrap_or(new);
        let mut text = String::new();
        for (i, line) in body.split('\n').enumerate() {
            if i > 0 {
                text.push_str(self.nl);
            }
            let line = line.strip_suffix('\r').unwrap_or(line);
            if !line.is_empty() {
                text.push_str(&" ".repeat(indent));
                text.push_str(line);
            }
        }
        let value = if strip {
            body.to_string()
        } else {
            format!("{body}\n")
        };
        let mut end = node.end.max(header_end);
        // `node.end` stops after the last content character, before its
        // line break, and before trailing blanks on that line (which are
        // content of a literal scalar): the splice takes them too.
        let blanks = self.text[end..]
            .find(|c: char| c != ' ' && c != '\t')
            .unwrap_or(self.text.len() - end);
        if self.text[end + blanks..].is_empty()
            || self.text[end + blanks..].starts_with(['\r', '\n'])
        {
            end += blanks;
        }
        self.splices.push(Splice {
            start: header_end,
            end,
            text,
            depth: 0,
        });
        self.ops.push(Op::Set(full, Value::Str(value)));
        Ok(())
    }

    /// Replaces the entry `path.old_key` (key and value) with `new_key: out`,
    /// at the same place.
    pub fn replace_entry(
        &mut self,
        path: &[Seg],
        old_key: &str,
        new_key: &str,
        out: Out,
    ) -> Result<(), ManifestError> {
        let map = self.locate_mapping(path)?;
        let entry = self.entry_of(map, old_key, path)?;
        self.check_anchor_unused(&entry.value, &with(path, Seg::key(old_key)))?;
        let col = self.col(entry.key.start);
        let (start, mut end) = (entry.key.start, entry.value.end.max(entry.key.end));
        let text = if map.flow {
            format!("{new_key}: {}", render_flow(&out))
        } else {
            // The end-of-line comment of the replaced entry goes with it.
            end = self.line_end(end);
            self.render_entry(new_key, &out, col)
        };
        self.splices.push(Splice {
            start,
            end,
            text,
            depth: 0,
        });
        self.ops.push(Op::Remove(with(path, Seg::key(old_key))));
        self.ops
            .push(Op::Set(with(path, Seg::key(new_key)), out.value()));
        Ok(())
    }

    /// Replaces the entry `path.old_key` with `raw`, the text of a whole
    /// entry taken from another version of the file (key column `raw_col`),
    /// re-indented to the column of the entry it replaces.
    pub fn replace_entry_raw(
        &mut self,
        path: &[Seg],
        old_key: &str,
        raw: &str,
        raw_col: usize,
        value: Value,
        new_key: &str,
    ) -> Result<(), ManifestError> {
        let map = self.locate_mapping(path)?;
        if map.flow {
            return self.replace_entry(path, old_key, new_key, Out::from_value(&value));
        }
        let entry = self.entry_of(map, old_key, path)?;
        self.check_anchor_unused(&entry.value, &with(path, Seg::key(old_key)))?;
        let col = self.col(entry.key.start);
        let start = entry.key.start;
        let end = self.line_end(entry.value.end.max(entry.key.end));
        let mut text = String::new();
        for (i, line) in raw.split(self.nl).enumerate() {
            if i > 0 {
                text.push_str(self.nl);
                if col >= raw_col {
                    text.push_str(&" ".repeat(col - raw_col));
                    text.push_str(line);
                } else {
                    let strip = indent(line);
                    text.push_str(&line[strip.min(raw_col - col)..]);
                }
            } else {
                text.push_str(line);
            }
        }
        self.splices.push(Splice {
            start,
            end,
            text,
            depth: 0,
        });
        self.ops.push(Op::Remove(with(path, Seg::key(old_key))));
        self.ops.push(Op::Set(with(path, Seg::key(new_key)), value));
        Ok(())
    }

    /// Replaces the value of `path.key` with `out`, keeping the key.
    pub fn replace_value(
        &mut self,
        path: &[Seg],
        key: &str,
        out: Out,
    ) -> Result<(), ManifestError> {
        let map = self.locate_mapping(path)?;
        let entry = self.entry_of(map, key, path)?;
        let value = &entry.value;
        self.check_anchor_unused(value, &with(path, Seg::key(key)))?;
        let Some(colon) = entry.colon else {
            return Err(ManifestError::Shape {
                path: path_string(&with(path, Seg::key(key))),
                expected: "a simple `key: value` entry".into(),
            });
        };
        let col = self.col(entry.key.start);
        let start = colon + 1;
        let (end, text) = if map.flow {
            (value.end.max(start), format!(" {}", render_flow(&out)))
        } else {
            let end = if value.start == value.end {
                start
            } else {
                value.end
            };
            // A value that becomes a block takes its end-of-line comment with it.
            let block = matches!(&out, Out::Map(e) if !e.is_empty())
                || matches!(&out, Out::Seq(i) if !i.is_empty());
            let end = if block { self.line_end(end) } else { end };
            (end, self.render_block_value(&out, col))
        };
        self.splices.push(Splice {
            start,
            end,
            text,
            depth: 0,
        });
        self.ops
            .push(Op::Set(with(path, Seg::key(key)), out.value()));
        Ok(())
    }

    /// Adds `key: out` as the last entry of the mapping at `path`.
    pub fn insert_entry(&mut self, path: &[Seg], key: &str, out: Out) -> Result<(), ManifestError> {
        let map = self.locate_mapping(path)?;
        let entries = map.entries().unwrap_or_default();
        let splice = if map.flow {
            let close = map.end.saturating_sub(1);
            let sep = if entries.is_empty() { "" } else { ", " };
            Splice {
                start: close,
                end: close,
                text: format!("{sep}{key}: {}", render_flow(&out)),
                depth: 0,
            }
        } else {
            let Some(first) = entries.first() else {
                return Err(ManifestError::Shape {
                    path: path_string(path),
                    expected: "a non-empty mapping".into(),
                });
            };
            let col = self.col(first.key.start);
            let at = self.line_end(map.end);
            // Where the mapping's entries are set apart by blank lines, so is the new one.
            let last = entries
                .last()
                .map(|e| e.key.start)
                .unwrap_or(first.key.start);
            let spaced = entries.len() > 1 && self.blank_line_before(last);
            Splice {
                start: at,
                end: at,
                text: format!(
                    "{}{}{}{}",
                    if spaced { self.nl } else { "" },
                    self.nl,
                    " ".repeat(col),
                    self.render_entry(key, &out, col)
                ),
                depth: col,
            }
        };
        self.splices.push(splice);
        self.ops
            .push(Op::Set(with(path, Seg::key(key)), out.value()));
        Ok(())
    }

    /// Removes the entry `path.key` with its lines (block mappings only).
    pub fn remove_entry(&mut self, path: &[Seg], key: &str) -> Result<(), ManifestError> {
        self.remove_entry_lines(path, key, false)
    }

    /// [`DocEditor::remove_entry`], with the comment lines right above the
    /// key: they speak of it, and would otherwise be left speaking of the
    /// entry before.
    pub fn remove_entry_and_comments(
        &mut self,
        path: &[Seg],
        key: &str,
    ) -> Result<(), ManifestError> {
        self.remove_entry_lines(path, key, true)
    }

    fn remove_entry_lines(
        &mut self,
        path: &[Seg],
        key: &str,
        comments: bool,
    ) -> Result<(), ManifestError> {
        let map = self.locate_mapping(path)?;
        let entry = self.entry_of(map, key, path)?;
        let full = with(path, Seg::key(key));
        self.check_anchor_unused(&entry.value, &full)?;
        self.require_own_lines(map, entry, &full)?;
        let mut start = self.line_start(entry.key.start);
        if comments {
            start = self.comments_above(start, self.col(entry.key.start));
        }
        let end = self.after_line(entry.value.end.max(entry.key.end));
        // A blank line that set the entry apart goes with it when what
        // follows is the mapping's end or another blank line.
        let is_last = map
            .entries()
            .and_then(|e| e.last())
            .is_some_and(|l| l.key.start == entry.key.start);
        let next_blank = self.text[end..]
            .split('\n')
            .next()
            .is_some_and(|l| l.trim().is_empty())
            && end < self.text.len();
        if self.blank_line_before(start) && (is_last || next_blank) {
            start = self.line_start(start - 1);
        }
        self.splices.push(Splice {
            start,
            end,
            text: String::new(),
            depth: 0,
        });
        self.ops.push(Op::Remove(full));
        Ok(())
    }

    /// Renames the key `path.old` to `new`, leaving its value, the comments
    /// around it and its place as they are.
    pub fn rename_key(&mut self, path: &[Seg], old: &str, new: &str) -> Result<(), ManifestError> {
        let map = self.locate_mapping(path)?;
        let entry = self.entry_of(map, old, path)?;
        let (start, end) = (entry.key.start, entry.key.end);
        // An anchor, tag or quotes on the key would be lost.
        if self.text.get(start..end) != Some(old) {
            return Err(ManifestError::Shape {
                path: path_string(&with(path, Seg::key(old))),
                expected: "a plain key".into(),
            });
        }
        self.splices.push(Splice {
            start,
            end,
            text: scalar_text(new, map.flow),
            depth: 0,
        });
        self.ops
            .push(Op::Rename(path.to_vec(), old.to_string(), new.to_string()));
        Ok(())
    }

    /// Adds `key: out` right after the entry `path.after` of a block
    /// mapping (after its last line, end-of-line comment included).
    pub fn insert_entry_after(
        &mut self,
        path: &[Seg],
        after: &str,
        key: &str,
        out: Out,
    ) -> Result<(), ManifestError> {
        let map = self.locate_mapping(path)?;
        let entry = self.entry_of(map, after, path)?;
        self.require_own_lines(map, entry, &with(path, Seg::key(after)))?;
        let col = self.col(entry.key.start);
        let mut at = self.line_end(entry.value.end.max(entry.key.end));
        // Comment lines indented under the entry belong to it.
        loop {
            let next = self.after_line(at);
            let line = &self.text[next..self.line_end(next)];
            let depth = indent(line);
            if next >= self.text.len() || depth <= col || !line.trim_start().starts_with('#') {
                break;
            }
            at = self.line_end(next);
        }
        self.splices.push(Splice {
            start: at,
            end: at,
            text: format!(
                "{}{}{}",
                self.nl,
                " ".repeat(col),
                self.render_entry(key, &out, col)
            ),
            depth: col,
        });
        self.ops
            .push(Op::Set(with(path, Seg::key(key)), out.value()));
        Ok(())
    }

    /// Appends an item to the sequence at `path.key`, creating the key when
    /// it is missing and turning an empty `[]` into a block sequence.
    pub fn append_item(&mut self, path: &[Seg], key: &str, out: Out) -> Result<(), ManifestError> {
        let map = self.locate_mapping(path)?;
        let full = with(path, Seg::key(key));
        let Some(entry) = map.entry(key) else {
            return self.insert_entry(path, key, Out::Seq(vec![out]));
        };
        let seq = &entry.value;
        let Some(items) = seq.items() else {
            if seq.is_alias() {
                return Err(ManifestError::ThroughAlias {
                    path: path_string(&full),
                    alias: alias_name(seq),
                });
            }
            return Err(ManifestError::Shape {
                path: path_string(&full),
                expected: "a sequence".into(),
            });
        };
        let mut expected_seq = value_at(&self.value(), &full)
            .and_then(Value::as_seq)
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        expected_seq.push(out.value());
        if items.is_empty() {
            // `key: []` (or `key:` with an empty flow sequence): replace it.
            return self.replace_value(path, key, Out::Seq(vec![out]));
        }
        let splice = if seq.flow {
            let close = seq.end.saturating_sub(1);
            Splice {
                start: close,
                end: close,
                text: format!(", {}", render_flow(&out)),
                depth: 0,
            }
        } else {
            let dash = self.dash_col(&items[0]);
            let at = self.line_end(seq.end);
            Splice {
                start: at,
                end: at,
                // The item's content sits at dash + 2, deeper than its key.
                text: format!(
                    "{}{}{}",
                    self.nl,
                    " ".repeat(dash),
                    self.render_item(&out, dash)
                ),
                depth: dash + 2,
            }
        };
        self.splices.push(splice);
        self.ops.push(Op::Set(full, Value::Seq(expected_seq)));
        Ok(())
    }

    /// Replaces item `index` of the block sequence at `path` (item and its lines).
    pub fn replace_item(
        &mut self,
        path: &[Seg],
        index: usize,
        out: Out,
    ) -> Result<(), ManifestError> {
        let (item, flow) = self.item(path, index)?;
        let full = with(path, Seg::Index(index));
        self.check_anchor_unused(item, &full)?;
        let (start, end, text) = if flow {
            (item.start, item.end, render_flow(&out))
        } else {
            let dash = self.dash_col(item);
            let end = self.line_end(item.end);
            let text = self.render_item(&out, dash);
            (item.start, end, text.trim_start_matches("- ").to_string())
        };
        self.splices.push(Splice {
            start,
            end,
            text,
            depth: 0,
        });
        self.ops.push(Op::Set(full, out.value()));
        Ok(())
    }

    /// Removes item `index` of the block sequence at `path` with its lines.
    pub fn remove_item(&mut self, path: &[Seg], index: usize) -> Result<(), ManifestError> {
        let (item, flow) = self.item(path, index)?;
        let full = with(path, Seg::Index(index));
        self.check_anchor_unused(item, &full)?;
        if flow {
            return Err(ManifestError::Shape {
                path: path_string(&full),
                expected: "an item of a block sequence".into(),
            });
        }
        let start = self.line_start(item.start);
        let end = self.after_line(item.end);
        self.splices.push(Splice {
            start,
            end,
            text: String::new(),
            depth: 0,
        });
        self.ops.push(Op::Remove(full));
        Ok(())
    }

    fn item(&self, path: &[Seg], index: usize) -> Result<(&Node, bool), ManifestError> {
        let seq = self.locate(path)?.ok_or_else(|| ManifestError::Shape {
            path: path_string(path),
            expected: "a sequence (it is missing)".into(),
        })?;
        let item = seq
            .items()
            .and_then(|i| i.get(index))
            .ok_or_else(|| ManifestError::Shape {
                path: path_string(&with(path, Seg::Index(index))),
                expected: "an existing sequence item".into(),
            })?;
        Ok((item, seq.flow))
    }

    /// Applies the splices, re-parses and verifies. Returns the new text.
    pub fn finish(mut self) -> Result<String, ManifestError> {
        self.splices
            .sort_by_key(|s| (s.start, s.end, std::cmp::Reverse(s.depth)));
        for pair in self.splices.windows(2) {
            if pair[0].end > pair[1].start {
                return Err(ManifestError::Internal("overlapping edits".into()));
            }
        }
        let mut out = String::with_capacity(self.text.len() + 256);
        let mut at = 0;
        for s in &self.splices {
            out.push_str(&self.text[at..s.start]);
            out.push_str(&s.text);
            at = s.end;
        }
        out.push_str(&self.text[at..]);

        let mut expected: Vec<Value> = self.stream.docs.iter().map(Resolver::document).collect();
        for op in &self.ops {
            apply(&mut expected[self.doc], op);
        }
        let reparsed = yaml::parse(&out).map_err(|e| ManifestError::Verify {
            detail: format!("the edited text no longer parses: {e}"),
        })?;
        let actual: Vec<Value> = reparsed.docs.iter().map(Resolver::document).collect();
        if actual.len() != expected.len() {
            return Err(ManifestError::Verify {
                detail: format!("{} documents became {}", expected.len(), actual.len()),
            });
        }
        for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
            if a != e {
                let at = first_difference(e, a, &mut Vec::new()).unwrap_or_default();
                return Err(ManifestError::Verify {
                    detail: format!(
                        "document {} differs from the intended change at `{}` (an alias or merge key may carry the edit elsewhere)",
                        i + 1,
                        if at.is_empty() { "<root>".into() } else { at }
                    ),
                });
            }
        }
        Ok(out)
    }

    /// Refuses to replace or remove a node that defines an anchor some alias
    /// outside it still uses.
    fn check_anchor_unused(&self, node: &Node, path: &[Seg]) -> Result<(), ManifestError> {
        let mut inside = Vec::new();
        node.walk(&mut inside);
        let defined: Vec<usize> = inside
            .iter()
            .filter(|n| n.anchor_id != 0)
            .map(|n| n.anchor_id)
            .collect();
        if defined.is_empty() {
            return Ok(());
        }
        for d in &self.stream.docs {
            let mut all = Vec::new();
            d.walk(&mut all);
            for n in all {
                if let NodeKind::Alias { id, name } = &n.kind
                    && defined.contains(id)
                    && (n.start < node.start || n.start >= node.end)
                {
                    let (line, _) = yaml::line_col(self.text, n.start);
                    return Err(ManifestError::AnchorUsed {
                        path: path_string(path),
                        anchor: name.clone(),
                        line,
                    });
                }
            }
        }
        Ok(())
    }

    // ---- layout helpers -------------------------------------------------

    fn line_start(&self, at: usize) -> usize {
        self.text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0)
    }

    /// The end of the line holding `at`, before its line break.
    fn line_end(&self, at: usize) -> usize {
        let end = self.text[at..]
            .find('\n')
            .map(|i| at + i)
            .unwrap_or(self.text.len());
        if end > at && self.text.as_bytes()[end - 1] == b'\r' {
            end - 1
        } else {
            end
        }
    }

    /// The start of the line after the one holding `at` (or the text's end).
    fn after_line(&self, at: usize) -> usize {
        self.text[at..]
            .find('\n')
            .map(|i| at + i + 1)
            .unwrap_or(self.text.len())
    }

    /// The start of the run of full-line comments at column `col` right
    /// above the line starting at `line` (`line` itself when there is
    /// none). A comment indented deeper belongs to the entry before.
    fn comments_above(&self, line: usize, col: usize) -> usize {
        let mut start = line;
        while start > 0 {
            let prev = self.line_start(start - 1);
            let text = &self.text[prev..start];
            let depth = indent(text);
            if depth != col || !text.trim_start().starts_with('#') {
                break;
            }
            start = prev;
        }
        start
    }

    /// Whether `path.key` is written as the plain key itself (no quotes,
    /// anchor or tag on it).
    pub fn key_is_plain(&self, path: &[Seg], key: &str) -> bool {
        self.locate_mapping(path)
            .ok()
            .and_then(|m| m.entry(key))
            .is_some_and(|e| self.text.get(e.key.start..e.key.end) == Some(key))
    }

    /// Whether the line before the one holding `at` is empty.
    fn blank_line_before(&self, at: usize) -> bool {
        let ls = self.line_start(at);
        if ls == 0 {
            return false;
        }
        let prev_start = self.line_start(ls - 1);
        self.text[prev_start..ls].trim().is_empty()
    }

    /// Refuses an entry that is not a block entry on lines of its own
    /// (flow style, or sharing its line): line-wise edits cannot take it.
    fn require_own_lines(
        &self,
        map: &Node,
        entry: &Entry,
        path: &[Seg],
    ) -> Result<(), ManifestError> {
        if map.flow || !self.starts_line(entry.key.start) {
            return Err(ManifestError::Shape {
                path: path_string(path),
                expected: "a block entry on lines of its own".into(),
            });
        }
        Ok(())
    }

    fn starts_line(&self, at: usize) -> bool {
        self.text[self.line_start(at)..at]
            .bytes()
            .all(|b| b == b' ')
    }

    fn col(&self, at: usize) -> usize {
        self.text[self.line_start(at)..at].chars().count()
    }

    /// The column of the `- ` that introduces a block sequence item.
    fn dash_col(&self, item: &Node) -> usize {
        let ls = self.line_start(item.start);
        match self.text[ls..item.start].rfind('-') {
            Some(i) => self.text[ls..ls + i].chars().count(),
            None => self.col(item.start).saturating_sub(2),
        }
    }

    fn render_entry(&self, key: &str, out: &Out, col: usize) -> String {
        format!("{key}:{}", self.render_block_value(out, col))
    }

    /// What follows `key:` for a value in block context at key column `col`.
    fn render_block_value(&self, out: &Out, col: usize) -> String {
        match out {
            Out::Str(s) => format!(" {}", scalar_text(s, false)),
            Out::Raw { text, .. } => format!(" {text}"),
            Out::Map(e) if e.is_empty() => " {}".into(),
            Out::Seq(i) if i.is_empty() => " []".into(),
            Out::Map(entries) => {
                let c = col + self.step;
                entries
                    .iter()
                    .map(|(k, v)| {
                        format!("{}{}{}", self.nl, " ".repeat(c), self.render_entry(k, v, c))
                    })
                    .collect()
            }
            Out::Seq(items) => {
                let d = col + self.seq_indent;
                items
                    .iter()
                    .map(|i| format!("{}{}{}", self.nl, " ".repeat(d), self.render_item(i, d)))
                    .collect()
            }
        }
    }

    /// A sequence item whose dash sits at column `dash`, from the dash on.
    fn render_item(&self, out: &Out, dash: usize) -> String {
        let c = dash + 2;
        match out {
            Out::Map(entries) if !entries.is_empty() => {
                let mut s = String::from("- ");
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        s.push_str(self.nl);
                        s.push_str(&" ".repeat(c));
                    }
                    s.push_str(&self.render_entry(k, v, c));
                }
                s
            }
            Out::Seq(items) if !items.is_empty() => {
                let inner: Vec<String> = items.iter().map(|i| self.render_item(i, c)).collect();
                format!("- {}", inner.join(&format!("{}{}", self.nl, " ".repeat(c))))
            }
            other => format!("-{}", self.render_block_value(other, dash)),
        }
    }
}

fn with(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut v = path.to_vec();
    v.push(seg);
    v
}

/// The spaces a line starts with.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The resolved value at a path.
pub fn value_at<'v>(root: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    path.iter().try_fold(root, |v, seg| match seg {
        Seg::Key(k) => v.get(k),
        Seg::Index(i) => v.as_seq().and_then(|items| items.get(*i)),
    })
}

fn alias_name(n: &Node) -> String {
    match &n.kind {
        NodeKind::Alias { name, .. } => name.clone(),
        _ => String::new(),
    }
}

/// Applies an intended change to a resolved document.
fn apply(root: &mut Value, op: &Op) {
    let (path, last) = match op {
        Op::Rename(path, old, new) => {
            if let Some(Value::Map(entries)) = walk(root, path)
                && let Some((key, _)) = entries
                    .iter_mut()
                    .find(|(key, _)| matches!(key, Value::Str(s) if s == old))
            {
                *key = Value::Str(new.clone());
            }
            return;
        }
        Op::Set(p, _) | Op::Remove(p) => match p.split_last() {
            Some((last, path)) => (path, last),
            None => return,
        },
    };
    let Some(v) = walk(root, path) else {
        return;
    };
    match (op, last, v) {
        (Op::Set(_, new), Seg::Key(k), map @ Value::Map(_)) => map.set(k, new.clone()),
        (Op::Set(_, new), Seg::Index(i), Value::Seq(items)) => {
            if let Some(slot) = items.get_mut(*i) {
                *slot = new.clone();
            }
        }
        (Op::Remove(_), Seg::Key(k), map @ Value::Map(_)) => map.remove(k),
        (Op::Remove(_), Seg::Index(i), Value::Seq(items)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

/// The value at `path`, to change it.
fn walk<'v>(root: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    let mut v = root;
    for seg in path {
        v = match (seg, v) {
            (Seg::Key(k), Value::Map(entries)) => entries
                .iter_mut()
                .find(|(key, _)| matches!(key, Value::Str(s) if s == k))
                .map(|(_, v)| v)?,
            (Seg::Index(i), Value::Seq(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// The first path where two values differ, for the verification message.
fn first_difference(a: &Value, b: &Value, path: &mut Vec<Seg>) -> Option<String> {
    match (a, b) {
        (Value::Map(x), Value::Map(_)) => {
            for (k, v) in x {
                let key = scalar_key(k);
                match b.get(&key) {
                    Some(v2) if v2 == v => {}
                    Some(v2) => {
                        path.push(Seg::Key(key));
                        return first_difference(v, v2, path);
                    }
                    None => {
                        path.push(Seg::Key(key));
                        return Some(path_string(path));
                    }
                }
            }
            Some(path_string(path))
        }
        (Value::Seq(x), Value::Seq(y)) if x.len() == y.len() => {
            for (i, (v, v2)) in x.iter().zip(y).enumerate() {
                if v != v2 {
                    path.push(Seg::Index(i));
                    return first_difference(v, v2, path);
                }
            }
            Some(path_string(path))
        }
        _ => Some(path_string(path)),
    }
}

/// Indentation step and sequence indent, read off the document itself.
fn detect_style(text: &str, root: &Node) -> (usize, usize) {
    let col = |at: usize| {
        let ls = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
        text[ls..at].chars().count()
    };
    let mut step = None;
    let mut seq = None;
    let mut nodes = Vec::new();
    root.walk(&mut nodes);
    for n in nodes {
        if let Some(entries) = n.entries() {
            if n.flow {
                continue;
            }
            for e in entries {
                let kc = col(e.key.start);
                if e.value.flow {
                    continue;
                }
                match &e.value.kind {
                    NodeKind::Mapping(child) if step.is_none() => {
                        if let Some(c) = child.first() {
                            let cc = col(c.key.start);
                            if cc > kc
                                && text[..c.key.start].ends_with(&" ".repeat(cc - kc).to_string())
                            {
                                step = Some(cc - kc);
                            }
                        }
                    }
                    NodeKind::Sequence(items) if seq.is_none() => {
                        if let Some(first) = items.first() {
                            let ls = text[..first.start].rfind('\n').map(|i| i + 1).unwrap_or(0);
                            if let Some(d) = text[ls..first.start].rfind('-') {
                                let dc = text[ls..ls + d].chars().count();
                                seq = Some(dc.saturating_sub(kc));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if step.is_some() && seq.is_some() {
            break;
        }
    }
    let step = step.unwrap_or(2);
    (step, seq.unwrap_or(step))
}

/// A string scalar as YAML text: plain where that reads back as the same
/// string (also under YAML 1.1 rules, which Kubernetes' parser follows),
/// double-quoted otherwise.
pub fn scalar_text(s: &str, flow: bool) -> String {
    if is_plain_safe(s, flow) {
        s.to_string()
    } else {
        let mut q = String::with_capacity(s.len() + 2);
        q.push('"');
        for c in s.chars() {
            match c {
                '"' => q.push_str("\\\""),
                '\\' => q.push_str("\\\\"),
                '\n' => q.push_str("\\n"),
                '\t' => q.push_str("\\t"),
                c if c.is_control() => q.push_str(&format!("\\u{:04x}", c as u32)),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    }
}

fn is_plain_safe(s: &str, flow: bool) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !matches!(yaml::resolve_plain(s), Value::Str(_)) {
        return false;
    }
    const YAML11: &[&str] = &["y", "n", "yes", "no", "on", "off"];
    if YAML11.contains(&s.to_ascii_lowercase().as_str()) || first.is_ascii_digit() {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first.is_whitespace() || s.ends_with([' ', ':']) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.chars().any(|c| c.is_control()) {
        return false;
    }
    !(flow && s.contains([',', '[', ']', '{', '}']))
}

/// Flow-style text for content: `{a: b, c: [d]}`.
pub fn render_flow(out: &Out) -> String {
    match out {
        Out::Str(s) => scalar_text(s, true),
        Out::Raw { text, .. } => text.clone(),
        Out::Map(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{k}: {}", render_flow(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        Out::Seq(items) => {
            let inner: Vec<String> = items.iter().map(render_flow).collect();
            format!("[{}]", inner.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(
        text: &str,
        f: impl FnOnce(&mut DocEditor) -> Result<(), ManifestError>,
    ) -> Result<String, ManifestError> {
        let stream = yaml::parse(text)?;
        let mut ed = DocEditor::new(text, stream, 0);
        f(&mut ed)?;
        ed.finish()
    }

    #[test]
    fn replaces_scalar_keeping_comment() {
        let out = edit("a:\n  b: old # keep\n", |e| {
            e.set_scalar(&[Seg::key("a")], "b", "new")
        })
        .unwrap();
        assert_eq!(out, "a:\n  b: new # keep\n");
    }

    #[test]
    fn inserts_after_last_entry_and_its_comment() {
        let out = edit("a:\n    b: 1 # c\n# after\nz: 2\n", |e| {
            e.insert_entry(&[Seg::key("a")], "n", Out::str("v"))
        })
        .unwrap();
        assert_eq!(out, "a:\n    b: 1 # c\n    n: v\n# after\nz: 2\n");
    }

    #[test]
    fn flow_mapping_gets_flow_text() {
        let out = edit("a: {b: {x: 1}}\n", |e| {
            e.replace_entry(
                &[Seg::key("a")],
                "b",
                "c",
                Out::map(vec![("d", Out::str("e f"))]),
            )
        })
        .unwrap();
        assert_eq!(out, "a: {c: {d: e f}}\n");
    }

    #[test]
    fn empty_flow_seq_becomes_block() {
        let out = edit("s:\n  l: []\n", |e| {
            e.append_item(
                &[Seg::key("s")],
                "l",
                Out::map(vec![("name", Out::str("x"))]),
            )
        })
        .unwrap();
        assert_eq!(out, "s:\n  l:\n    - name: x\n");
    }

    #[test]
    fn unindented_sequence_style_is_kept() {
        let out = edit("l:\n- a: 1\n  b: 2\n", |e| {
            e.append_item(
                &[],
                "l",
                Out::map(vec![("a", Out::str("x")), ("b", Out::str("z"))]),
            )
        })
        .unwrap();
        assert_eq!(out, "l:\n- a: 1\n  b: 2\n- a: x\n  b: z\n");
    }

    #[test]
    fn refuses_alias_in_path() {
        let err = edit("a: &x {b: 1}\nc: *x\n", |e| {
            e.set_scalar(&[Seg::key("c")], "b", "2")
        })
        .unwrap_err();
        assert!(matches!(err, ManifestError::ThroughAlias { .. }), "{err}");
    }

    #[test]
    fn refuses_removing_used_anchor() {
        let err = edit("a:\n  b: &x 1\nc: *x\n", |e| {
            e.remove_entry(&[Seg::key("a")], "b")
        })
        .unwrap_err();
        assert!(matches!(err, ManifestError::AnchorUsed { .. }), "{err}");
    }

    #[test]
    fn verification_catches_change_through_anchor() {
        let err = edit("a: &x\n  b: 1\nc:\n  <<: *x\n", |e| {
            e.set_scalar(&[Seg::key("a")], "b", "2")
        })
        .unwrap_err();
        assert!(matches!(err, ManifestError::Verify { .. }), "{err}");
    }

    #[test]
    fn quoting() {
        assert_eq!(
            scalar_text("2026-11-24T09:00:00Z", false),
            "\"2026-11-24T09:00:00Z\""
        );
        assert_eq!(scalar_text("shared-pg-2", false), "shared-pg-2");
        assert_eq!(scalar_text("${APP}-pg", false), "${APP}-pg");
        assert_eq!(scalar_text("${APP}-pg", true), "\"${APP}-pg\"");
        assert_eq!(scalar_text("yes", false), "\"yes\"");
        assert_eq!(scalar_text("s3://b/cnpg/", false), "s3://b/cnpg/");
    }
}
