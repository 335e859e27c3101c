//! The mesh between Tidings nodes.
//!
//! An edge reaches the owner of a conversation through an [`OwnerHandle`]: in-process
//! when the owner runs in the same process (`tidings serve`), or over Cap'n Proto RPC on
//! TCP otherwise. A [`Router`] maps conversations and users to their owner.

pub mod cluster;
pub mod handle;
pub mod placement;
pub mod router;
pub mod rpc;
mod rpc_client;
mod rpc_server;
#[cfg(test)]
mod rpc_tests;

pub use handle::OwnerHandle;
pub use router::Router;
