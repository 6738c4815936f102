//! YAML documents as trees of nodes that remember where they were written.
//!
//! Built from saphyr-parser's event stream (a pure-Rust YAML 1.2 parser whose
//! every event carries a line and column), because diagnostics must point at the
//! exact line of the offending key or value and generic deserializers lose that.
//! The tree keeps what validation needs and nothing else: plain scalars are typed
//! by the YAML 1.2 core schema, quoted and block scalars are strings, mappings keep
//! their keys in order *with duplicates* (so the schema layer can report them with
//! their YAML path), aliases are expanded, and explicit tags are kept so the
//! schema layer can refuse them.
//!
//! Building is budgeted ([`crate::limits`]): nesting depth, nodes, scalar bytes and
//! keys per mapping, aliases counted as the copies they expand to. Each cost is
//! checked before the node is built or copied, so hostile input is refused after
//! bounded work, at the line where the budget ran out.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::str::Chars;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

pub use crate::limits::MAX_NESTING_DEPTH;
use crate::limits::{
    MAX_MAPPING_KEYS, MAX_YAML_LOOKAHEAD_BYTES, MAX_YAML_NODES, MAX_YAML_SCALAR_BYTES,
};

/// A place in the source text, both numbers 1-based (as editors show them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn of_span(span: &Span) -> Self {
        Position {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A YAML value with its position and, if the author wrote one, its explicit tag.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    /// Where the value starts, except for a block collection under a mapping key
    /// (`spec:` followed by indented lines): there it is the key's position,
    /// because "spec has no rules" should point at `spec:`, not at its first child.
    pub position: Position,
    /// An explicit tag such as `!!str` (handle and suffix concatenated).
    pub tag: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    /// Kept as written: policies have no floating-point fields, it only shows up in errors.
    Float(String),
    String(String),
    Sequence(Vec<Node>),
    /// Entries in source order, duplicates included.
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    /// How the value reads in an error message: `integer 42`, `a list`, `string "x"`.
    pub fn describe(&self) -> String {
        match &self.value {
            NodeValue::Null => "nothing (null)".to_string(),
            NodeValue::Bool(b) => format!("boolean {b}"),
            NodeValue::Int(i) => format!("integer {i}"),
            NodeValue::Float(f) => format!("number {f}"),
            NodeValue::String(s) => format!("string {s:?}"),
            NodeValue::Sequence(_) => "a list".to_string(),
            NodeValue::Mapping(_) => "a mapping".to_string(),
        }
    }
}

/// The YAML text could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum YamlTreeError {
    Syntax {
        position: Position,
        problem: String,
    },
    /// Collections nested deeper than [`MAX_NESTING_DEPTH`] (an alias counts with
    /// its anchor's depth).
    TooDeep {
        position: Position,
        limit: usize,
    },
    /// More than [`MAX_YAML_NODES`] nodes, aliases expanded.
    TooManyNodes {
        position: Position,
        limit: usize,
    },
    /// More than [`MAX_YAML_SCALAR_BYTES`] of scalar text, aliases expanded.
    TooMuchText {
        position: Position,
        limit: usize,
    },
    /// A mapping with more than [`MAX_MAPPING_KEYS`] keys.
    TooManyKeys {
        position: Position,
        limit: usize,
    },
    /// The parser read more than [`MAX_YAML_LOOKAHEAD_BYTES`] past the last event
    /// it produced; `position` is where that event was.
    LookaheadTooLong {
        position: Position,
        limit: usize,
    },
}

impl YamlTreeError {
    fn from_scan(error: &ScanError) -> Self {
        let mark = error.marker();
        YamlTreeError::Syntax {
            position: Position {
                line: mark.line(),
                column: mark.col() + 1,
            },
            problem: error.info().to_string(),
        }
    }
}

/// What a node cost to build: the budget a copy of it (an alias) would use again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cost {
    nodes: usize,
    bytes: usize,
    /// Collections nested in the node, itself included: 0 for a scalar.
    height: usize,
}

impl Cost {
    fn scalar(text_bytes: usize, tag: Option<&str>) -> Self {
        Cost {
            nodes: 1,
            bytes: text_bytes.saturating_add(tag.map_or(0, str::len)),
            height: 0,
        }
    }

