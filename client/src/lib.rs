//! rdfs-client (being built).
