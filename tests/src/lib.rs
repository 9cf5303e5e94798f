//! Test harness: namespaces, nodes, packets.
