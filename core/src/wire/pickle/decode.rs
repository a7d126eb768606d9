//! The pickle decoder: a stack machine over untrusted bytes.
//!
//! Python's memo gives *references*: a list stored with `PUT` and read back with `GET` after
//! more `APPEND`s is the same, now longer, list. To keep that meaning without shared mutable
//! values, the machine first builds a flat arena of nodes whose children are arena indices; the
//! stack and the memo hold indices. After `STOP` the root is expanded into a [`Value`] tree,
//! copying shared nodes, under the node budget and the depth limit. The arena is flat, so no
//! input can make building or dropping it recurse; the expansion recurses at most
//! `max_depth` levels.

use super::arena::{Expander, MapNode, Node, NodeId, Slot};
use super::int::{int_from_le, parse_decimal};
use super::keys::key_repr;
use super::PickleError;
use crate::wire::value::{Limits, SeqKind, Text, Value};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Range;

/// Decodes one pickle (one frame payload) into a [`Value`].
///
/// Byte strings, texts and big integers in the result are slices of `payload`, never copies.
///
/// Limits: the result nests at most `limits.max_depth` deep, and has at most
/// `min(limits.max_nodes, 16 * payload.len() + 1024)` nodes, memo copies included, so a
/// small pickle that reads the same memo entry over and over fails with
/// [`PickleError::TooManyNodes`] instead of expanding. Work is linear in the payload length
/// plus that node budget.
///
/// Dicts follow Python: a key must be hashable (`None`, bool, int, float, bytes, str, a global,
/// or a tuple of those), keys compare as Python compares them (`1 == 1.0 == True`), and a
/// repeated key keeps its first position and first key object and takes the last value.
pub fn decode(payload: &Bytes, limits: &Limits) -> Result<Value, PickleError> {
    let budget = limits.max_nodes.min(payload.len().saturating_mul(16).saturating_add(1024));
    let mut machine = Machine {
        payload,
        pos: 0,
        max_depth: limits.max_depth,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: BTreeMap::new(),
        key_work_left: budget,
        budget,
    };
    let root = machine.run()?;
    Expander::new(&machine.nodes, budget, limits.max_depth).expand(root, 0)
}

struct Machine<'a> {
    payload: &'a Bytes,
    /// Next byte to read.
    pos: usize,
    max_depth: u32,
    nodes: Vec<Slot>,
    stack: Vec<NodeId>,
    /// Stack heights at each `MARK`, innermost last. Values below the innermost mark cannot be
    /// popped by single-value opcodes (as in CPython's unpickler).
    marks: Vec<usize>,
    memo: BTreeMap<u64, NodeId>,
    /// Budget for walking dict keys (a memoised tuple can be used as a key many times).
    key_work_left: usize,
    budget: usize,
}

