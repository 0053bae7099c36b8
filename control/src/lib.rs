//! vxwg's control plane: thin by design. It turns a coordination source (a file by default, etcd
//! for larger fleets) into what the dataplane needs — peer keys, endpoints and approved subnet
//! routes — and applies only the difference when that changes.
//!
//! Today it holds key encoding ([`keys`]) and the `wg` configuration protocol ([`uapi`]); the
//! netmap model, its sources and the diff applied to the engine come with the control-plane work.

pub mod keys;
pub mod uapi;
