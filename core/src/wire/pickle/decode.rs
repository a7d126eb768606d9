//! The pickle decoder: a stack machine over untrusted bytes. It builds an [`arena`](super::arena)
//! (which see for how the memo's references are kept), then expands it into a [`Value`].

use super::arena::{expand, Item, Node, NodeId, Slot};
use super::input::Input;
use super::keys::KeyWalk;
use super::PickleError;
use crate::wire::value::{Limits, SeqKind, Text, TopLevel, Value};
use bytes::Bytes;
use std::collections::BTreeMap;

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
///
/// Pickles without memo opcodes (all that ZEO peers send) take a fast path that builds the
/// value directly; anything else, errors included, is decided by the general decoder, which
/// builds an arena first (see `pickle/direct.rs`).
pub fn decode(payload: &Bytes, limits: &Limits) -> Result<Value, PickleError> {
    if let Some(value) = super::direct::decode(payload, limits, budget(payload, limits)) {
        return Ok(value);
    }
    decode_general(payload, limits)
}

/// [`decode`], except that a pickle of a 4-tuple (every ZEO message) may come back as its four
/// items, without allocating the tuple.
pub(crate) fn decode_top(payload: &Bytes, limits: &Limits) -> Result<TopLevel, PickleError> {
    if let Some(top) = super::direct::decode_top(payload, limits, budget(payload, limits)) {
        return Ok(top);
    }
    decode_general(payload, limits).map(TopLevel::Other)
}

/// The node budget of one decode: see [`decode`].
pub(super) fn budget(payload: &Bytes, limits: &Limits) -> usize {
    limits.max_nodes.min(payload.len().saturating_mul(16).saturating_add(1024))
}

/// The general decoder alone, for any pickle: the arena, then its expansion.
pub(super) fn decode_general(payload: &Bytes, limits: &Limits) -> Result<Value, PickleError> {
    let budget = budget(payload, limits);
    let mut machine = Machine {
        input: Input::new(payload),
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
    input: Input<'a>,
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
            let Some((op, offset)) = self.input.next_op() else {
                return Err(PickleError::NoStop);
            };
            if op == b'.' {
                return self.stop(offset);
            }
            self.step(op, offset)?;
        }
    }

    fn stop(&mut self, offset: usize) -> Result<Item, PickleError> {
        if self.marks.is_empty() && self.stack.len() == 1 {
            if !self.input.at_end() {
                return Err(PickleError::TrailingBytes { offset: self.input.pos() });
            }
            if let Some(root) = self.stack.pop() {
                return Ok(root);
            }
        }
        Err(PickleError::BadStop { offset, values: self.stack.len(), marks: self.marks.len() })
    }

    fn step(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        match op {
            0x80 => self.input.proto(offset),
            b'(' => {
                self.marks.push(self.stack.len());
                Ok(())
            }
            b'N' => self.push_leaf(Value::None),
            0x88 => self.push_leaf(Value::Bool(true)),
            0x89 => self.push_leaf(Value::Bool(false)),
            b'K' | b'M' | b'J' | 0x8a | 0x8b | b'I' | b'L' => {
                let v = self.input.int(op, offset)?;
                self.push_leaf(v)
            }
            b'G' | b'F' => {
                let v = self.input.float(op, offset)?;
                self.push_leaf(v)
            }
            b'X' => {
                let v = self.input.text(offset)?;
                self.push_leaf(v)
            }
            b'C' | b'B' | b'U' | b'T' => {
                let v = self.input.bytes(op, offset)?;
                self.push_leaf(v)
            }
            b')' | b't' | 0x85..=0x87 | b']' | b'l' | b'}' | b'd' => self.container(op, offset),
            b'a' | b'e' => self.append(op, offset),
            b's' | b'u' => self.set_items(op, offset),
            b'p' | b'q' | b'r' => self.memo_put(op, offset),
            b'g' | b'h' | b'j' => self.memo_get(op, offset),
            b'0' | b'1' | b'2' => self.stack_op(op, offset),
            b'c' => {
                let v = self.input.global(offset)?;
                self.push_leaf(v)
            }
            b'R' => self.reduce(offset),
            _ => Err(unsupported(op, offset)),
        }
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
                let line = self.input.take_line(offset)?;
                std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or(PickleError::BadNumber { offset })
            }
            b'q' | b'h' => Ok(u64::from(self.input.take_array::<1>(offset)?[0])),
            _ => Ok(u64::from(u32::from_le_bytes(self.input.take_array(offset)?))),
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
