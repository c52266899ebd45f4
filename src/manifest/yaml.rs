//! A YAML stream parsed into nodes that know their exact byte positions.
//!
//! This module owns the read side of format-preserving editing: it turns the
//! events of `saphyr-parser` into a tree of [`Node`]s whose spans are byte
//! offsets into the original text (the parser reports character indexes; the
//! conversion happens here, once, so that non-ASCII comments before a node do
//! not shift an edit). It also resolves a node into a plain [`Value`]
//! (aliases expanded, merge keys applied, scalars typed by the YAML 1.2 core
//! schema) for reading fields and for verifying edits.
//!
//! It knows nothing of Kubernetes or CloudNativePG.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::ManifestError;

/// A parsed YAML stream: the documents of one file.
#[derive(Debug, Clone)]
pub struct Stream {
    pub docs: Vec<Node>,
    /// Anchor names by the parser's anchor id.
    pub anchor_names: HashMap<usize, String>,
}

/// One node with its byte positions.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    /// Where the node's text begins, including a leading anchor or tag.
    pub start: usize,
    /// Where the value itself begins (after `&anchor` and `!tag`).
    pub value_start: usize,
    /// One past the last byte of the node's content (never trailing comments
    /// or blank lines).
    pub end: usize,
    /// The parser's anchor id (0: none).
    pub anchor_id: usize,
    /// Whether a collection is written in flow style (`{}` / `[]`).
    pub flow: bool,
    /// Whether the node carries a tag (then edits to it are refused).
    pub tagged: bool,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Scalar { value: String, style: ScalarStyle },
    Mapping(Vec<Entry>),
    Sequence(Vec<Node>),
    Alias { id: usize, name: String },
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Node,
    pub value: Node,
    /// Byte position of the `:` indicator, when it could be located.
    pub colon: Option<usize>,
}

/// A resolved YAML value: aliases expanded, merge keys applied, scalars typed.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(String),
    Str(String),
    Seq(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// As JSON (mapping keys as strings; a float that JSON cannot hold is
    /// null), for handing a manifest to serde types.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => i64::try_from(*i)
                .map(J::from)
                .unwrap_or_else(|_| J::String(i.to_string())),
            Value::Float(f) => f
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Value::Str(s) => s.clone(),
                            other => other.to_json().to_string(),
                        };
                        (key, v.to_json())
                    })
                    .collect(),
            ),
        }
    }
}

impl PartialEq for Value {
    /// Mappings compare as unordered sets of entries (YAML semantics); all
    /// else compares structurally.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Seq(a), Value::Seq(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(k, v)| {
                        b.iter()
                            .find(|(k2, _)| k2 == k)
                            .is_some_and(|(_, v2)| v2 == v)
                    })
            }
            _ => false,
        }
    }
}

