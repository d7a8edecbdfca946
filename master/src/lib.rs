//! rdfs-master (being built).
