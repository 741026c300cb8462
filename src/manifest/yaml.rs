//! Parsing untrusted manifest YAML with bounded work.
//!
//! serde_yaml_ng drives libyaml (unsafe-libyaml), whose scanner walks its
//! stack of "simple key" candidates, one per open flow collection (`[` or
//! `{`), every time it needs the next token. A document of nested flow
//! collections (`a: [[[[...`) therefore costs time quadratic in its nesting:
//! 400 KB of `[` took minutes. serde_yaml_ng only applies its own recursion
//! limit after libyaml has turned the whole document into events, too late to
//! help. So before libyaml sees a byte, [`check_flow_depth`] bounds the flow
//! nesting with a linear pre-scan; while the events are turned into values,
//! [`parse_documents`] bounds the total nesting and rejects duplicate mapping
//! keys (which YAML parsers resolve differently, and the Kubernetes API server
//! rejects).

use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Deepest nesting accepted: of flow collections before parsing, and of all
/// collections (block and flow) while parsing. volsnap objects nest about
/// eight levels; Kubernetes manifests rarely exceed twenty.
pub const MAX_DEPTH: u32 = 64;

/// Most documents accepted in one file: bounds the work and the size of the
/// report a file full of `---` would otherwise produce.
pub const MAX_DOCUMENTS: usize = 10_000;

/// Why a manifest file could not be turned into documents.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// Flow collections nested too deep: refused before parsing.
    #[error(
        "flow collections ([...] or {{...}}) may be nested at most {limit} levels deep, but line {line} goes deeper; the file was refused unparsed (deep nesting makes YAML parsing slow)"
    )]
    TooDeep {
        /// 1-based line where the limit was exceeded.
        line: usize,
        /// The limit.
        limit: u32,
    },
    /// More than [`MAX_DOCUMENTS`] documents.
    #[error("more than {limit} documents in one file")]
    TooManyDocuments {
        /// The limit.
        limit: usize,
    },
    /// Not valid YAML, a duplicate key, or nested too deep: serde_yaml_ng's
    /// message, with the path and line where it was found.
    #[error("not valid YAML (document {doc}): {message}")]
    Invalid {
        /// 0-based index of the document in the file.
        doc: usize,
        /// What is wrong, and where.
        message: String,
    },
}

/// Parses a multi-document YAML stream into JSON values, refusing flow
/// nesting deeper than [`MAX_DEPTH`] before parsing, and any nesting deeper
/// than it, duplicate mapping keys, and more than [`MAX_DOCUMENTS`]
/// documents while parsing. An empty stream is one `Null` document.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    check_flow_depth(text)?;
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        if docs.len() == MAX_DOCUMENTS {
            return Err(YamlError::TooManyDocuments { limit: MAX_DOCUMENTS });
        }
        let doc = Node { depth: 0 }.deserialize(de);
        docs.push(doc.map_err(|e| YamlError::Invalid { doc: docs.len(), message: e.to_string() })?);
    }
    Ok(docs)
}

/// Builds a `serde_json::Value` exactly as its own `Deserialize` does, but
/// refuses duplicate mapping keys and nesting deeper than [`MAX_DEPTH`].
/// serde_yaml_ng adds the path and line to these errors.
#[derive(Clone, Copy)]
struct Node {
    depth: u32,
}

impl Node {
    fn enter<E: serde::de::Error>(self) -> Result<Node, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(Node { depth: self.depth + 1 })
    }
}

