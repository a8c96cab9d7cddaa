//! Every place where the server calls into the module: commands, the
//! timer, server events, keyspace notifications, the scan of the keyspace
//! and the data type's callbacks. Each `unsafe extern "C"` function lives
//! here, states its `# Safety`, and runs the module's code inside
//! [`guard`], so that no panic ever unwinds into the server (which would
//! abort it) and every panic is logged where an operator sees it.
//!
//! Nothing else in the crate is called by the server.

pub mod command;
pub mod datatype;
pub mod events;
pub mod scan;
pub mod timer;

pub use crate::panics::guard;
