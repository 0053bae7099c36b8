//! A TUN device name that is not ASCII (the kernel takes any bytes but '/', ':', NUL and
//! whitespace) names one device, whose queues all attach to it by that name.

mod common;

use common::{require, Netns};
use vxwg_dataplane::io::Tun;

#[test]
fn the_queues_of_a_non_ascii_name_share_one_device_of_that_name() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgs5n");
    let queues = ns.run(|| Tun::create_queues("s5-é", 2, false)).unwrap();
    let names: Vec<&str> = queues.iter().map(Tun::name).collect();
    assert_eq!(names, ["s5-é", "s5-é"], "every queue reports the name asked for");
    // While the queues are open: one device, with both of them.
    let links: Vec<String> = ns.ip("-d -o link show").lines().filter(|l| l.contains("s5-")).map(String::from).collect();
    assert_eq!(links.len(), 1, "one device, not one per spelling of its name: {links:#?}");
    assert!(links[0].contains(": s5-é:") && links[0].contains("numqueues 2 "), "{}", links[0]);
    drop(queues);
}