impl<'de> DeserializeSeed<'de> for Node {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Value, E> {
        match (i64::try_from(v), u64::try_from(v)) {
            (Ok(n), _) => Ok(Value::from(n)),
            (_, Ok(n)) => Ok(Value::from(n)),
            _ => Err(E::custom("number out of range")),
        }
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v).map(Value::from).map_err(|_| E::custom("number out of range"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        self.deserialize(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let top = if self.depth == 0 { " at the top level" } else { "" };
                return Err(A::Error::custom(format_args!(
                    "duplicate key {key:?}{top}: a key may appear only once in a mapping (the Kubernetes API server rejects duplicate fields, and YAML tools disagree on which value wins)"
                )));
            }
            let value = map.next_value_seed(inner)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Refuses flow nesting deeper than [`MAX_DEPTH`], in time linear in the
/// text, before libyaml sees it.
///
/// The bound must hold whatever the text: a crafted file must not hide a `[`
/// from the pre-scan that libyaml then counts. So this follows libyaml's own
/// scanner (which characters start a token, where quoted and plain scalars,
/// comments, tags, anchors, directives and block scalars end) and, where the
/// answer depends on indentation it does not track (does a plain or block
/// scalar continue on the next line?), follows every possibility at once and
/// keeps the deepest nesting each can reach. It may over-estimate (then a
/// legitimate file is refused, with a message saying why), never
/// under-estimate.
pub fn check_flow_depth(text: &str) -> Result<(), YamlError> {
    let bytes = text.as_bytes();
    let classes = classify(bytes);
    let mut configs = Configs::start();
    let mut next = Configs(Vec::new());
    let mut line = 1;
    let mut col: u32 = 0;
    for i in 0..bytes.len() {
        let class = classes[i];
        if !matches!(class, Class::BreakTail | Class::BomTail) {
            let at = At {
                byte: bytes[i],
                class,
                next_blankz: classes.get(i + 1).is_none_or(|c| c.blankz()),
                next: bytes.get(i + 1).copied().unwrap_or(0),
                col,
                marker: col == 0 && document_marker(bytes, &classes, i),
            };
            configs.step(&at, &mut next).map_err(|()| YamlError::TooDeep { line, limit: MAX_DEPTH })?;
            std::mem::swap(&mut configs, &mut next);
        }
        match class {
            Class::Break => {
                col = 0;
                if bytes[i] != b'\r' || bytes.get(i + 1) != Some(&b'\n') {
                    line += 1;
                }
            }
            Class::BreakTail | Class::BomTail | Class::Bom => {}
            _ => col = col.saturating_add(1),
        }
    }
    Ok(())
}

/// What a byte is to libyaml's scanner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// `\r`, `\n`, or the first byte of NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR.
    Break,
    /// The other bytes of a multi-byte line break: no step of their own.
    BreakTail,
    /// Space or tab.
    Blank,
    /// NUL (the end of the stream to libyaml).
    Nul,
    /// The first byte of a byte order mark (skipped at a token start).
    Bom,
    /// The other bytes of a byte order mark.
    BomTail,
    /// Anything else.
    Other,
}

impl Class {
    fn blankz(self) -> bool {
        matches!(self, Class::Break | Class::Blank | Class::Nul)
    }
}

fn classify(bytes: &[u8]) -> Vec<Class> {
    let mut out = vec![Class::Other; bytes.len()];
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let (class, len) = match rest {
            [b'\r' | b'\n', ..] => (Class::Break, 1),
            [b' ' | b'\t', ..] => (Class::Blank, 1),
            [0, ..] => (Class::Nul, 1),
            [0xC2, 0x85, ..] => (Class::Break, 2),
            [0xE2, 0x80, 0xA8 | 0xA9, ..] => (Class::Break, 3),
            [0xEF, 0xBB, 0xBF, ..] => (Class::Bom, 3),
            _ => (Class::Other, 1),
        };
        out[i] = class;
        let tail = if class == Class::Bom { Class::BomTail } else { Class::BreakTail };
        for c in out.iter_mut().skip(i + 1).take(len - 1) {
            *c = tail;
        }
        i += len;
    }
    out
}

/// `---` or `...` followed by a blank, a break or the end, at `i`.
fn document_marker(bytes: &[u8], classes: &[Class], i: usize) -> bool {
    let three = bytes.get(i..i + 3);
    (three == Some(b"---") || three == Some(b"...")) && classes.get(i + 3).is_none_or(|c| c.blankz())
}

/// The byte being scanned, with the context libyaml looks at.
struct At {
    byte: u8,
    class: Class,
    /// The next byte is a blank, a break, NUL, or the end of the text.
    next_blankz: bool,
    next: u8,
    /// Bytes since the start of the line (spaces, where it matters).
    col: u32,
    /// A document marker starts here.
    marker: bool,
}

/// Where libyaml's scanner may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Between tokens (blanks, breaks), or at the start of the next one.
    TokenStart,
    /// Inside a plain scalar.
    Plain,
    /// A plain scalar followed by blanks on the same line.
    PlainBlank,
    /// A plain scalar followed by a line break: it may continue.
    PlainBreak,
    /// Inside `'...'`.
    Single,
    /// A `'` inside `'...'`: the end, or the first half of `''`.
    SingleQuote,
    /// Inside `"..."`.
    Double,
    /// After a `\` inside `"..."`.
    DoubleEscape,
    /// From `#` to the end of the line.
    Comment,
    /// A `%` directive, to the end of the line.
    Directive,
    /// An `&anchor` or `*alias`.
    Anchor,
    /// Right after `!`.
    TagStart,
    /// A tag shorthand (`!foo`, `!!str`).
    Tag,
    /// A verbatim tag (`!<...>`).
    TagVerbatim,
    /// The header line of a `|` or `>` block scalar.
    BlockHeader,
    /// The start of a line that may belong to a block scalar.
    BlockLine,
    /// A line of a block scalar.
    BlockText,
    /// Two more bytes of a document marker.
    Marker2,
    /// One more byte of a document marker.
    Marker1,
}

