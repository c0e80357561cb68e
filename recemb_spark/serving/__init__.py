"""What leaves the warehouse: the versioned Redis export (codec, store, writer, lookup)."""
