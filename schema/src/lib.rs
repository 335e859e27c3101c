//! Wire types of Tidings: everything that crosses a process boundary.
//!
//! This crate holds the Cap'n Proto schemas (`capnp/`) with their generated Rust code
//! (`src/generated/`), the Rust-side frame types that the rest of the workspace uses
//! ([`frame`], [`mesh`]), the codec that maps between the two ([`codec`]), the table of
//! stable error codes ([`error`]) and the id schemes every language must compute alike
//! ([`ids`]). It does no network I/O of its own beyond reading and writing framed
//! messages on a caller's stream.

pub mod codec;
pub mod error;
pub mod frame;
pub mod generated;
pub mod ids;
pub mod mesh;
pub mod mesh_codec;
pub mod presence;
mod presence_codec;
pub mod receipt;
mod receipt_codec;

pub use error::{CloseCode, ErrorCode, Rejection};
pub use frame::Frame;