/// The indentation of a block scalar's text, which decides where it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Indent {
    /// Not in a block scalar.
    NotBlock,
    /// Before its first line of text: that line sets it (or, if indented
    /// less than the enclosing collection, which is not tracked here, ends
    /// the scalar).
    Unknown,
    /// Lines indented at least this much belong to the scalar, others end it.
    Known(u32),
    /// Not worked out (an explicit indentation indicator, or leading lines
    /// of spaces): any line may end it.
    Any,
}

/// One possible scanner state: where it is, whether inside a flow
/// collection, and the deepest flow nesting it can be at.
#[derive(Clone, Copy, Debug)]
struct Config {
    lex: Lex,
    flow: bool,
    indent: Indent,
    depth: u32,
}

/// Every scanner state still possible, at most one per (lex, flow), each
/// with the deepest nesting any path to it reaches.
struct Configs(Vec<Config>);

impl Configs {
    fn start() -> Configs {
        Configs(vec![Config { lex: Lex::TokenStart, flow: false, indent: Indent::NotBlock, depth: 0 }])
    }

    /// The states after `at`, into `next` (reused, to scan without allocating).
    fn step(&self, at: &At, next: &mut Configs) -> Result<(), ()> {
        next.0.clear();
        for c in &self.0 {
            c.step(at, next)?;
        }
        Ok(())
    }

    fn add(&mut self, next: Config) -> Result<(), ()> {
        if next.depth > MAX_DEPTH {
            return Err(());
        }
        let same = |c: &&mut Config| c.lex == next.lex && c.flow == next.flow && c.indent == next.indent;
        match self.0.iter_mut().find(same) {
            Some(c) => c.depth = c.depth.max(next.depth),
            None => self.0.push(next),
        }
        Ok(())
    }
}

impl Config {
    /// To `lex`, outside any block scalar.
    fn go(&self, out: &mut Configs, lex: Lex) -> Result<(), ()> {
        out.add(Config { lex, indent: Indent::NotBlock, ..*self })
    }

    /// To `lex`, inside a block scalar of `indent`.
    fn block(&self, out: &mut Configs, lex: Lex, indent: Indent) -> Result<(), ()> {
        out.add(Config { lex, indent, ..*self })
    }

    /// Into flow context, one level deeper.
    fn open(&self, out: &mut Configs) -> Result<(), ()> {
        out.add(Config { lex: Lex::TokenStart, flow: true, indent: Indent::NotBlock, depth: self.depth + 1 })
    }