impl Value {
    /// The value under a string key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a dotted path of mapping keys.
    pub fn path(&self, path: &[&str]) -> Option<&Value> {
        path.iter().try_fold(self, |v, k| v.get(k))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// Sets (or adds, at the end) a string key of a mapping.
    pub fn set(&mut self, key: &str, value: Value) {
        if let Value::Map(entries) = self {
            if let Some(slot) = entries
                .iter_mut()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            {
                slot.1 = value;
            } else {
                entries.push((Value::Str(key.to_string()), value));
            }
        }
    }

    /// Removes a string key of a mapping.
    pub fn remove(&mut self, key: &str) {
        if let Value::Map(entries) = self {
            entries.retain(|(k, _)| !matches!(k, Value::Str(s) if s == key));
        }
    }

    /// A short rendering for messages: the type for collections, the text for
    /// scalars.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.clone(),
            Value::Str(s) => format!("{s:?}"),
            Value::Seq(_) => "a sequence".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
}

/// Types a plain scalar by the YAML 1.2 core schema.
pub fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Value::Float(s.to_string()),
        _ => {}
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i128::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i128::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = s.parse::<i128>()
    {
        return Value::Int(i);
    }
    if is_core_float(s) {
        return Value::Float(s.to_string());
    }
    Value::Str(s.to_string())
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_core_float(s: &str) -> bool {
    let b = s.strip_prefix(['-', '+']).unwrap_or(s).as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// Byte offsets of every character index (one more entry for the end).
struct Offsets(Vec<usize>);

impl Offsets {
    fn new(text: &str) -> Offsets {
        let mut v: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        v.push(text.len());
        Offsets(v)
    }
    fn byte(&self, char_index: usize) -> usize {
        self.0
            .get(char_index)
            .copied()
            .unwrap_or_else(|| *self.0.last().unwrap_or(&0))
    }
}

/// Parses a whole file into documents. Errors carry line and column.
pub fn parse(text: &str) -> Result<Stream, ManifestError> {
    let offsets = Offsets::new(text);
    let mut events = Vec::new();
    for ev in Parser::new_from_str(text) {
        match ev {
            Ok((e, span)) => events.push((e, span)),
            Err(e) => {
                return Err(ManifestError::Syntax {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                    message: e.info().to_string(),
                });
            }
        }
    }
    let mut b = Builder {
        text,
        offsets: &offsets,
        events,
        pos: 0,
        anchor_names: HashMap::new(),
    };
    let mut docs = Vec::new();
    while b.pos < b.events.len() {
        match &b.events[b.pos].0 {
            Event::DocumentStart(_) => {
                b.pos += 1;
                docs.push(b.node()?);
            }
            _ => b.pos += 1,
        }
    }
    Ok(Stream {
        docs,
        anchor_names: b.anchor_names,
    })
}

struct Builder<'a> {
    text: &'a str,
    offsets: &'a Offsets,
    events: Vec<(Event<'a>, Span)>,
    pos: usize,
    anchor_names: HashMap<usize, String>,
}

impl<'a> Builder<'a> {
    fn node(&mut self) -> Result<Node, ManifestError> {
        let Some((event, span)) = self.events.get(self.pos).cloned() else {
            return Err(ManifestError::Internal(
                "unexpected end of YAML events".into(),
            ));
        };
        self.pos += 1;
        let start = self.offsets.byte(span.start.index());
        let span_end = self.offsets.byte(span.end.index());
        match event {
            Event::Scalar(value, style, anchor_id, tag) => {
                let (value_start, anchor) = self.skip_properties(start);
                self.remember_anchor(anchor_id, anchor);
                let end = self.scalar_end(value_start, span_end, style);
                Ok(Node {
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        style,
                    },
                    start,
                    value_start,
                    end,
                    anchor_id,
                    flow: false,
                    tagged: tag.is_some(),
                })
            }
            Event::Alias(id) => {
                let name = self.text[start..span_end]
                    .trim_start_matches('*')
                    .to_string();
                Ok(Node {
                    kind: NodeKind::Alias { id, name },
                    start,
                    value_start: start,
                    end: span_end,
                    anchor_id: 0,
                    flow: false,
                    tagged: false,
                })
            }
            Event::MappingStart(anchor_id, tag) => {
                let (value_start, anchor) = self.skip_properties(start);
                self.remember_anchor(anchor_id, anchor);
                let flow = self.text[value_start..].starts_with('{');
                let mut entries = Vec::new();
                loop {
                    if matches!(self.events.get(self.pos), Some((Event::MappingEnd, _))) {
                        break;
                    }
                    let key = self.node()?;
                    let colon = self.find_colon(key.end);
                    let mut value = self.node()?;
                    if let (Some(c), NodeKind::Scalar { value: v, style }) = (colon, &value.kind)
                        && v.is_empty()
                        && *style == ScalarStyle::Plain
                        && value.end <= c
                    {
                        // An absent value (`key:`): place it right after the colon.
                        value.start = c + 1;
                        value.value_start = c + 1;
                        value.end = c + 1;
                    }
                    entries.push(Entry { key, value, colon });
                }
                let (_, end_span) = self.events[self.pos].clone();
                self.pos += 1;
                let end = if flow {
                    self.offsets.byte(end_span.end.index())
                } else {
                    entries
                        .last()
                        .map(|e| e.value.end.max(e.key.end))
                        .unwrap_or(value_start)
                };
                Ok(Node {
                    kind: NodeKind::Mapping(entries),
                    start,
                    value_start,
                    end,
                    anchor_id,
                    flow,
                    tagged: tag.is_some(),
                })
            }
            Event::SequenceStart(anchor_id, tag) => {
                let (value_start, anchor) = self.skip_properties(start);
                self.remember_anchor(anchor_id, anchor);
                let flow = self.text[value_start..].starts_with('[');
                let mut items = Vec::new();
                loop {
                    if matches!(self.events.get(self.pos), Some((Event::SequenceEnd, _))) {
                        break;
                    }
                    items.push(self.node()?);
                }
                let (_, end_span) = self.events[self.pos].clone();
                self.pos += 1;
                let end = if flow {
                    self.offsets.byte(end_span.end.index())
                } else {
                    items.last().map(|n| n.end).unwrap_or(value_start)
                };
                Ok(Node {
                    kind: NodeKind::Sequence(items),
                    start,
                    value_start,
                    end,
                    anchor_id,
                    flow,
                    tagged: tag.is_some(),
                })
            }
            other => Err(ManifestError::Internal(format!(
                "unexpected YAML event {other:?}"
            ))),
        }
    }

    fn remember_anchor(&mut self, id: usize, name: Option<String>) {
        if id != 0 {
            self.anchor_names
                .insert(id, name.unwrap_or_else(|| format!("anchor{id}")));
        }
    }

    /// Skips `&anchor` and `!tag` properties and the white space after them.
    fn skip_properties(&self, start: usize) -> (usize, Option<String>) {
        let bytes = self.text.as_bytes();
        let mut i = start;
        let mut anchor = None;
        while i < bytes.len() && (bytes[i] == b'&' || bytes[i] == b'!') {
            let tok_start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if bytes[tok_start] == b'&' {
                anchor = Some(self.text[tok_start + 1..i].to_string());
            }
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
        }
        (i, anchor)
    }

    /// The exact end of a scalar's text. The parser's span is exact for plain
    /// and double-quoted scalars but may run on over a comment (single-quoted)
    /// or over trailing blank lines (block scalars).
    fn scalar_end(&self, value_start: usize, span_end: usize, style: ScalarStyle) -> usize {
        let bytes = self.text.as_bytes();
        match style {
            ScalarStyle::SingleQuoted => {
                let mut i = value_start + 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        return i + 1;
                    }
                    i += 1;
                }
                span_end
            }
            ScalarStyle::DoubleQuoted => {
                let mut i = value_start + 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => return i + 1,
                        _ => i += 1,
                    }
                }
                span_end
            }
            _ => {
                let mut end = span_end.max(value_start);
                while end > value_start && bytes[end - 1].is_ascii_whitespace() {
                    end -= 1;
                }
                end
            }
        }
    }

    /// The `:` after a key, skipping blanks.
    fn find_colon(&self, key_end: usize) -> Option<usize> {
        let bytes = self.text.as_bytes();
        let mut i = key_end;
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        (bytes.get(i) == Some(&b':')).then_some(i)
    }
}