    fn collection(tag: Option<&str>) -> Self {
        Cost {
            nodes: 1,
            bytes: tag.map_or(0, str::len),
            height: 1,
        }
    }

    fn add_child(&mut self, child: Cost) {
        self.nodes = self.nodes.saturating_add(child.nodes);
        self.bytes = self.bytes.saturating_add(child.bytes);
        self.height = self.height.max(child.height.saturating_add(1));
    }
}

/// What one YAML stream has spent so far, against [`crate::limits`].
#[derive(Default)]
struct Budget {
    nodes: usize,
    bytes: usize,
}

impl Budget {
    /// Takes `cost` from the budget, or refuses (the budget unchanged) when it would
    /// exceed a limit. Called before the node is built or copied.
    fn charge(&mut self, cost: Cost, position: Position) -> Result<(), YamlTreeError> {
        let nodes = self.nodes.saturating_add(cost.nodes);
        if nodes > MAX_YAML_NODES {
            return Err(YamlTreeError::TooManyNodes {
                position,
                limit: MAX_YAML_NODES,
            });
        }
        let bytes = self.bytes.saturating_add(cost.bytes);
        if bytes > MAX_YAML_SCALAR_BYTES {
            return Err(YamlTreeError::TooMuchText {
                position,
                limit: MAX_YAML_SCALAR_BYTES,
            });
        }
        self.nodes = nodes;
        self.bytes = bytes;
        Ok(())
    }
}

/// The text as the parser reads it, metered: after [`MAX_YAML_LOOKAHEAD_BYTES`]
/// read without an event being produced, it ends (and says so in `cut`).
///
/// The YAML parser queues every token of a flow collection (`[...]`, `{...}`)
/// that starts outside any other flow collection until it ends, because the whole
/// collection might turn out to be a mapping key; that queue is ~90 times the size
/// of the text. Metering what the parser reads ahead bounds it.
struct MeteredText<'t> {
    chars: Chars<'t>,
    /// Bytes read since the parser last produced an event.
    ahead: Rc<Cell<usize>>,
    cut: Rc<Cell<bool>>,
}

impl Iterator for MeteredText<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        if self.cut.get() {
            return None;
        }
        let c = self.chars.next()?;
        let ahead = self.ahead.get().saturating_add(c.len_utf8());
        if ahead > MAX_YAML_LOOKAHEAD_BYTES {
            self.cut.set(true);
            return None;
        }
        self.ahead.set(ahead);
        Some(c)
    }
}

/// A collection being built: its items so far, where it started, what it cost.
enum OpenCollection {
    Sequence {
        items: Vec<Node>,
        position: Position,
        anchor_id: usize,
        tag: Option<String>,
        cost: Cost,
    },
    Mapping {
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        position: Position,
        anchor_id: usize,
        tag: Option<String>,
        cost: Cost,
    },
}

impl OpenCollection {
    fn cost_mut(&mut self) -> &mut Cost {
        match self {
            OpenCollection::Sequence { cost, .. } | OpenCollection::Mapping { cost, .. } => cost,
        }
    }
}

