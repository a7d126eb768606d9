//! The fast path of the pickle decoder, for the pickles ZEO peers actually send.
//!
//! ZEO pickles in fast mode: no memo opcodes, so no value is ever shared, and every container
//! can be built as a [`Value`] the moment its opcode runs, with one allocation for its items.
//! This decoder does exactly that, on one stack of values (marks are kept beside it, as stack
//! heights). It gives up (returns `None`) the moment it meets anything it does not handle
//! exactly as the general decoder would: a memo opcode, `DUP`, a dict key other than `None`,
//! a bool, an int, bytes or a str, a dict of more than [`MAX_DIRECT_MAP`] entries, more than
//! [`MAX_MARKS`] marks open at once, the node budget running out, or any error at all. The caller
//! then runs the general decoder from the start, which decides. So its result, when there is
//! one, is always the general decoder's result (the tests in `direct_tests` check this), and
//! its errors never need to match.
//!
//! Why the result is the same: without memo and `DUP`, each value is pushed once and used at
//! most once, so the general decoder's arena holds a tree, and its expansion moves every node
//! out exactly once, into the same shape built here. The limits agree too: depths are exact
//! here as there (no shared list can grow behind a container's back) and are checked at the
//! same points; each node the general decoder would produce (or visit as a dict key) was
//! pushed here, and pushes are counted against the same budget.

use super::input::Input;
use super::PickleError;
use crate::wire::value::{ExceptionValue, Limits, SeqKind, Text, TopLevel, Value};
use bytes::Bytes;

/// Dicts larger than this go to the general decoder, whose key index merges repeated keys in
/// `O(log n)`; here a key is compared with every earlier one.
pub(super) const MAX_DIRECT_MAP: usize = 32;

/// Depth limits from this one up are left to the general decoder.
const MAX_DIRECT_DEPTH: u32 = 1 << 20;

/// Marks open at once that this path keeps track of; more go to the general decoder.
const MAX_MARKS: usize = 8;

/// A value on the stack and its nesting depth.
struct Entry {
    value: Value,
    depth: u32,
}

/// The fast path gave up; the general decoder decides.
struct GiveUp;

impl From<PickleError> for GiveUp {
    fn from(_: PickleError) -> GiveUp {
        GiveUp
    }
}

/// Decodes a memo-free pickle, or returns `None` if the general decoder must decide (see the
/// module documentation). `budget` is the general decoder's node budget.
pub(super) fn decode(payload: &Bytes, limits: &Limits, budget: usize) -> Option<Value> {
    match run(payload, limits, budget, false)? {
        TopLevel::Other(value) => Some(value),
        TopLevel::Four(items) => Some(Value::tuple(Vec::from(items))),
    }
}

/// [`decode`], except that a pickle of a 4-tuple built by `MARK … TUPLE` right before `STOP`
/// (every ZEO message) comes back as its four items, without allocating the tuple.
pub(super) fn decode_top(payload: &Bytes, limits: &Limits, budget: usize) -> Option<TopLevel> {
    run(payload, limits, budget, true)
}

fn run(payload: &Bytes, limits: &Limits, budget: usize, split_top: bool) -> Option<TopLevel> {
    // Depths are kept in a `u32`; no real limit comes anywhere near this one.
    if limits.max_depth >= MAX_DIRECT_DEPTH {
        return None;
    }
    let mut d = Direct {
        input: Input::new(payload),
        // Enough for any ZEO call's envelope and arguments without growing.
        stack: Vec::with_capacity(12),
        marks: [0; MAX_MARKS],
        open_marks: 0,
        max_depth: limits.max_depth,
        nodes_left: budget,
        split_top,
    };
    d.run().ok()
}

struct Direct<'a> {
    input: Input<'a>,
    stack: Vec<Entry>,
    /// Stack heights at each open `MARK`, innermost last (`open_marks` of them). As in the
    /// general decoder (and CPython), values below the innermost mark cannot be popped by
    /// single-value opcodes.
    marks: [usize; MAX_MARKS],
    open_marks: usize,
    max_depth: u32,
    /// Pushes still allowed.
    nodes_left: usize,
    /// Whether to hand a top-level 4-tuple over as its items.
    split_top: bool,
}