impl Node {
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.kind {
            NodeKind::Mapping(e) => Some(e),
            _ => None,
        }
    }

    pub fn items(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Sequence(i) => Some(i),
            _ => None,
        }
    }

    /// The scalar text of a key node.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The own (not merged) entry of a mapping under a string key.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key.scalar() == Some(key))
    }

    pub fn is_alias(&self) -> bool {
        matches!(self.kind, NodeKind::Alias { .. })
    }

    /// Every node below (and including) this one, depth first.
    pub fn walk<'n>(&'n self, out: &mut Vec<&'n Node>) {
        out.push(self);
        match &self.kind {
            NodeKind::Mapping(entries) => {
                for e in entries {
                    e.key.walk(out);
                    e.value.walk(out);
                }
            }
            NodeKind::Sequence(items) => {
                for i in items {
                    i.walk(out);
                }
            }
            _ => {}
        }
    }
}

/// Turns nodes into values, expanding aliases in document order.
pub struct Resolver {
    anchors: HashMap<usize, Value>,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver {
            anchors: HashMap::new(),
        }
    }

    /// Resolves every document of a stream.
    pub fn stream(stream: &Stream) -> Vec<Value> {
        let mut r = Resolver::new();
        stream.docs.iter().map(|d| r.value(d)).collect()
    }

    /// Resolves one document on its own (anchors of other documents do not
    /// reach it, as in YAML).
    pub fn document(doc: &Node) -> Value {
        Resolver::new().value(doc)
    }

    pub fn value(&mut self, node: &Node) -> Value {
        let v = match &node.kind {
            NodeKind::Scalar { value, style } => {
                if *style == ScalarStyle::Plain && !node.tagged {
                    resolve_plain(value)
                } else {
                    Value::Str(value.clone())
                }
            }
            NodeKind::Alias { id, .. } => self.anchors.get(id).cloned().unwrap_or(Value::Null),
            NodeKind::Sequence(items) => Value::Seq(items.iter().map(|i| self.value(i)).collect()),
            NodeKind::Mapping(entries) => {
                let mut own: Vec<(Value, Value)> = Vec::new();
                let mut merged: Vec<Value> = Vec::new();
                for e in entries {
                    let k = self.value(&e.key);
                    let v = self.value(&e.value);
                    if matches!(&e.key.kind, NodeKind::Scalar { value, style } if value == "<<" && *style == ScalarStyle::Plain)
                    {
                        merged.push(v);
                    } else {
                        own.push((k, v));
                    }
                }
                merge_into(&mut own, merged);
                Value::Map(own)
            }
        };
        if node.anchor_id != 0 {
            self.anchors.insert(node.anchor_id, v.clone());
        }
        v
    }
}

