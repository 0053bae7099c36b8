//! vxwg: a userspace WireGuard + VXLAN node dataplane.
//!
//! This facade re-exports the two crates so that other tools can embed vxwg:
//! [`dataplane`] (the packet engine) and [`control`] (what feeds it peers and routes), plus
//! [`apply`], which applies control-plane intents to a running engine.

pub use vxwg_control as control;
pub use vxwg_dataplane as dataplane;

pub mod apply;
