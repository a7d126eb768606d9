//! The pickle decoder: a stack machine over untrusted bytes. It builds an [`arena`](super::arena)
//! (which see for how the memo's references are kept), then expands it into a [`Value`].

use super::arena::{expand, Item, Node, NodeId, Slot};
use super::int::{int_from_le, parse_decimal};
use super::keys::KeyWalk;
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
/// repeated key keeps its first position and first key object and takes the last value. One
/// deviation: a NaN key never equals another, even the same NaN object read twice from the
/// memo, which Python would merge.
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
        keys: KeyWalk::new(budget),
    };
    let root = machine.run()?;
    expand(machine.nodes, root, budget, limits.max_depth)
}

struct Machine<'a> {
    payload: &'a Bytes,
    /// Next byte to read.
    pos: usize,
    max_depth: u32,
    nodes: Vec<Slot>,
    stack: Vec<Item>,
    /// Stack heights at each `MARK`, innermost last. Values below the innermost mark cannot be
    /// popped by single-value opcodes (as in CPython's unpickler).
    marks: Vec<usize>,
    memo: BTreeMap<u64, Item>,
    keys: KeyWalk,
}

impl Machine<'_> {
    /// Runs opcodes up to `STOP` and returns the one value left.
    fn run(&mut self) -> Result<Item, PickleError> {
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

    fn stop(&mut self, offset: usize) -> Result<Item, PickleError> {
        if self.marks.is_empty() && self.stack.len() == 1 {
            if self.pos < self.payload.len() {
                return Err(PickleError::TrailingBytes { offset: self.pos });
            }
            if let Some(root) = self.stack.pop() {
                return Ok(root);
            }
        }
        Err(PickleError::BadStop { offset, values: self.stack.len(), marks: self.marks.len() })
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

    fn pop(&mut self, offset: usize) -> Result<Item, PickleError> {
        if self.stack.len() <= self.fence() {
            return Err(PickleError::StackUnderflow { offset });
        }
        self.stack.pop().ok_or(PickleError::StackUnderflow { offset })
    }

    fn top(&self, offset: usize) -> Result<&Item, PickleError> {
        match self.stack.last() {
            Some(item) if self.stack.len() > self.fence() => Ok(item),
            _ => Err(PickleError::StackUnderflow { offset }),
        }
    }

    /// The node on top of the stack, which an opcode is about to modify in place; `expected`
    /// names what it must be, for the error if it is a scalar.
    fn top_node(&self, offset: usize, expected: &'static str) -> Result<NodeId, PickleError> {
        match self.top(offset)? {
            Item::Node(id) => Ok(*id),
            Item::Leaf(v) => Err(PickleError::WrongType { offset, expected, found: v.type_name() }),
        }
    }

    /// Pops everything above the innermost mark, and the mark.
    fn pop_mark(&mut self, offset: usize) -> Result<Vec<Item>, PickleError> {
        let mark = self.marks.pop().ok_or(PickleError::MarkMissing { offset })?;
        Ok(self.stack.split_off(mark))
    }

    fn depth(&self, item: &Item) -> u32 {
        match item {
            Item::Leaf(_) => 0,
            Item::Node(id) => self.nodes[*id].depth,
        }
    }

    /// Adds a node to the arena, refusing it if it is already too deep.
    fn add(&mut self, node: Node, depth: u32) -> Result<NodeId, PickleError> {
        if depth > self.max_depth {
            return Err(PickleError::TooDeep { limit: self.max_depth });
        }
        self.nodes.push(Slot { node, depth });
        Ok(self.nodes.len() - 1)
    }

    fn push_node(&mut self, node: Node, depth: u32) -> Result<(), PickleError> {
        let id = self.add(node, depth)?;
        self.stack.push(Item::Node(id));
        Ok(())
    }

    fn push_leaf(&mut self, value: Value) -> Result<(), PickleError> {
        self.stack.push(Item::Leaf(value));
        Ok(())
    }

    /// Depth of a container holding `children`.
    fn container_depth<'i>(&self, children: impl IntoIterator<Item = &'i Item>) -> u32 {
        1 + children.into_iter().map(|c| self.depth(c)).max().unwrap_or(0)
    }

    /// Raises a container's depth bound after it gained children that need `depth`.
    fn grow_depth(&mut self, id: NodeId, depth: u32) -> Result<(), PickleError> {
        let depth = self.nodes[id].depth.max(depth);
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
            b'}' => return self.push_node(Node::Map(Box::default()), 1),
            _ => {
                // DICT: `MARK k v k v … d`.
                let items = self.pop_mark(offset)?;
                let id = self.add(Node::Map(Box::default()), 1)?;
                self.insert_pairs(id, items, offset)?;
                self.stack.push(Item::Node(id));
                return Ok(());
            }
        };
        let depth = self.container_depth(&items);
        self.push_node(Node::Seq(kind, items), depth)
    }

    fn append(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        // The items are the top value (APPEND) or everything above the mark (APPENDS); the list
        // sits just below them. They move from the stack straight into the list.
        let from = if op == b'a' {
            self.top(offset)?;
            self.stack.len() - 1
        } else {
            self.marks.pop().ok_or(PickleError::MarkMissing { offset })?
        };
        if from <= self.fence() {
            return Err(PickleError::StackUnderflow { offset });
        }
        let list = match self.stack.get(from - 1) {
            Some(Item::Node(id)) => *id,
            Some(Item::Leaf(v)) => {
                return Err(PickleError::WrongType { offset, expected: "list", found: v.type_name() })
            }
            None => return Err(PickleError::StackUnderflow { offset }),
        };
        let depth = self.container_depth(self.stack.get(from..).unwrap_or_default());
        let Node::Seq(SeqKind::List, existing) = &mut self.nodes[list].node else {
            let found = self.nodes[list].node.type_name();
            return Err(PickleError::WrongType { offset, expected: "list", found });
        };
        existing.extend(self.stack.drain(from..));
        self.grow_depth(list, depth)
    }

    fn set_items(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let items = if op == b's' {
            let value = self.pop(offset)?;
            let key = self.pop(offset)?;
            vec![key, value]
        } else {
            self.pop_mark(offset)?
        };
        let map = self.top_node(offset, "dict")?;
        self.insert_pairs(map, items, offset)
    }

    /// Inserts `k v k v …` into the dict `map` with Python's rules for repeated keys.
    fn insert_pairs(&mut self, map: NodeId, items: Vec<Item>, offset: usize) -> Result<(), PickleError> {
        if items.len() % 2 != 0 {
            return Err(PickleError::OddSetItems { offset });
        }
        if !matches!(self.nodes[map].node, Node::Map(_)) {
            let found = self.nodes[map].node.type_name();
            return Err(PickleError::WrongType { offset, expected: "dict", found });
        }
        let depth = self.container_depth(&items);
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            let repr = self.keys.key(&self.nodes, &key, offset)?;
            let Node::Map(m) = &mut self.nodes[map].node else { break };
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
        self.grow_depth(map, depth)
    }

    fn memo_put(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let index = self.memo_index(op, offset)?;
        let item = self.top(offset)?.clone();
        self.memo.insert(index, item);
        Ok(())
    }

    fn memo_get(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let index = self.memo_index(op, offset)?;
        let item = self.memo.get(&index).ok_or(PickleError::MemoMissing { index, offset })?.clone();
        self.stack.push(item);
        Ok(())
    }

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
                let item = self.top(offset)?.clone();
                self.stack.push(item);
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
        self.push_leaf(Value::Global(Box::new((module, name))))
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
        if let Some((class_path, state)) = self.recon(&callable, &args) {
            let depth = self.container_depth([&state]);
            return self.push_node(Node::Exception(Box::new((class_path, state))), depth);
        }
        let depth = self.container_depth([&callable, &args]);
        self.push_node(Node::Reduce(Box::new((callable, args))), depth)
    }

    /// Recognises `ZODB.POSException._recon((module.Class, state))`, the form ZEO pickles
    /// nested exceptions in (§3.6), and returns the class path and the state. A class name
    /// holding a dot stays a plain reduce, so that splitting the class path at its last dot
    /// gives the same global back.
    fn recon(&self, callable: &Item, args: &Item) -> Option<(Text, Item)> {
        let Item::Leaf(Value::Global(g)) = callable else { return None };
        if g.0.as_str() != "ZODB.POSException" || g.1.as_str() != "_recon" {
            return None;
        }
        let Item::Node(args) = args else { return None };
        let Node::Seq(SeqKind::Tuple, items) = &self.nodes[*args].node else { return None };
        let [Item::Leaf(Value::Global(class)), state] = items.as_slice() else { return None };
        let (module, name) = &**class;
        if name.as_str().contains('.') {
            return None;
        }
        // The tuple may be in the memo too, so its state is shared, not taken.
        Some((Text::from(format!("{module}.{name}")), state.clone()))
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
