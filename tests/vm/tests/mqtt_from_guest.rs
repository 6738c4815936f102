//! An alert raised in an arm64 guest arrives at a mosquitto on the host as a postcard
//! batch: the guest reaches only 10.0.2.100:1883, which QEMU forwards to the broker.

use std::time::Duration;

use edgearmor_vm::broker::{Broker, Subscriber, free_port, scratch, wait_for};
use edgearmor_vm::network::{add_virtio_net, restricted_nic_args};
use edgearmor_vm::{
    Arch, BootConfig, Initramfs, boot, cache_dir, fetch_busybox, fetch_kernel, guest_binaries,
    workspace_root,
};
use edgearmor_wire::{Data, EventBody, Message, SetIdSyscall};

#[test]
fn arm64_guest_alert_reaches_the_host_broker_as_a_postcard_batch() {
    let arch = Arch::Aarch64;
    let cache = cache_dir();
    let kernel = fetch_kernel(&cache, arch, "6.12").expect("kernel");
    let busybox = fetch_busybox(&cache, arch).expect("busybox");
    let bins = guest_binaries(arch).expect("static binaries");
    let work = workspace_root().join("target/vm-runs/mqtt-aarch64");
    std::fs::create_dir_all(&work).expect("work dir");

    let port = free_port();
    let _broker = Broker::start(&scratch(&work, "host"), port, "");
    let sub = Subscriber::connect(port, "vm-host-sub");

    let guest = workspace_root().join("tests/vm/guest");
    let mut initramfs = Initramfs::busybox_base(&busybox);
    let net_setup = add_virtio_net(&mut initramfs, &kernel).expect("virtio-net modules");
    initramfs
        .file_bytes("/etc/net-setup.sh", net_setup, 0o644)
        .file_from_host("/init", &guest.join("mqtt-init.sh"), 0o755)
        .file_from_host("/usr/local/bin/edgearmor", &bins.agent, 0o755)
        .file_from_host("/usr/local/bin/setid-probe", &bins.setid_probe, 0o755)
        .file_from_host(
            "/etc/edgearmor/rules.toml",
            &guest.join("setid-rules.toml"),
            0o644,
        );
    let initrd = work.join("initramfs.cpio");
    initramfs.write(&initrd).expect("initramfs");
    let mut cfg = BootConfig::new(kernel, &initrd, work.join("console.log"));
    cfg.done_marker = "EA-DONE".into();
    cfg.extra_append = "quiet loglevel=1".into();
    cfg.extra_qemu_args = restricted_nic_args(port);
    cfg.timeout = Duration::from_secs(600);
    let log = boot(&cfg).expect("guest ran");
    let err: Vec<&str> = log.lines_with_prefix("EA-AGENTERR ").collect();
    assert_eq!(
        log.first_with_prefix("EA-CONNECTED "),
        Some("1"),
        "agent reached the broker: {err:?}"
    );
    assert_eq!(
        log.first_with_prefix("EA-AGENT-EXIT "),
        Some("0"),
        "{err:?}"
    );
    let helper = log.first_with_prefix("EA-SETID ").expect("helper ran");
    assert!(
        helper.contains("rc=-1 errno=1"),
        "setgid blocked in the guest: {helper}"
    );
    let pid: u32 = helper
        .split_whitespace()
        .find_map(|f| f.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("helper pid");

    // The agent exited after the broker acknowledged its batches (EA-AGENT-EXIT 0):
    // once the barrier is back, every one of them has reached the subscriber too.
    sub.barrier();
    wait_for("the guest's alert at the host broker", || {
        !sub.on_topic("gw-arm64/events").is_empty()
    });
    let batches: Vec<_> = sub
        .on_topic("vmtest/gw-arm64/events")
        .into_iter()
        .map(|(p, _)| match edgearmor_wire::decode(&p) {
            Ok(Message::Batch(b)) => b,
            other => panic!("not a batch: {other:?}"),
        })
        .collect();
    let alerts: Vec<_> = batches
        .iter()
        .flat_map(|b| b.events.iter())
        .filter_map(|e| match &e.body {
            EventBody::Alert(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(alerts.len(), 1, "exactly the one blocked call: {alerts:?}");
    let a = &alerts[0];
    assert_eq!(a.pid, pid);
    assert_eq!(a.process.as_str(), "/usr/sbin/sshd");
    assert_eq!(
        a.data,
        Data::SetId {
            syscall: SetIdSyscall::Setgid,
            id: 0
        }
    );
    assert_eq!(batches[0].agent.cluster.as_str(), "vmtest");
    let status = sub.on_topic("vmtest/gw-arm64/status");
    let birth = String::from_utf8_lossy(&status[0].0).into_owned();
    assert!(
        birth.contains("\"enforcement\":\"available\"") && birth.contains("6.12"),
        "{birth}"
    );
}
