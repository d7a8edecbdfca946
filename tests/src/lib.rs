//! rdfs-tests: in-process cluster harness (being built).
