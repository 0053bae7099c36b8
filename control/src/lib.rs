//! vxwg's control plane: thin by design. It turns a coordination source (a file by default, etcd
//! for larger fleets) into what the dataplane needs — peer keys, endpoints and approved subnet
//! routes — and applies only the difference when that changes.
//!
//! - [`keys`]: WireGuard key encoding.
//! - [`uapi`]: the `wg` configuration protocol.
//! - [`netmap`]: signed documents, the trust chain, policy, route approval, and the [`netmap::Intent`]
//!   the engine should hold, with [`netmap::diff`] between two of them.
//! - [`source`]: where documents come from (a directory of files, or etcd).

pub mod keys;
pub mod netmap;
pub mod source;
pub mod uapi;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