/// Applies `<<` merge sources: keys already present win.
pub fn merge_into(own: &mut Vec<(Value, Value)>, merged: Vec<Value>) {
    let sources: Vec<Value> = merged
        .into_iter()
        .flat_map(|m| match m {
            Value::Seq(items) => items,
            other => vec![other],
        })
        .collect();
    for src in sources {
        if let Value::Map(entries) = src {
            for (k, v) in entries {
                if !own.iter().any(|(k2, _)| *k2 == k) {
                    own.push((k, v));
                }
            }
        }
    }
}

/// Line (1-based) and column (1-based, in characters) of a byte offset.
pub fn line_col(text: &str, byte: usize) -> (usize, usize) {
    let before = &text[..byte.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        parse(text).unwrap().docs.remove(0)
    }

    #[test]
    fn spans_are_bytes_after_non_ascii() {
        let text = "# 日本語のコメント\na: 'x' # c\nb: \"y\"\n";
        let d = doc(text);
        let a = d.entry("a").unwrap();
        assert_eq!(&text[a.value.start..a.value.end], "'x'");
        let b = d.entry("b").unwrap();
        assert_eq!(&text[b.value.start..b.value.end], "\"y\"");
    }

    #[test]
    fn block_scalar_end_excludes_blank_lines() {
        let text = "a: |\n  x\n  y\n\n# c\nb: 1\n";
        let d = doc(text);
        let a = d.entry("a").unwrap();
        assert!(text[..a.value.end].ends_with("  y"));
    }

    #[test]
    fn empty_value_sits_after_colon() {
        let text = "a:\nb: 1\n";
        let d = doc(text);
        let a = d.entry("a").unwrap();
        assert_eq!(a.value.end, 2);
        assert_eq!(d.end, text.len() - 1);
    }

    #[test]
    fn anchors_aliases_and_merges_resolve() {
        let text = "a: &x {k: 1, s: old}\nb: *x\nc:\n  <<: *x\n  s: new\n";
        let v = Resolver::document(&doc(text));
        assert_eq!(v.path(&["b", "k"]), Some(&Value::Int(1)));
        assert_eq!(v.path(&["c", "s"]), Some(&Value::Str("new".into())));
        assert_eq!(v.path(&["c", "k"]), Some(&Value::Int(1)));
        let s = parse(text).unwrap();
        assert_eq!(
            s.anchor_names.values().next().map(String::as_str),
            Some("x")
        );
    }

    #[test]
    fn core_schema_typing() {
        assert_eq!(resolve_plain("12"), Value::Int(12));
        assert_eq!(resolve_plain("1.5e3"), Value::Float("1.5e3".into()));
        assert_eq!(resolve_plain("~"), Value::Null);
        assert_eq!(resolve_plain("yes"), Value::Str("yes".into()));
        assert_eq!(resolve_plain("${APP}"), Value::Str("${APP}".into()));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = parse("a: [1\nb: 2\n").unwrap_err();
        assert!(
            matches!(err, ManifestError::Syntax { line: 2, .. }),
            "{err:?}"
        );
    }
}