    /// Out of one flow level. Any path may be at depth 1 here, so any may
    /// leave flow context.
    fn close(&self, out: &mut Configs) -> Result<(), ()> {
        if self.flow && self.depth > 1 {
            out.add(Config { lex: Lex::TokenStart, flow: true, indent: Indent::NotBlock, depth: self.depth - 1 })?;
        }
        out.add(Config { lex: Lex::TokenStart, flow: false, indent: Indent::NotBlock, depth: 0 })
    }

    fn step(&self, at: &At, out: &mut Configs) -> Result<(), ()> {
        let b = at.byte;
        match self.lex {
            Lex::TokenStart => self.token_start(at, out),
            Lex::Plain => self.plain(at, out),
            Lex::PlainBlank => match (at.class, b) {
                (Class::Blank, _) => self.go(out, Lex::PlainBlank),
                (Class::Break, _) => self.go(out, Lex::PlainBreak),
                (_, b'#') => self.go(out, Lex::Comment),
                _ => self.plain(at, out),
            },
            Lex::PlainBreak => self.plain_break(at, out),
            Lex::Single => self.go(out, if b == b'\'' { Lex::SingleQuote } else { Lex::Single }),
            Lex::SingleQuote if b == b'\'' => self.go(out, Lex::Single),
            Lex::SingleQuote => self.token_start(at, out),
            Lex::Double => match b {
                b'\\' => self.go(out, Lex::DoubleEscape),
                b'"' => self.go(out, Lex::TokenStart),
                _ => self.go(out, Lex::Double),
            },
            Lex::DoubleEscape => self.go(out, Lex::Double),
            Lex::Comment | Lex::Directive => {
                self.go(out, if at.class == Class::Break { Lex::TokenStart } else { self.lex })
            }
            Lex::BlockHeader => self.block_header(at, out),
            Lex::BlockText if at.class == Class::Break => self.block(out, Lex::BlockLine, self.indent),
            Lex::BlockText => self.block(out, Lex::BlockText, self.indent),
            Lex::Anchor if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => self.go(out, Lex::Anchor),
            Lex::Anchor => self.token_start(at, out),
            Lex::TagStart if b == b'<' => self.go(out, Lex::TagVerbatim),
            Lex::TagStart | Lex::Tag if tag_char(b) => self.go(out, Lex::Tag),
            Lex::TagStart | Lex::Tag => self.token_start(at, out),
            Lex::TagVerbatim if b == b'>' => self.go(out, Lex::TokenStart),
            Lex::TagVerbatim if tag_char(b) || matches!(b, b',' | b'[' | b']') => self.go(out, Lex::TagVerbatim),
            Lex::TagVerbatim => self.token_start(at, out),
            Lex::BlockLine => self.block_line(at, out),
            Lex::Marker2 => self.go(out, Lex::Marker1),
            Lex::Marker1 => self.go(out, Lex::TokenStart),
        }
    }

    /// libyaml's `yaml_parser_fetch_next_token`, reduced to what matters for
    /// flow nesting.
    fn token_start(&self, at: &At, out: &mut Configs) -> Result<(), ()> {
        let b = at.byte;
        match at.class {
            Class::Blank | Class::Break | Class::Nul => return self.go(out, Lex::TokenStart),
            Class::Bom => {
                // Skipped at the start of a line; elsewhere it starts a plain scalar.
                self.go(out, Lex::TokenStart)?;
                return self.go(out, Lex::Plain);
            }
            Class::BreakTail | Class::BomTail => return out.add(*self),
            Class::Other => {}
        }
        if at.col == 0 && b == b'%' {
            return self.go(out, Lex::Directive);
        }
        if at.marker {
            return self.go(out, Lex::Marker2);
        }
        match b {
            b'[' | b'{' => self.open(out),
            b']' | b'}' => self.close(out),
            b',' => self.go(out, Lex::TokenStart),
            b'#' => self.go(out, Lex::Comment),
            b'-' if at.next_blankz => self.go(out, Lex::TokenStart),
            b'?' | b':' if self.flow || at.next_blankz => self.go(out, Lex::TokenStart),
            b'*' | b'&' => self.go(out, Lex::Anchor),
            b'!' => self.go(out, Lex::TagStart),
            b'|' | b'>' if !self.flow => self.block(out, Lex::BlockHeader, Indent::Unknown),
            b'\'' => self.go(out, Lex::Single),
            b'"' => self.go(out, Lex::Double),
            // Characters that cannot start a token: libyaml stops with an
            // error; carrying on can only over-estimate.
            b'|' | b'>' | b'%' | b'@' | b'`' => self.go(out, Lex::TokenStart),
            _ => self.go(out, Lex::Plain),
        }
    }