/// Parses every document of a YAML stream. Empty documents (`---` followed by
/// nothing, or a file of comments) come back as `Null` nodes.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, YamlTreeError> {
    let ahead = Rc::new(Cell::new(0));
    let cut = Rc::new(Cell::new(false));
    let mut parser = Parser::new_from_iter(MeteredText {
        chars: text.chars(),
        ahead: Rc::clone(&ahead),
        cut: Rc::clone(&cut),
    });
    // Where the last event was: a cut input is reported there.
    let mut last_position = Position { line: 1, column: 1 };
    let lookahead_error = |position| YamlTreeError::LookaheadTooLong {
        position,
        limit: MAX_YAML_LOOKAHEAD_BYTES,
    };
    let mut documents = Vec::new();
    let mut open: Vec<OpenCollection> = Vec::new();
    // Anchor ids are unique per stream; a later definition replaces an earlier one.
    let mut anchors: HashMap<usize, (Node, Cost)> = HashMap::new();
    let mut budget = Budget::default();

    while let Some(next) = parser.next_event() {
        // Whatever the parser made of a cut input, the input was not the file.
        if cut.get() {
            return Err(lookahead_error(last_position));
        }
        let (event, span) = next.map_err(|e| YamlTreeError::from_scan(&e))?;
        ahead.set(0);
        let position = Position::of_span(&span);
        last_position = position;
        let completed = match event {
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => None,
            Event::Alias(anchor_id) => match anchors.get(&anchor_id) {
                Some((node, cost)) => {
                    // The copy's whole cost, checked before anything is copied.
                    if open.len().saturating_add(cost.height) > MAX_NESTING_DEPTH {
                        return Err(YamlTreeError::TooDeep {
                            position,
                            limit: MAX_NESTING_DEPTH,
                        });
                    }
                    budget.charge(*cost, position)?;
                    Some((node.clone(), 0, *cost, position))
                }
                // The parser itself rejects unknown aliases; this is belt and braces.
                None => {
                    return Err(YamlTreeError::Syntax {
                        position,
                        problem: "alias to an unknown anchor".to_string(),
                    });
                }
            },
            Event::Scalar(text, style, anchor_id, tag) => {
                let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                let cost = Cost::scalar(text.len(), tag.as_deref());
                budget.charge(cost, position)?;
                let value = if style == ScalarStyle::Plain && tag.is_none() {
                    resolve_plain_scalar(&text)
                } else {
                    NodeValue::String(text.into_owned())
                };
                Some((
                    Node {
                        value,
                        position,
                        tag,
                    },
                    anchor_id,
                    cost,
                    position,
                ))
            }
            Event::SequenceStart(anchor_id, tag) => {
                check_depth(&open, position)?;
                let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                let cost = Cost::collection(tag.as_deref());
                budget.charge(cost, position)?;
                open.push(OpenCollection::Sequence {
                    items: Vec::new(),
                    position,
                    anchor_id,
                    tag,
                    cost,
                });
                None
            }
            Event::MappingStart(anchor_id, tag) => {
                check_depth(&open, position)?;
                let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                let cost = Cost::collection(tag.as_deref());
                budget.charge(cost, position)?;
                open.push(OpenCollection::Mapping {
                    entries: Vec::new(),
                    pending_key: None,
                    position,
                    anchor_id,
                    tag,
                    cost,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some(OpenCollection::Sequence {
                    items,
                    position,
                    anchor_id,
                    tag,
                    cost,
                }) => Some((
                    Node {
                        value: NodeValue::Sequence(items),
                        position,
                        tag,
                    },
                    anchor_id,
                    cost,
                    position,
                )),
                Some(OpenCollection::Mapping {
                    entries,
                    position,
                    anchor_id,
                    tag,
                    cost,
                    ..
                }) => Some((
                    Node {
                        value: NodeValue::Mapping(entries),
                        position,
                        tag,
                    },
                    anchor_id,
                    cost,
                    position,
                )),
                None => {
                    return Err(YamlTreeError::Syntax {
                        position,
                        problem: "end of a collection that was never opened".to_string(),
                    });
                }
            },
        };

        // `at`: where the node was written (for an alias, the alias itself).
        let Some((node, anchor_id, cost, at)) = completed else {
            continue;
        };
        if anchor_id != 0 {
            // The copy kept for later aliases costs as much as the node.
            budget.charge(cost, at)?;
            anchors.insert(anchor_id, (node.clone(), cost));
        }
        let Some(parent) = open.last_mut() else {
            documents.push(node);
            continue;
        };
        parent.cost_mut().add_child(cost);
        match parent {
            OpenCollection::Sequence { items, .. } => items.push(node),
            OpenCollection::Mapping {
                entries,
                pending_key,
                ..
            } => match pending_key.take() {
                None => {
                    if entries.len() >= MAX_MAPPING_KEYS {
                        return Err(YamlTreeError::TooManyKeys {
                            position: at,
                            limit: MAX_MAPPING_KEYS,
                        });
                    }
                    *pending_key = Some(node);
                }
                Some(key) => {
                    let mut value = node;
                    let is_collection =
                        matches!(value.value, NodeValue::Mapping(_) | NodeValue::Sequence(_));
                    if is_collection && value.position.line > key.position.line {
                        value.position = key.position;
                    }
                    entries.push((key, value));
                }
            },
        }
    }
    if cut.get() {
        return Err(lookahead_error(last_position));
    }
    Ok(documents)
}

fn check_depth(open: &[OpenCollection], position: Position) -> Result<(), YamlTreeError> {
    if open.len() >= MAX_NESTING_DEPTH {
        return Err(YamlTreeError::TooDeep {
            position,
            limit: MAX_NESTING_DEPTH,
        });
    }
    Ok(())
}

/// Types a plain scalar by the YAML 1.2 core schema (what Kubernetes tooling does,
/// minus YAML 1.1's `yes`/`no`/`on`/`off` booleans, which stay strings here).
fn resolve_plain_scalar(text: &str) -> NodeValue {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        "true" | "True" | "TRUE" => return NodeValue::Bool(true),
        "false" | "False" | "FALSE" => return NodeValue::Bool(false),
        _ => {}
    }
    if let Some(int) = parse_core_int(text) {
        return NodeValue::Int(int);
    }
    if is_core_float(text) {
        return NodeValue::Float(text.to_string());
    }
    NodeValue::String(text.to_string())
}