impl Machine<'_> {
    /// Runs opcodes up to `STOP` and returns the root node.
    fn run(&mut self) -> Result<NodeId, PickleError> {
        loop {
            let offset = self.pos;
            let Some(&op) = self.payload.get(offset) else {
                return Err(PickleError::NoStop);
            };
            self.pos += 1;
            if op == b'.' {
                return self.stop(offset);
            }
            self.step(op, offset)?;
        }
    }

    fn stop(&mut self, offset: usize) -> Result<NodeId, PickleError> {
        match (self.stack.as_slice(), self.marks.len()) {
            ([root], 0) if self.pos == self.payload.len() => Ok(*root),
            ([_], 0) => Err(PickleError::TrailingBytes { offset: self.pos }),
            (values, marks) => Err(PickleError::BadStop { offset, values: values.len(), marks }),
        }
    }

    fn step(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        match op {
            0x80 => self.proto(offset),
            b'(' => {
                self.marks.push(self.stack.len());
                Ok(())
            }
            b'N' => self.push_leaf(Value::None),
            0x88 => self.push_leaf(Value::Bool(true)),
            0x89 => self.push_leaf(Value::Bool(false)),
            b'K' | b'M' | b'J' | 0x8a | 0x8b | b'I' | b'L' => self.int(op, offset),
            b'G' | b'F' => self.float(op, offset),
            b'X' => self.text(offset),
            b'C' | b'B' | b'U' | b'T' => self.bytes(op, offset),
            b')' | b't' | 0x85..=0x87 | b']' | b'l' | b'}' | b'd' => self.container(op, offset),
            b'a' | b'e' => self.append(op, offset),
            b's' | b'u' => self.set_items(op, offset),
            b'p' | b'q' | b'r' => self.memo_put(op, offset),
            b'g' | b'h' | b'j' => self.memo_get(op, offset),
            b'0' | b'1' | b'2' => self.stack_op(op, offset),
            b'c' => self.global(offset),
            b'R' => self.reduce(offset),
            _ => Err(unsupported(op, offset)),
        }
    }

    // ----- reading the input -----

    /// Consumes `n` argument bytes; fails without consuming if fewer are present, so a
    /// claimed length is never trusted before the bytes are there.
    fn take(&mut self, n: usize, offset: usize) -> Result<Range<usize>, PickleError> {
        let available = self.payload.len() - self.pos;
        if n > available {
            return Err(PickleError::Truncated { offset, needed: n - available });
        }
        let range = self.pos..self.pos + n;
        self.pos += n;
        Ok(range)
    }

    fn take_array<const N: usize>(&mut self, offset: usize) -> Result<[u8; N], PickleError> {
        let range = self.take(N, offset)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.payload[range]);
        Ok(out)
    }

    fn take_u8(&mut self, offset: usize) -> Result<usize, PickleError> {
        Ok(usize::from(self.take_array::<1>(offset)?[0]))
    }

    fn take_u32(&mut self, offset: usize) -> Result<usize, PickleError> {
        let n = u32::from_le_bytes(self.take_array(offset)?);
        // Where usize is narrower than 32 bits, such a length cannot be present anyway.
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A signed 32-bit length (`T`, `LONG4`); negative ones are an error, as in Python.
    fn take_i32_len(&mut self, offset: usize) -> Result<usize, PickleError> {
        let n = i32::from_le_bytes(self.take_array(offset)?);
        usize::try_from(n).map_err(|_| PickleError::NegativeLength { offset })
    }

    /// Consumes a text line and returns it without its `\n`.
    fn take_line(&mut self, offset: usize) -> Result<&[u8], PickleError> {
        let rest = &self.payload[self.pos..];
        let len = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::UnterminatedLine { offset })?;
        let start = self.pos;
        self.pos += len + 1;
        Ok(&self.payload[start..start + len])
    }

    // ----- the stack -----

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, offset: usize) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.fence() {
            return Err(PickleError::StackUnderflow { offset });
        }
        self.stack.pop().ok_or(PickleError::StackUnderflow { offset })
    }

    fn top(&self, offset: usize) -> Result<NodeId, PickleError> {
        match self.stack.last() {
            Some(&id) if self.stack.len() > self.fence() => Ok(id),
            _ => Err(PickleError::StackUnderflow { offset }),
        }
    }

    /// Pops everything above the innermost mark, and the mark.
    fn pop_mark(&mut self, offset: usize) -> Result<Vec<NodeId>, PickleError> {
        let mark = self.marks.pop().ok_or(PickleError::MarkMissing { offset })?;
        Ok(self.stack.split_off(mark))
    }

    fn depth(&self, id: NodeId) -> u32 {
        self.nodes[id].depth
    }

    /// Adds a node to the arena, refusing it if it is already too deep.
    fn add(&mut self, node: Node, depth: u32) -> Result<NodeId, PickleError> {
        if depth > self.max_depth {
            return Err(PickleError::TooDeep { limit: self.max_depth });
        }
        self.nodes.push(Slot { node, depth });
        Ok(self.nodes.len() - 1)
    }

    fn push(&mut self, node: Node, depth: u32) -> Result<(), PickleError> {
        let id = self.add(node, depth)?;
        self.stack.push(id);
        Ok(())
    }

    fn push_leaf(&mut self, value: Value) -> Result<(), PickleError> {
        self.push(Node::Leaf(value), 0)
    }

    /// Depth of a container holding `children`.
    fn container_depth(&self, children: &[NodeId]) -> u32 {
        1 + children.iter().map(|&c| self.depth(c)).max().unwrap_or(0)
    }

    /// Raises a container's depth bound after it gained a child of depth `child`.
    fn grow_depth(&mut self, id: NodeId, child: u32) -> Result<(), PickleError> {
        let depth = self.depth(id).max(child.saturating_add(1));
        if depth > self.max_depth {
            return Err(PickleError::TooDeep { limit: self.max_depth });
        }
        self.nodes[id].depth = depth;
        Ok(())
    }

    // ----- opcodes -----

    fn proto(&mut self, offset: usize) -> Result<(), PickleError> {
        let [protocol] = self.take_array(offset)?;
        if protocol > 3 {
            return Err(PickleError::UnsupportedProtocol { protocol, offset });
        }
        Ok(())
    }

    fn int(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let value = match op {
            b'K' => Value::Int(i128::from(u8::from_le_bytes(self.take_array(offset)?))),
            b'M' => Value::Int(i128::from(u16::from_le_bytes(self.take_array(offset)?))),
            b'J' => Value::Int(i128::from(i32::from_le_bytes(self.take_array(offset)?))),
            0x8a | 0x8b => {
                let n = if op == 0x8a { self.take_u8(offset)? } else { self.take_i32_len(offset)? };
                let range = self.take(n, offset)?;
                int_from_le(self.payload.slice(range))
            }
            // Text INT: Python 2 wrote bools as `I00`/`I01`.
            b'I' => match self.take_line(offset)? {
                b"00" => Value::Bool(false),
                b"01" => Value::Bool(true),
                line => parse_decimal(line).ok_or(PickleError::BadNumber { offset })?,
            },
            // Text LONG: Python 2 appended an `L`.
            _ => {
                let line = self.take_line(offset)?;
                let line = line.strip_suffix(b"L").unwrap_or(line);
                parse_decimal(line).ok_or(PickleError::BadNumber { offset })?
            }
        };
        self.push_leaf(value)
    }

    fn float(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let f = if op == b'G' {
            f64::from_be_bytes(self.take_array(offset)?)
        } else {
            let line = self.take_line(offset)?;
            std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .ok_or(PickleError::BadNumber { offset })?
        };
        self.push_leaf(Value::Float(f))
    }

    fn text(&mut self, offset: usize) -> Result<(), PickleError> {
        let n = self.take_u32(offset)?;
        let range = self.take(n, offset)?;
        let text =
            Text::from_utf8(self.payload.slice(range)).map_err(|_| PickleError::InvalidUtf8 { offset })?;
        self.push_leaf(Value::Str(text))
    }

    /// `C`/`B` (bytes) and the py2 strings `U`/`T`, which ZEO peers mean as bytes too.
    fn bytes(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let n = match op {
            b'C' | b'U' => self.take_u8(offset)?,
            b'B' => self.take_u32(offset)?,
            _ => self.take_i32_len(offset)?,
        };
        let range = self.take(n, offset)?;
        self.push_leaf(Value::Bytes(self.payload.slice(range)))
    }

    fn container(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let (kind, items) = match op {
            b')' => (SeqKind::Tuple, Vec::new()),
            b']' => (SeqKind::List, Vec::new()),
            b't' => (SeqKind::Tuple, self.pop_mark(offset)?),
            b'l' => (SeqKind::List, self.pop_mark(offset)?),
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < self.fence() + n {
                    return Err(PickleError::StackUnderflow { offset });
                }
                (SeqKind::Tuple, self.stack.split_off(self.stack.len() - n))
            }
            b'}' => return self.push(Node::Map(MapNode::default()), 1),
            _ => {
                // DICT: `MARK k v k v … d`.
                let items = self.pop_mark(offset)?;
                let id = self.add(Node::Map(MapNode::default()), 1)?;
                self.insert_pairs(id, &items, offset)?;
                self.stack.push(id);
                return Ok(());
            }
        };
        let depth = self.container_depth(&items);
        self.push(Node::Seq(kind, items), depth)
    }

    fn append(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let items = if op == b'a' { vec![self.pop(offset)?] } else { self.pop_mark(offset)? };
        let list = self.top(offset)?;
        let child_depth = items.iter().map(|&c| self.depth(c)).max().unwrap_or(0);
        match &mut self.nodes[list].node {
            Node::Seq(SeqKind::List, existing) => existing.extend(items),
            other => {
                let found = other.type_name();
                return Err(PickleError::WrongType { offset, expected: "list", found });
            }
        }
        self.grow_depth(list, child_depth)
    }

    fn set_items(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let items = if op == b's' {
            let value = self.pop(offset)?;
            let key = self.pop(offset)?;
            vec![key, value]
        } else {
            self.pop_mark(offset)?
        };
        let map = self.top(offset)?;
        self.insert_pairs(map, &items, offset)
    }

    /// Inserts `k v k v …` into the dict `map` with Python's rules for repeated keys.
    fn insert_pairs(&mut self, map: NodeId, items: &[NodeId], offset: usize) -> Result<(), PickleError> {
        if items.len() % 2 != 0 {
            return Err(PickleError::OddSetItems { offset });
        }
        if !matches!(self.nodes[map].node, Node::Map(_)) {
            let found = self.nodes[map].node.type_name();
            return Err(PickleError::WrongType { offset, expected: "dict", found });
        }
        for pair in items.chunks_exact(2) {
            let &[key, value] = pair else { continue };
            let repr = key_repr(&self.nodes, key, &mut self.key_work_left)
                .map_err(|e| e.into_error(offset, self.budget))?;
            let child_depth = self.depth(key).max(self.depth(value));
            if let Node::Map(m) = &mut self.nodes[map].node {
                match m.index.get(&repr) {
                    Some(&i) => {
                        if let Some(entry) = m.entries.get_mut(i) {
                            entry.1 = value;
                        }
                    }
                    None => {
                        m.index.insert(repr, m.entries.len());
                        m.entries.push((key, value));
                    }
                }
            }
            self.grow_depth(map, child_depth)?;
        }
        Ok(())
    }

    fn memo_put(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let index = self.memo_index(op, offset)?;
        let id = self.top(offset)?;
        self.memo.insert(index, id);
        Ok(())
    }

    fn memo_get(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let index = self.memo_index(op, offset)?;
        let id = *self.memo.get(&index).ok_or(PickleError::MemoMissing { index, offset })?;
        self.stack.push(id);
        Ok(())
    }

    /// The memo index argument: text line (`p`/`g`), one byte (`q`/`h`) or u32 LE (`r`/`j`).
    fn memo_index(&mut self, op: u8, offset: usize) -> Result<u64, PickleError> {
        match op {
            b'p' | b'g' => {
                let line = self.take_line(offset)?;
                std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or(PickleError::BadNumber { offset })
            }
            b'q' | b'h' => Ok(u64::from(self.take_array::<1>(offset)?[0])),
            _ => Ok(u64::from(u32::from_le_bytes(self.take_array(offset)?))),
        }
    }

    /// `POP`, `POP_MARK` and `DUP`.
    fn stack_op(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        match op {
            // As in CPython, POP removes a mark when the mark is on top.
            b'0' if self.marks.last() == Some(&self.stack.len()) => {
                self.marks.pop();
            }
            b'0' => {
                self.pop(offset)?;
            }
            b'1' => {
                self.pop_mark(offset)?;
            }
            _ => {
                let id = self.top(offset)?;
                self.stack.push(id);
            }
        }
        Ok(())
    }

    fn global(&mut self, offset: usize) -> Result<(), PickleError> {
        let module = self.line_text(offset)?;
        let name = self.line_text(offset)?;
        if module.as_bytes().is_empty() || name.as_bytes().is_empty() {
            return Err(PickleError::BadGlobal { offset });
        }
        self.push_leaf(Value::Global(module, name))
    }

    fn line_text(&mut self, offset: usize) -> Result<Text, PickleError> {
        let start = self.pos;
        let len = self.take_line(offset)?.len();
        Text::from_utf8(self.payload.slice(start..start + len))
            .map_err(|_| PickleError::InvalidUtf8 { offset })
    }

    fn reduce(&mut self, offset: usize) -> Result<(), PickleError> {
        let args = self.pop(offset)?;
        let callable = self.pop(offset)?;
        if let Some((class_path, state)) = self.recon(callable, args) {
            let depth = self.depth(state).saturating_add(1);
            return self.push(Node::Exception(class_path, state), depth);
        }
        let depth = self.container_depth(&[callable, args]);
        self.push(Node::Reduce(callable, args), depth)
    }

    /// Recognises `ZODB.POSException._recon((module.Class, state))`, the form ZEO pickles
    /// nested exceptions in (§3.6). A class name holding a dot stays a plain reduce, so that
    /// splitting the class path at its last dot gives the same global back.
    fn recon(&self, callable: NodeId, args: NodeId) -> Option<(Text, NodeId)> {
        let Node::Leaf(Value::Global(m, n)) = &self.nodes[callable].node else {
            return None;
        };
        if m.as_str() != "ZODB.POSException" || n.as_str() != "_recon" {
            return None;
        }
        let Node::Seq(SeqKind::Tuple, items) = &self.nodes[args].node else {
            return None;
        };
        let &[class, state] = items.as_slice() else {
            return None;
        };
        let Node::Leaf(Value::Global(module, name)) = &self.nodes[class].node else {
            return None;
        };
        if name.as_str().contains('.') {
            return None;
        }
        Some((Text::from(format!("{module}.{name}")), state))
    }
}

/// The error for a byte that is not one of the opcodes handled above.
fn unsupported(opcode: u8, offset: usize) -> PickleError {
    let name = match opcode {
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'b' => "BUILD",
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return PickleError::UnknownOpcode { opcode, offset },
    };
    PickleError::UnsupportedOpcode { opcode, name, offset }
}
