//! Figures about an open storage for benchmarks and monitoring.

use super::engine::Storage;
use super::file::StorageDir;

impl<D: StorageDir> Storage<D> {
    /// Heap bytes held by the in-memory index (oid → position), by the index's own accounting
    /// ([`Index::heap_bytes`](super::Index::heap_bytes)): what the index costs in memory.
    pub fn index_heap_bytes(&self) -> usize {
        self.committed().index.heap_bytes()
    }
}
