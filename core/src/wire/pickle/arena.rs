//! The arena the decoder builds (flat nodes whose children are indices, so that memo reads
//! share rather than copy), and its expansion into a [`Value`] tree.

use super::keys::KeyRepr;
use super::PickleError;
use crate::wire::value::{ExceptionValue, SeqKind, Text, Value};
use std::collections::BTreeMap;

/// Index of a node in the arena. Only the decoder's `Machine::add` mints them, so they are
/// always valid.
pub(super) type NodeId = usize;

/// One value under construction.
#[derive(Debug)]
pub(super) enum Node {
    /// A scalar or a global reference: never has children.
    Leaf(Value),
    /// A tuple or list.
    Seq(SeqKind, Vec<NodeId>),
    /// A dict.
    Map(MapNode),
    /// `_recon(cls, state)`: the class path and the state node.
    Exception(Text, NodeId),
    /// Any other `REDUCE`: callable and arguments.
    Reduce(NodeId, NodeId),
}

impl Node {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Node::Leaf(v) => v.type_name(),
            Node::Seq(SeqKind::Tuple, _) => "tuple",
            Node::Seq(SeqKind::List, _) => "list",
            Node::Map(_) => "dict",
            Node::Exception(..) => "exception",
            Node::Reduce(..) => "reduce",
        }
    }
}

/// A dict under construction: entries in first-insertion order, plus an index from each key's
/// Python identity to its entry, so that repeated keys are merged in `O(log n)`.
#[derive(Debug, Default)]
pub(super) struct MapNode {
    pub(super) entries: Vec<(NodeId, NodeId)>,
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

/// Turns the arena into a [`Value`] tree, counting every node produced.
pub(super) struct Expander<'a> {
    nodes: &'a [Slot],
    left: usize,
    budget: usize,
    max_depth: u32,
}

impl<'a> Expander<'a> {
    /// An expander that may produce at most `budget` nodes nested at most `max_depth` deep.
    pub(super) fn new(nodes: &'a [Slot], budget: usize, max_depth: u32) -> Self {
        Expander { nodes, left: budget, budget, max_depth }
    }

    /// Expands node `id` found at nesting `level` (the root is at level 0).
    pub(super) fn expand(&mut self, id: NodeId, level: u32) -> Result<Value, PickleError> {
        let nodes = self.nodes;
        let node = &nodes[id].node;
        self.charge(1)?;
        if !matches!(node, Node::Leaf(_)) && level >= self.max_depth {
            // A container at this level would make the whole value deeper than allowed.
            return Err(PickleError::TooDeep { limit: self.max_depth });
        }
        let inner = level + 1;
        Ok(match node {
            Node::Leaf(v) => v.clone(),
            Node::Seq(kind, items) => {
                // Each child costs at least one node: refuse before allocating for them.
                self.check_room(items.len())?;
                let values = items.iter().map(|&c| self.expand(c, inner));
                Value::Seq(*kind, values.collect::<Result<_, _>>()?)
            }
            Node::Map(m) => {
                self.check_room(m.entries.len().saturating_mul(2))?;
                let pairs = m.entries.iter().map(|&(k, v)| {
                    let key = self.expand(k, inner)?;
                    Ok((key, self.expand(v, inner)?))
                });
                Value::Map(pairs.collect::<Result<_, PickleError>>()?)
            }
            Node::Exception(class_path, state) => Value::Exception(Box::new(ExceptionValue {
                class_path: class_path.clone(),
                state: self.expand(*state, inner)?,
            })),
            Node::Reduce(callable, args) => {
                let callable = self.expand(*callable, inner)?;
                Value::Reduce(Box::new((callable, self.expand(*args, inner)?)))
            }
        })
    }

    fn charge(&mut self, n: usize) -> Result<(), PickleError> {
        self.left = self.left.checked_sub(n).ok_or(PickleError::TooManyNodes { limit: self.budget })?;
        Ok(())
    }

    fn check_room(&self, n: usize) -> Result<(), PickleError> {
        if n > self.left {
            return Err(PickleError::TooManyNodes { limit: self.budget });
        }
        Ok(())
    }
}
