//! vxwg's control plane: thin by design. It turns a coordination source (a file by default, etcd
//! for larger fleets) into what the dataplane needs — peer keys, endpoints and approved subnet
//! routes — and applies only the difference when that changes.
//!
//! Today it holds key encoding ([`keys`]); the netmap model, its sources and the diff applied to
//! the engine come with the node agent and control-plane work.

pub mod keys;