    /// libyaml's `yaml_parser_scan_plain_scalar`, inner loop.
    fn plain(&self, at: &At, out: &mut Configs) -> Result<(), ()> {
        match (at.class, at.byte) {
            (Class::Blank, _) => self.go(out, Lex::PlainBlank),
            (Class::Break, _) => self.go(out, Lex::PlainBreak),
            (_, b',' | b'[' | b']' | b'{' | b'}') if self.flow => self.token_start(at, out),
            (_, b':') if at.next_blankz => self.token_start(at, out),
            (_, b':') if self.flow && matches!(at.next, b',' | b'?' | b'[' | b']' | b'{' | b'}') => {
                // libyaml: "found unexpected ':'", the scan stops.
                self.go(out, Lex::Plain)
            }
            _ => self.go(out, Lex::Plain),
        }
    }

    /// A plain scalar after a line break: it continues unless a document
    /// marker or a comment follows, or (block context) the next line is
    /// indented less than the scalar, which is not tracked here: both.
    fn plain_break(&self, at: &At, out: &mut Configs) -> Result<(), ()> {
        if matches!(at.class, Class::Blank | Class::Break) {
            return self.go(out, Lex::PlainBreak);
        }
        if at.marker {
            return self.token_start(at, out);
        }
        if at.byte == b'#' {
            return self.go(out, Lex::Comment);
        }
        if !self.flow {
            self.token_start(at, out)?;
        }
        self.plain(at, out)
    }
}

impl Config {
    /// The rest of a `|` or `>` line: an explicit indentation indicator (or
    /// a digit in its comment) leaves the indentation to every possibility.
    fn block_header(&self, at: &At, out: &mut Configs) -> Result<(), ()> {
        let indent = if matches!(at.byte, b'1'..=b'9') { Indent::Any } else { self.indent };
        let lex = if at.class == Class::Break { Lex::BlockLine } else { Lex::BlockHeader };
        self.block(out, lex, indent)
    }

    /// libyaml's `yaml_parser_scan_block_scalar_breaks`: at the first byte
    /// that is not a space, the line's indentation decides whether it is
    /// text or the next token.
    fn block_line(&self, at: &At, out: &mut Configs) -> Result<(), ()> {
        match (at.class, self.indent) {
            (Class::Break, Indent::Unknown) if at.col > 0 => self.block(out, Lex::BlockLine, Indent::Any),
            (Class::Break, _) => self.block(out, Lex::BlockLine, self.indent),
            _ if at.byte == b' ' => self.block(out, Lex::BlockLine, self.indent),
            (_, Indent::Known(k)) if at.col >= k => self.block(out, Lex::BlockText, self.indent),
            (_, Indent::Known(_)) => self.token_start(at, out),
            (_, Indent::Unknown) => {
                self.block(out, Lex::BlockText, Indent::Known(at.col))?;
                self.token_start(at, out)
            }
            _ => {
                self.block(out, Lex::BlockText, self.indent)?;
                self.token_start(at, out)
            }
        }
    }
}

/// Characters of a tag shorthand (libyaml's URI characters, without the
/// flow indicators `,[]` that only verbatim tags may hold).
fn tag_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_;/?:@&=+$.%!~*'()".contains(&b)
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