fn parse_core_int(text: &str) -> Option<i64> {
    if let Some(octal) = text.strip_prefix("0o") {
        return i64::from_str_radix(octal, 8).ok();
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Out-of-range integers are still integers; saturate so the error names them.
    Some(text.parse::<i64>().unwrap_or(if text.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    }))
}

fn is_core_float(text: &str) -> bool {
    let lowered = text.to_ascii_lowercase();
    if matches!(lowered.as_str(), ".inf" | "+.inf" | "-.inf" | ".nan") {
        return true;
    }
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mut parts = mantissa.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next();
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match fraction {
        Some(f) => digits(whole) && digits(f) && !(whole.is_empty() && f.is_empty()),
        None => !whole.is_empty() && digits(whole),
    };
    let exponent_ok = match exponent {
        None => fraction.is_some(),
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
    };
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> Node {
        let mut docs = parse_documents(text).expect("parses");
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        let node = single("[1, -3, 0x1f, 1.5, true, null, yes, \"5\", '7', abc]");
        let NodeValue::Sequence(items) = node.value else {
            panic!("not a sequence")
        };
        let values: Vec<_> = items.into_iter().map(|n| n.value).collect();
        assert_eq!(
            values,
            vec![
                NodeValue::Int(1),
                NodeValue::Int(-3),
                NodeValue::Int(31),
                NodeValue::Float("1.5".into()),
                NodeValue::Bool(true),
                NodeValue::Null,
                NodeValue::String("yes".into()),
                NodeValue::String("5".into()),
                NodeValue::String("7".into()),
                NodeValue::String("abc".into()),
            ]
        );
    }

    #[test]
    fn positions_are_one_based() {
        let node = single("a:\n  b: 1\n");
        let NodeValue::Mapping(entries) = node.value else {
            panic!("not a mapping")
        };
        let (key, value) = &entries[0];
        assert_eq!(key.position, Position { line: 1, column: 1 });
        // A block mapping under a key is located at its key.
        assert_eq!(value.position, Position { line: 1, column: 1 });
        let NodeValue::Mapping(inner) = &value.value else {
            panic!("not a mapping")
        };
        assert_eq!(inner[0].0.position, Position { line: 2, column: 3 });
        assert_eq!(inner[0].1.position, Position { line: 2, column: 6 });
    }

    #[test]
    fn duplicates_are_kept_and_aliases_expanded() {
        let node = single("a: &x [1]\na: *x\n");
        let NodeValue::Mapping(entries) = node.value else {
            panic!("not a mapping")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].1.value, entries[1].1.value);
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let docs = parse_documents("a: 1\n---\n---\nb: 2\n").expect("parses");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].value, NodeValue::Null);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").expect_err("bad yaml");
        let YamlTreeError::Syntax { position, .. } = err else {
            panic!("not a syntax error")
        };
        assert!(position.line >= 1);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(MAX_NESTING_DEPTH + 1);
        assert!(matches!(
            parse_documents(&deep),
            Err(YamlTreeError::TooDeep { .. })
        ));
    }

    #[test]
    fn tags_are_kept() {
        let node = single("!!str 5");
        assert_eq!(node.tag.as_deref(), Some("tag:yaml.org,2002:str"));
    }
}
