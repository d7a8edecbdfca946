//! rdfs-chunkserver (being built).
