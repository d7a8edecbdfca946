//! rdfs-fuse: the FUSE adapter over `rdfs-client`. Built in issue 3; empty until then.
