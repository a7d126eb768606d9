//! What the decoder builds before `STOP`, and its expansion into a [`Value`] tree.
//!
//! Python's memo holds references: a list stored with `PUT` and read back with `GET` after more
//! `APPEND`s is the same, now longer, list. So containers and reduce results live in a flat
//! arena and travel by index ([`Item::Node`]); the stack, the memo and the containers hold
//! indices, and a memo read shares rather than copies. Scalars are immutable in Python, so they
//! travel by value ([`Item::Leaf`]); copying one only bumps a reference count.
//!
//! The arena is flat, so no input can make building or dropping it recurse. The expansion
//! recurses at most `max_depth` levels and counts every node it produces.

use super::keys::KeyRepr;
use super::PickleError;
use crate::wire::value::{ExceptionValue, SeqKind, Text, Value};
use std::collections::BTreeMap;

/// Index of a node in the arena. Only the decoder's `Machine::add` mints them, so they are
/// always valid.
pub(super) type NodeId = usize;

/// A value on the stack, in the memo or inside a container.
#[derive(Debug, Clone)]
pub(super) enum Item {
    /// A scalar or a global reference (never a container).
    Leaf(Value),
    /// A container or reduce result in the arena.
    Node(NodeId),
}

/// A container or reduce result under construction.
#[derive(Debug)]
pub(super) enum Node {
    /// A tuple or list.
    Seq(SeqKind, Vec<Item>),
    /// A dict.
    Map(Box<MapNode>),
    /// `_recon(cls, state)`: the class path and the state.
    Exception(Box<(Text, Item)>),
    /// Any other `REDUCE`: callable and arguments.
    Reduce(Box<(Item, Item)>),
}

/// A dict under construction: entries in first-insertion order, plus an index from each key's
/// Python identity to its entry, so that repeated keys are merged in `O(log n)`.
#[derive(Debug, Default)]
pub(super) struct MapNode {
    pub(super) entries: Vec<(Item, Item)>,
    pub(super) index: BTreeMap<KeyRepr, usize>,
}

/// A node and a lower bound of its depth. The bound is exact for everything but lists and
/// dicts that were shared through the memo and grew afterwards; the expansion checks the real
/// depth, the bound only makes deep inputs fail early.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) node: Node,
    pub(super) depth: u32,
}

impl Node {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Node::Seq(SeqKind::Tuple, _) => "tuple",
            Node::Seq(SeqKind::List, _) => "list",
            Node::Map(_) => "dict",
            Node::Exception(_) => "exception",
            Node::Reduce(_) => "reduce",
        }
    }

    /// Calls `f` on every direct child.
    fn for_each_child(&self, mut f: impl FnMut(&Item)) {
        match self {
            Node::Seq(_, items) => items.iter().for_each(f),
            Node::Map(m) => m.entries.iter().for_each(|(k, v)| {
                f(k);
                f(v);
            }),
            Node::Exception(e) => f(&e.1),
            Node::Reduce(r) => {
                f(&r.0);
                f(&r.1);
            }
        }
    }

    fn child_count(&self) -> usize {
        match self {
            Node::Seq(_, items) => items.len(),
            Node::Map(m) => m.entries.len().saturating_mul(2),
            Node::Exception(_) => 1,
            Node::Reduce(_) => 2,
        }
    }

    /// A copy of the node's own contents (children are copied as items: scalars by reference
    /// count, nodes by index). The dict key index is not needed any more and is left out.
    fn copy(&self) -> Node {
        match self {
            Node::Seq(kind, items) => Node::Seq(*kind, items.clone()),
            Node::Map(m) => {
                Node::Map(Box::new(MapNode { entries: m.entries.clone(), index: BTreeMap::new() }))
            }
            Node::Exception(e) => Node::Exception(e.clone()),
            Node::Reduce(r) => Node::Reduce(r.clone()),
        }
    }
}

/// Turns the arena and its root into a [`Value`] of at most `budget` nodes, nested at most
/// `max_depth` deep.
pub(super) fn expand(
    nodes: Vec<Slot>,
    root: Item,
    budget: usize,
    max_depth: u32,
) -> Result<Value, PickleError> {
    // How many places refer to each node: the root, and every container's children. Edges
    // from nodes that are no longer reachable count too, which is only ever conservative.
    let mut refs = vec![0u32; nodes.len()];
    let mut count = |item: &Item| {
        if let Item::Node(id) = item {
            refs[*id] = refs[*id].saturating_add(1);
        }
    };
    count(&root);
    for slot in &nodes {
        slot.node.for_each_child(&mut count);
    }
    Expander { nodes, refs, left: budget, budget, max_depth }.item(root, 0, false)
}

struct Expander {
    nodes: Vec<Slot>,
    refs: Vec<u32>,
    left: usize,
    budget: usize,
    max_depth: u32,
}

impl Expander {
    /// Expands an item found at nesting `level` (the root is at level 0). `shared` says that
    /// an ancestor is expanded more than once, so its descendants must be copied out of the
    /// arena rather than moved.
    ///
    /// A node referred to once, below ancestors that are each referred to once, is expanded
    /// exactly once, so moving its contents out is safe. Any cycle has a node with two
    /// referrers (one inside the cycle, one leading to it, or the root's own count), so a
    /// cycle is always copied, never moved, and ends at the depth limit.
    fn item(&mut self, item: Item, level: u32, shared: bool) -> Result<Value, PickleError> {
        match item {
            Item::Leaf(v) => {
                self.charge(1)?;
                Ok(v)
            }
            Item::Node(id) => {
                let shared = shared || self.refs[id] > 1;
                self.node(id, level, shared)
            }
        }
    }

    fn node(&mut self, id: NodeId, level: u32, shared: bool) -> Result<Value, PickleError> {
        self.charge(1)?;
        if level >= self.max_depth {
            // A container at this level would make the whole value deeper than allowed.
            return Err(PickleError::TooDeep { limit: self.max_depth });
        }
        let slot = &mut self.nodes[id].node;
        // Each child costs at least one node: refuse before copying or allocating for them.
        if slot.child_count() > self.left {
            return Err(PickleError::TooManyNodes { limit: self.budget });
        }
        let node =
            if shared { slot.copy() } else { std::mem::replace(slot, Node::Seq(SeqKind::Tuple, Vec::new())) };
        let inner = level + 1;
        Ok(match node {
            Node::Seq(kind, items) => {
                // Item and Value have the same layout, so this collects in place, reusing the
                // allocation.
                let values = items.into_iter().map(|item| self.item(item, inner, shared));
                Value::Seq(kind, values.collect::<Result<_, _>>()?)
            }
            Node::Map(m) => {
                let mut pairs = Vec::with_capacity(m.entries.len());
                for (k, v) in m.entries {
                    let key = self.item(k, inner, shared)?;
                    pairs.push((key, self.item(v, inner, shared)?));
                }
                Value::Map(pairs)
            }
            Node::Exception(e) => {
                let (class_path, state) = *e;
                let state = self.item(state, inner, shared)?;
                Value::Exception(Box::new(ExceptionValue { class_path, state }))
            }
            Node::Reduce(r) => {
                let (callable, args) = *r;
                let callable = self.item(callable, inner, shared)?;
                Value::Reduce(Box::new((callable, self.item(args, inner, shared)?)))
            }
        })
    }

    fn charge(&mut self, n: usize) -> Result<(), PickleError> {
        self.left = self.left.checked_sub(n).ok_or(PickleError::TooManyNodes { limit: self.budget })?;
        Ok(())
    }
}