impl Direct<'_> {
    fn run(&mut self) -> Result<TopLevel, GiveUp> {
        loop {
            let (op, offset) = self.input.next_op().ok_or(GiveUp)?;
            match op {
                b'.' => return self.stop(),
                0x80 => self.input.proto(offset)?,
                b'(' => {
                    *self.marks.get_mut(self.open_marks).ok_or(GiveUp)? = self.stack.len();
                    self.open_marks += 1;
                }
                b'N' => self.push(Value::None, 0)?,
                0x88 => self.push(Value::Bool(true), 0)?,
                0x89 => self.push(Value::Bool(false), 0)?,
                // The opcodes ZEO messages are made of get arms of their own, so that the
                // (inlined) readers are specialised to them.
                b'K' => {
                    let v = self.input.int(b'K', offset)?;
                    self.push(v, 0)?;
                }
                0x8a => {
                    let v = self.input.int(0x8a, offset)?;
                    self.push(v, 0)?;
                }
                b'C' => {
                    let v = self.input.bytes(b'C', offset)?;
                    self.push(v, 0)?;
                }
                b'B' => {
                    let v = self.input.bytes(b'B', offset)?;
                    self.push(v, 0)?;
                }
                b'X' => {
                    let v = self.input.text(offset)?;
                    self.push(v, 0)?;
                }
                b'M' | b'J' | 0x8b | b'I' | b'L' => {
                    let v = self.input.int(op, offset)?;
                    self.push(v, 0)?;
                }
                b'G' | b'F' => {
                    let v = self.input.float(op, offset)?;
                    self.push(v, 0)?;
                }
                b'U' | b'T' => {
                    let v = self.input.bytes(op, offset)?;
                    self.push(v, 0)?;
                }
                b'c' => {
                    let v = self.input.global(offset)?;
                    self.push(v, 0)?;
                }
                b')' => self.push(Value::Seq(SeqKind::Tuple, Vec::new()), 1)?,
                b']' => self.push(Value::Seq(SeqKind::List, Vec::new()), 1)?,
                b'}' => self.push(Value::Map(Vec::new()), 1)?,
                b't' | b'l' => {
                    let mark = self.pop_mark()?;
                    if op == b't'
                        && self.split_top
                        && mark == 0
                        && self.stack.len() == 4
                        && self.input.at_stop()
                    {
                        return self.top_four();
                    }
                    let (items, depth) = self.drain_above(mark);
                    let kind = if op == b't' { SeqKind::Tuple } else { SeqKind::List };
                    self.push(Value::Seq(kind, items), depth + 1)?;
                }
                0x85..=0x87 => {
                    let from = self.above_fence(usize::from(op - 0x84))?;
                    let (items, depth) = self.drain_above(from);
                    self.push(Value::Seq(SeqKind::Tuple, items), depth + 1)?;
                }
                b'd' => {
                    let mark = self.pop_mark()?;
                    let mut map = Entry { value: Value::Map(Vec::new()), depth: 1 };
                    self.insert_pairs(&mut map, mark)?;
                    self.push(map.value, map.depth)?;
                }
                b'a' => {
                    // The item and the list below it, both above the innermost mark.
                    self.above_fence(2)?;
                    let item = self.stack.pop().ok_or(GiveUp)?;
                    let list = self.stack.last_mut().ok_or(GiveUp)?;
                    let Value::Seq(SeqKind::List, items) = &mut list.value else { return Err(GiveUp) };
                    items.push(item.value);
                    list.depth = list.depth.max(item.depth + 1);
                    if list.depth > self.max_depth {
                        return Err(GiveUp);
                    }
                }
                b'e' => {
                    // Everything above the mark, into the list just below it (which must be
                    // above the next mark).
                    let mark = self.pop_mark()?;
                    if mark <= self.fence() {
                        return Err(GiveUp);
                    }
                    let (new, depth) = self.drain_above(mark);
                    let list = self.stack.last_mut().ok_or(GiveUp)?;
                    let Value::Seq(SeqKind::List, items) = &mut list.value else { return Err(GiveUp) };
                    items.extend(new);
                    list.depth = list.depth.max(depth + 1);
                    if list.depth > self.max_depth {
                        return Err(GiveUp);
                    }
                }
                b's' | b'u' => {
                    // SETITEM: key and value, with the dict below, all above the innermost mark.
                    // SETITEMS: everything above the mark, with the dict just below the mark
                    // (and above the next one).
                    let from = if op == b's' {
                        self.above_fence(3)? + 1
                    } else {
                        let mark = self.pop_mark()?;
                        if mark <= self.fence() {
                            return Err(GiveUp);
                        }
                        mark
                    };
                    let mut map = std::mem::replace(
                        self.stack.get_mut(from - 1).ok_or(GiveUp)?,
                        Entry { value: Value::None, depth: 0 },
                    );
                    self.insert_pairs(&mut map, from)?;
                    self.stack.truncate(from - 1);
                    self.stack.push(map);
                }
                b'0' => {
                    // As in CPython, POP removes a mark when the mark is on top.
                    if self.open_marks > 0 && self.fence() == self.stack.len() {
                        self.open_marks -= 1;
                    } else {
                        self.above_fence(1)?;
                        self.stack.pop();
                    }
                }
                b'1' => {
                    let mark = self.pop_mark()?;
                    self.stack.truncate(mark);
                }
                b'R' => self.reduce()?,
                // Memo opcodes, DUP, and everything the general decoder refuses.
                _ => return Err(GiveUp),
            }
        }
    }

    fn stop(&mut self) -> Result<TopLevel, GiveUp> {
        match self.stack.as_mut_slice() {
            [root] if self.open_marks == 0 && self.input.at_end() => {
                Ok(TopLevel::Other(std::mem::replace(&mut root.value, Value::None)))
            }
            _ => Err(GiveUp),
        }
    }

    /// `TUPLE` of the four values above the one mark, with `STOP` next and last: the limits
    /// as for building the tuple, then its items.
    fn top_four(&mut self) -> Result<TopLevel, GiveUp> {
        if self.open_marks != 0 {
            return Err(GiveUp);
        }
        let depth = self.stack.iter().map(|e| e.depth).max().unwrap_or(0) + 1;
        if depth > self.max_depth {
            return Err(GiveUp);
        }
        self.nodes_left = self.nodes_left.checked_sub(1).ok_or(GiveUp)?;
        let mut pop = || self.stack.pop().map(|e| e.value).ok_or(GiveUp);
        let (d, c, b, a) = (pop()?, pop()?, pop()?, pop()?);
        Ok(TopLevel::Four([a, b, c, d]))
    }

    /// Pushes a value of nesting `depth`, within the depth limit and the node budget.
    fn push(&mut self, value: Value, depth: u32) -> Result<(), GiveUp> {
        if depth > self.max_depth {
            return Err(GiveUp);
        }
        self.nodes_left = self.nodes_left.checked_sub(1).ok_or(GiveUp)?;
        self.stack.push(Entry { value, depth });
        Ok(())
    }

    /// The stack height at the innermost mark (0 if none).
    fn fence(&self) -> usize {
        self.open_marks.checked_sub(1).and_then(|i| self.marks.get(i)).copied().unwrap_or(0)
    }

    /// Where the top `n` values start, if they are all above the innermost mark.
    fn above_fence(&self, n: usize) -> Result<usize, GiveUp> {
        match self.stack.len().checked_sub(n) {
            Some(from) if from >= self.fence() => Ok(from),
            _ => Err(GiveUp),
        }
    }

    /// Closes the innermost mark and returns the stack height it was set at.
    fn pop_mark(&mut self) -> Result<usize, GiveUp> {
        self.open_marks = self.open_marks.checked_sub(1).ok_or(GiveUp)?;
        let mark = self.marks.get(self.open_marks).copied().ok_or(GiveUp)?;
        // The stack never shrinks below an open mark; should it have, give up.
        if mark > self.stack.len() {
            return Err(GiveUp);
        }
        Ok(mark)
    }

    /// Removes the entries from `from` up and returns their values, in one allocation, and
    /// their greatest depth.
    fn drain_above(&mut self, from: usize) -> (Vec<Value>, u32) {
        let mut items = Vec::with_capacity(self.stack.len().saturating_sub(from));
        let mut depth = 0;
        for e in self.stack.drain(from..) {
            depth = depth.max(e.depth);
            items.push(e.value);
        }
        (items, depth)
    }

    /// Moves the `k v k v …` entries from `from` up into the dict `map`, with Python's rules
    /// for repeated keys (first position and first key object, last value).
    fn insert_pairs(&mut self, map: &mut Entry, from: usize) -> Result<(), GiveUp> {
        let pairs = self.stack.get(from..).ok_or(GiveUp)?;
        if pairs.len() % 2 != 0 || !pairs.iter().step_by(2).all(|k| simple_key(&k.value)) {
            return Err(GiveUp);
        }
        let Value::Map(entries) = &mut map.value else { return Err(GiveUp) };
        let mut depth = 0;
        let mut drain = self.stack.drain(from..);
        while let (Some(k), Some(v)) = (drain.next(), drain.next()) {
            depth = depth.max(k.depth).max(v.depth);
            if let Some(entry) = entries.iter_mut().find(|(old, _)| same_key(old, &k.value)) {
                entry.1 = v.value;
            } else if entries.len() < MAX_DIRECT_MAP {
                entries.push((k.value, v.value));
            } else {
                return Err(GiveUp);
            }
        }
        map.depth = map.depth.max(depth + 1);
        if map.depth > self.max_depth {
            return Err(GiveUp);
        }
        Ok(())
    }

    /// `REDUCE`, recognising `ZODB.POSException._recon((module.Class, state))` as an exception
    /// the way the general decoder does.
    fn reduce(&mut self) -> Result<(), GiveUp> {
        self.above_fence(2)?;
        let args = self.stack.pop().ok_or(GiveUp)?;
        let callable = self.stack.pop().ok_or(GiveUp)?;
        // The args tuple is `(global, state)`, one deeper than the state: the exception that
        // replaces it is exactly as deep as it.
        let depth = args.depth.max(callable.depth) + 1;
        match recon(callable.value, args.value) {
            Ok((class_path, state)) => {
                self.push(Value::Exception(Box::new(ExceptionValue { class_path, state })), args.depth)
            }
            Err((callable, args)) => self.push(Value::Reduce(Box::new((callable, args))), depth),
        }
    }
}

