//! Rust code generated from `capnp/*.capnp` by `cargo run -p xtask -- capnp`.
//!
//! Only this file is written by hand; `cargo run -p xtask -- capnp --check` fails when the
//! other files here no longer match the schemas. The generated code is exempt from the
//! workspace's lints and formatting, because `capnpc` decides its shape.

#[rustfmt::skip]
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unimplemented,
    unused,
    rust_2018_idioms,
    unsafe_code
)]
pub mod frames_capnp;

#[rustfmt::skip]
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unimplemented,
    unused,
    rust_2018_idioms,
    unsafe_code
)]
pub mod mesh_capnp;
