//! rdfs-proto: the types every rdfs component agrees on, and nothing else.
//!
//! # Layout
//! - [`pb`]: generated prost/tonic code for the control plane (`protos/master.proto`).
//! - [`ids`]: newtypes for every id and counter that crosses a crate boundary.
//! - [`limits`]: named limits and defaults, with compile-time relations asserted.
//! - [`error_code`]: the one stable wire error code, and its mapping to/from `tonic::Status`.
//! - [`path`]: path and name validation shared by the master, the client and the CLI.
//! - [`record`]: the framed-record format of record append (client and chunkserver).
//! - [`dataplane`]: the framed TCP protocol between clients and chunkservers
//!   (bincode header + raw payload), and its async codec.
//!
//! No tasks, no server logic: callers are `rdfs-master`, `rdfs-chunkserver`, `rdfs-client`.

pub mod dataplane;
pub mod error_code;
pub mod ids;
pub mod limits;
pub mod path;
pub mod record;

/// Generated control-plane code (`rdfs.master.v1`).
#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("rdfs.master.v1");
}

pub use error_code::ErrorCode;