/// The class path and state of a `_recon` call, or the callable and arguments back.
fn recon(callable: Value, args: Value) -> Result<(Text, Value), (Value, Value)> {
    let is_recon = matches!(&callable, Value::Global(g)
        if g.0.as_bytes() == "ZODB.POSException".as_bytes() && g.1.as_bytes() == "_recon".as_bytes());
    let class_ok = match &args {
        Value::Seq(SeqKind::Tuple, items) => {
            matches!(items.as_slice(), [Value::Global(class), _] if !class.1.as_bytes().contains(&b'.'))
        }
        _ => false,
    };
    if !(is_recon && class_ok) {
        return Err((callable, args));
    }
    let Value::Seq(_, items) = args else { return Err((callable, Value::None)) };
    let mut items = items.into_iter();
    match (items.next(), items.next()) {
        (Some(Value::Global(class)), Some(state)) => {
            let (module, name) = *class;
            Ok((Text::from(format!("{module}.{name}")), state))
        }
        // Checked above; unreachable.
        _ => Err((callable, Value::None)),
    }
}

/// Keys this path compares itself; anything else goes to the general decoder.
fn simple_key(v: &Value) -> bool {
    matches!(v, Value::None | Value::Bool(_) | Value::Int(_) | Value::Bytes(_) | Value::Str(_))
}

/// Python's equality of two [`simple_key`]s (`True == 1`; `b'a' != 'a'`).
fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::None, Value::None) => true,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x.as_bytes() == y.as_bytes(),
        (Value::Bool(_) | Value::Int(_), Value::Bool(_) | Value::Int(_)) => a.as_int() == b.as_int(),
        _ => false,
    }
}
