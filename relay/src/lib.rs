//! The mesh between Tidings nodes.
//!
//! An edge reaches the owner of a conversation through an [`OwnerHandle`]: in-process
//! when the owner runs in the same process (`tidings serve`), or over Cap'n Proto RPC on
//! TCP otherwise. A [`Router`] maps conversations and users to their owner.
//!
//! In a multi-owner cluster, [`placement`] maps virtual shards to owners,
//! [`placement_record`] refuses owner-set changes that would move a shard's data,
//! [`mesh_tls`] runs the mesh over mutual TLS, and [`peers::MeshPeers`] carries the
//! owner-to-owner calls (inbox rows of users homed on another owner).

pub mod cluster;
mod edge_positions;
pub mod handle;
pub mod mesh_tls;
pub mod peers;
pub mod placement;
pub mod placement_record;
pub mod router;
pub mod rpc;
mod rpc_client;
#[cfg(test)]
mod rpc_replay_tests;
mod rpc_server;
#[cfg(test)]
mod rpc_tests;
#[cfg(test)]
mod rpc_tls_tests;

pub use handle::OwnerHandle;
pub use router::Router;
