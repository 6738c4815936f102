//! The real gateway: a Debian 12 image built from Debian's packages (systemd as PID 1,
//! openssh-server, apt and dpkg), booted from a virtio disk with the Debian kernel, with
//! the agent installed as the Yocto layer installs it: its packages `edgearmor` (binary
//! and the layer's systemd unit, unchanged), `edgearmor-config` (the layer's agent.toml
//! with an integrator's changes, and rules.toml) and `edgearmor-policies` (policies/).
//! One boot per architecture runs every scenario of `tests/vm/guest/debian/scenarios.sh`:
//! systemd starts the agent, the package managers are denied by the shipped policy with
//! alerts at a mosquitto on the host (decoded there to KubeArmor JSON), an ssh login from
//! the host to the guest's sshd, and a SIGSTOPped agent restarted by systemd's watchdog
//! with enforcement unbroken.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use edgearmor_vm::broker::{Broker, free_port, scratch, wait_for};
use edgearmor_vm::debian::{
    DebianRootfs, GatewayImage, build_deb, fetch_debian_rootfs, gateway_initramfs,
};
use edgearmor_vm::network::GUEST_BROKER;
use edgearmor_vm::process::WatchedProcess;
use edgearmor_vm::{
    Arch, BootConfig, BootLog, boot, cache_dir, fetch_busybox, fetch_kernel, guest_binaries,
    workspace_root,
};

const LAYER: &str = "yocto-layer/meta-edgearmor/recipes-security/edgearmor/files";

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The layer's agent.toml with what this gateway needs, as an integrator's bbappend ships
/// it: its cluster, the broker, and the policies package's directory enforced. Each
/// change must apply exactly once, so a changed layer file fails here, not in the guest.
fn integrator_agent_toml(layer: &str) -> String {
    let edits = [
        ("cluster = \"default\"", "cluster = \"vmtest\"".to_owned()),
        (
            "rules = [\"/etc/edgearmor/rules.toml\"]",
            "rules = [\"/etc/edgearmor/rules.toml\"]\npolicies = [\"/etc/edgearmor/policies\"]"
                .to_owned(),
        ),
        ("broker = \"\"", format!("broker = \"{GUEST_BROKER}\"")),
    ];
    let mut text = layer.to_owned();
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "layer agent.toml: {from}");
        text = text.replace(from, &to);
    }
    // The test counts every alert of a burst of denied execs (two per attempt where the
    // shell tries both /usr/bin and /bin); the throttle has tests of its own.
    text.push_str("\n[throttle]\nmax_alerts_per_sec = 0\n");
    text
}

/// The recipe's packages (edgearmor_0.1.0.bb: do_install, PACKAGES, FILES, CONFFILES).
fn edgearmor_debs(arch: Arch, agent: &Path, out: &Path) -> Vec<PathBuf> {
    let root = workspace_root();
    let layer = root.join(LAYER);
    let deb_arch = arch.debian();
    let control = |name: &str, arch: &str, depends: &str| {
        format!(
            "Package: {name}\nVersion: 0.1.0\nArchitecture: {arch}\nMaintainer: edgearmor\n\
             {depends}Description: {name} (as the Yocto layer packages it)\n"
        )
    };
    let agent_toml = String::from_utf8(read(&layer.join("agent.toml"))).expect("utf-8");
    let mut policies: Vec<(String, Vec<u8>, u32)> = std::fs::read_dir(root.join("policies"))
        .expect("policies/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let name = p.file_name().map(|f| f.to_string_lossy().into_owned());
            let guest = format!("etc/edgearmor/policies/{}", name.unwrap_or_default());
            (guest, read(&p), 0o644)
        })
        .collect();
    policies.sort();
    let policy_files: Vec<(&str, Vec<u8>, u32)> = policies
        .iter()
        .map(|(p, b, m)| (p.as_str(), b.clone(), *m))
        .collect();
    let policy_conffiles: Vec<String> = policies.iter().map(|(p, _, _)| format!("/{p}")).collect();
    let policy_conffiles: Vec<&str> = policy_conffiles.iter().map(String::as_str).collect();
    vec![
        build_deb(
            out,
            &control("edgearmor", deb_arch, "Depends: edgearmor-config\n"),
            &[
                ("usr/bin/edgearmor", read(agent), 0o755),
                (
                    "lib/systemd/system/edgearmor.service",
                    read(&layer.join("edgearmor.service")),
                    0o644,
                ),
            ],
            &[],
        )
        .expect("edgearmor.deb"),
        build_deb(
            out,
            &control("edgearmor-config", "all", ""),
            &[
                (
                    "etc/edgearmor/agent.toml",
                    integrator_agent_toml(&agent_toml).into_bytes(),
                    0o644,
                ),
                (
                    "etc/edgearmor/rules.toml",
                    read(&layer.join("rules.toml")),
                    0o644,
                ),
            ],
            &["/etc/edgearmor/agent.toml", "/etc/edgearmor/rules.toml"],
        )
        .expect("edgearmor-config.deb"),
        build_deb(
            out,
            &control("edgearmor-policies", "all", ""),
            &policy_files,
            &policy_conffiles,
        )
        .expect("edgearmor-policies.deb"),
    ]
}

/// A one-file package for the guest's `dpkg -i` / `apt-get install` attempts.
fn tiny_deb(out: &Path) -> PathBuf {
    build_deb(
        out,
        "Package: ea-tiny\nVersion: 1.0\nArchitecture: all\nMaintainer: edgearmor\n\
         Description: a package the gateway must refuse to install\n",
        &[("usr/share/ea-tiny/installed", b"yes\n".to_vec(), 0o644)],
        &[],
    )
    .expect("ea-tiny.deb")
}

/// Connects to the guest's handshake port until the guest answers "go" (a connection
/// made before its `nc -l` listens is accepted by QEMU and then closed empty).
fn release_guest(port: u16) {
    wait_for("the guest to take the handshake", || {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.trim() == "go"
    });
}

/// What `ssh root@guest` printed and how it ended.
#[derive(Debug, Default, Clone)]
struct Login {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn ssh_login(work: &Path, port: u16) -> Login {
    let out = Command::new("ssh")
        .arg("-i")
        .arg(work.join("id_ed25519"))
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            work.join("known_hosts").display()
        ))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=120",
            "-p",
            &port.to_string(),
            "root@127.0.0.1",
            "echo EA-LOGIN $(id -un) $(cat /proc/self/loginuid)",
        ])
        .output()
        .expect("ssh runs");
    Login {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The decoder's KubeArmor alerts (MatchedHostPolicy lines) as JSON values.
fn alerts(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"Type\":\"MatchedHostPolicy\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn field<'a>(alert: &'a serde_json::Value, name: &str) -> &'a str {
    alert.get(name).and_then(|v| v.as_str()).unwrap_or("")
}

fn with_process<'a>(
    all: &'a [serde_json::Value],
    policy: &str,
    process: &str,
) -> Vec<&'a serde_json::Value> {
    all.iter()
        .filter(|a| field(a, "PolicyName") == policy && field(a, "ProcessName") == process)
        .collect()
}

/// The package managers the guest tried, each of which must be named by an alert.
const DENIED: [&str; 4] = [
    "/usr/bin/apt-get",
    "/usr/bin/dpkg",
    "/usr/bin/apt",
    "/usr/bin/dpkg-deb",
];

/// Whether the decoder has every kind of alert the scenarios raise: each denied package
/// manager, and sshd's setid-family call under Block and then under Audit.
fn every_alert_arrived(all: &[serde_json::Value]) -> bool {
    let sshd = with_process(all, "block-sshd-setid", "/usr/sbin/sshd");
    DENIED
        .iter()
        .all(|p| !with_process(all, "block-package-managers", p).is_empty())
        && ["Block", "Audit"]
            .iter()
            .all(|action| sshd.iter().any(|a| field(a, "Action") == *action))
}

/// One line per alert: policy, process, action (for failure messages).
fn summary(all: &[serde_json::Value]) -> Vec<String> {
    all.iter()
        .map(|a| {
            format!(
                "{} {} {}",
                field(a, "PolicyName"),
                field(a, "ProcessName"),
                field(a, "Action")
            )
        })
        .collect()
}

/// Prepares the run directory: keys, packages, the staged image and its disk.
fn stage(arch: Arch, rootfs: &DebianRootfs, work: &Path) -> PathBuf {
    let bins = guest_binaries(arch).expect("static binaries");
    let key = work.join("id_ed25519");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(work.join("id_ed25519.pub"));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "vm-test", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let debs = work.join("debs");
    std::fs::create_dir_all(&debs).expect("debs dir");
    let packages = edgearmor_debs(arch, &bins.agent, &debs);
    let tiny = tiny_deb(&debs);

    let image = GatewayImage::stage(rootfs, work).expect("staged rootfs");
    image.install_debs(&packages).expect("edgearmor packages");
    // SYSTEMD_AUTO_ENABLE = "enable": Yocto enables the unit when it builds the rootfs.
    image.enable_unit("edgearmor.service").expect("enable");
    let guest = workspace_root().join("tests/vm/guest/debian");
    image
        .file(
            "/root/.ssh/authorized_keys",
            read(&work.join("id_ed25519.pub")),
            0o600,
        )
        .expect("authorized_keys");
    std::fs::set_permissions(
        image.path("/root/.ssh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod .ssh");
    image
        .file("/root/ea-tiny_1.0_all.deb", read(&tiny), 0o644)
        .expect("tiny deb");
    image
        .file(
            "/usr/local/lib/ea-test/scenarios.sh",
            read(&guest.join("scenarios.sh")),
            0o755,
        )
        .expect("scenarios");
    image
        .file(
            "/etc/systemd/system/ea-scenarios.service",
            read(&guest.join("ea-scenarios.service")),
            0o644,
        )
        .expect("unit");
    image.enable_unit("ea-scenarios.service").expect("enable");
    let host_key = String::from_utf8(read(&image.path("/etc/ssh/ssh_host_ed25519_key.pub")))
        .expect("host key");
    let mut host_key = host_key.split_whitespace();
    let known = format!(
        "[127.0.0.1]:* {} {}\n",
        host_key.next().unwrap_or_default(),
        host_key.next().unwrap_or_default()
    );
    std::fs::write(work.join("known_hosts"), known).expect("known_hosts");
    let disk = work.join("disk.ext4");
    image.write_ext4(&disk, 1024).expect("ext4 image");
    std::fs::remove_dir_all(&image.root).expect("remove the staged tree");
    disk
}

/// What the host did while the guest ran.
#[derive(Debug, Default)]
struct HostSide {
    ssh_block: Login,
    ssh_audit: Login,
    ready_after: Option<Duration>,
}

fn gateway(arch: Arch) {
    let cache = cache_dir();
    let kernel = fetch_kernel(&cache, arch, "6.12").expect("kernel");
    let busybox = fetch_busybox(&cache, arch).expect("busybox");
    let rootfs = fetch_debian_rootfs(&cache, arch).expect("Debian rootfs");
    if let Some(t) = rootfs.built_in {
        eprintln!(
            "debian_gateway: built the {arch} image in {:.1} s",
            t.as_secs_f64()
        );
    }
    let work = workspace_root().join(format!("target/vm-runs/debian-gateway-{arch}"));
    std::fs::create_dir_all(&work).expect("work dir");
    let staged = Instant::now();
    let disk = stage(arch, &rootfs, &work);
    eprintln!(
        "debian_gateway: staged the {arch} disk in {:.1} s",
        staged.elapsed().as_secs_f64()
    );

    let port = free_port();
    let _broker = Broker::start(&scratch(&work, "host"), port, "");
    let decoded = work.join("decoded.json");
    let _ = std::fs::remove_file(&decoded);
    let decoder_bin = guest_binaries(Arch::X86_64).expect("host decoder").decoder;
    let mut command = Command::new(&decoder_bin);
    command
        .args(["--broker", &format!("127.0.0.1:{port}"), "--output"])
        .arg(&decoded);
    let decoder = WatchedProcess::spawn(command);
    wait_for("decoder ready", || {
        decoder.stderr().contains("edgearmor-decode: ready:")
    });

    let initrd = work.join("initramfs.cpio");
    gateway_initramfs(&busybox, &kernel)
        .expect("initramfs")
        .write(&initrd)
        .expect("write initramfs");
    let (ssh_port, go_port) = (free_port(), free_port());
    let mut cfg = BootConfig::new(kernel, &initrd, work.join("console.log"));
    cfg.memory_mb = 1024;
    cfg.extra_append = "quiet loglevel=1 systemd.show_status=0".into();
    cfg.extra_qemu_args = vec![
        "-drive".into(),
        format!("file={},format=raw,if=virtio", disk.display()),
        "-nic".into(),
        format!(
            "user,model=virtio-net-pci,restrict=on,\
             guestfwd=tcp:10.0.2.100:1883-tcp:127.0.0.1:{port},\
             hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{go_port}-:7000"
        ),
    ];
    cfg.timeout = match arch {
        Arch::X86_64 => Duration::from_secs(600),
        Arch::Aarch64 => Duration::from_secs(1200),
    };
    let (tx, rx) = mpsc::channel::<String>();
    cfg.console_tap = Some(tx);
    let host_work = work.clone();
    let host_decoded = decoded.clone();
    let follower = thread::spawn(move || {
        let start = Instant::now();
        let mut host = HostSide::default();
        for line in rx {
            let line = line.trim();
            if line.starts_with("EA-AGENT-READY") {
                host.ready_after = Some(start.elapsed());
            } else if line == "EA-WAIT ssh-block" {
                host.ssh_block = ssh_login(&host_work, ssh_port);
                release_guest(go_port);
            } else if line == "EA-WAIT ssh-audit" {
                host.ssh_audit = ssh_login(&host_work, ssh_port);
                release_guest(go_port);
            } else if line == "EA-WAIT alerts" {
                // Every alert the scenarios raised has reached the host's broker and the
                // decoder (bounded wait: the checks below say which one did not).
                let deadline = Instant::now() + Duration::from_secs(120);
                while Instant::now() < deadline {
                    if every_alert_arrived(&alerts(&host_decoded)) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                release_guest(go_port);
            }
        }
        host
    });
    let log = boot(&cfg).expect("the gateway ran its scenarios");
    drop(cfg);
    let host = follower.join().expect("host side");
    eprintln!(
        "debian_gateway: {arch}: agent ready {:?} after QEMU start (guest uptime {}), whole run {:.1} s",
        host.ready_after,
        log.first_with_prefix("EA-AGENT-READY ").unwrap_or("?"),
        log.elapsed.as_secs_f64()
    );
    check(&log, &host, &decoded);
}

fn tries(log: &BootLog) -> Vec<(String, String)> {
    log.lines_with_prefix("EA-TRY ")
        .filter_map(|l| l.split_once(' '))
        .map(|(n, rest)| (n.to_owned(), rest.to_owned()))
        .collect()
}

fn check(log: &BootLog, host: &HostSide, decoded: &Path) {
    // The first line follows the firmware's terminal escapes on the same console line.
    let booted = log
        .lines
        .iter()
        .find_map(|l| l.split_once("EA-BOOTED ").map(|(_, b)| b.trim_end()))
        .expect("scenarios ran");
    assert!(booted.ends_with("init=systemd"), "{booted}");
    let show: Vec<&str> = log.lines_with_prefix("EA-SHOW ").collect();
    let unit = String::from_utf8(read(
        &workspace_root().join(LAYER).join("edgearmor.service"),
    ))
    .expect("unit");
    assert!(show.contains(&"ActiveState=active"), "{show:?}");
    if unit.contains("Type=notify") {
        let status = log
            .lines_with_prefix("EA-SYSTEMCTL ")
            .map(str::trim_start)
            .find(|l| l.starts_with("Status: \""))
            .expect("systemctl status shows the agent's STATUS= line");
        assert!(status.contains("enforc"), "{status}");
        assert!(show.contains(&"Type=notify"), "{show:?}");
    } else {
        assert!(show.contains(&"Type=simple"), "{show:?}");
    }

    // The package managers: denied at exec, under every name; reading them still works.
    let tried = tries(log);
    let rc = |name: &str| {
        tried
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{name} was not tried"))
    };
    for name in [
        "apt-get",
        "dpkg",
        "bin-dpkg",
        "dotdot-dpkg",
        "symlink-dpkg",
        "env-apt-get",
        "apt",
        "dpkg-deb",
    ] {
        let r = rc(name);
        assert!(
            r.starts_with("rc=126 ") && r.contains("Permission denied"),
            "{name}: {r}"
        );
    }
    for name in ["read-dpkg", "ls"] {
        assert!(rc(name).starts_with("rc=0 "), "{name}: {}", rc(name));
    }
    assert_eq!(log.first_with_prefix("EA-TINY-INSTALLED "), Some("no"));

    // The alerts, decoded on the host from the broker, name the programs.
    let all = alerts(decoded);
    for program in DENIED {
        let hits = with_process(&all, "block-package-managers", program);
        let a = hits
            .first()
            .unwrap_or_else(|| panic!("no alert for {program}: {:#?}", summary(&all)));
        assert_eq!(field(a, "Action"), "Block", "{a}");
        assert_eq!(field(a, "HostName"), "gw-debian", "{a}");
        assert_eq!(field(a, "ClusterName"), "vmtest", "{a}");
    }
    let journal: Vec<&str> = log.lines_with_prefix("EA-JOURNAL ").collect();
    assert!(
        journal
            .iter()
            .any(|l| l.contains("\"ProcessName\":\"/usr/bin/apt-get\"")),
        "the agent's own stdout (the journal) has the alert too: {journal:?}"
    );

    check_ssh(log, host, &all);
    check_watchdog(log, &unit);
}

fn check_ssh(log: &BootLog, host: &HostSide, all: &[serde_json::Value]) {
    // Debian 12 has OpenSSH 9.2, which changes ids in /usr/sbin/sshd itself: the shipped
    // Block policy stops the unprivileged pre-authentication child's setgid-family call,
    // so the login cannot succeed (the policy's comment says so).
    let blocked = with_process(all, "block-sshd-setid", "/usr/sbin/sshd");
    let first = blocked
        .iter()
        .find(|a| field(a, "Action") == "Block")
        .unwrap_or_else(|| panic!("no Block alert from sshd: {:#?}", summary(all)));
    eprintln!("debian_gateway: sshd under the Block policy: {first}");
    assert_ne!(
        host.ssh_block.code,
        Some(0),
        "the login under Block: {}",
        host.ssh_block.stderr
    );
    let sshlog: Vec<&str> = log.lines_with_prefix("EA-SSHLOG-BLOCK ").collect();
    assert!(
        sshlog.iter().any(|l| l.contains("Operation not permitted")),
        "sshd says what failed: {sshlog:?}"
    );
    // The policy's advice for OpenSSH < 9.8, applied by a reload: Audit. Now the login
    // works and the same calls are reported.
    assert_eq!(
        log.first_with_prefix("EA-SSH-POLICY ").map(str::trim),
        Some("action: Audit")
    );
    assert_eq!(host.ssh_audit.code, Some(0), "{:?}", host.ssh_audit);
    assert!(
        host.ssh_audit.stdout.starts_with("EA-LOGIN root 0"),
        "{:?}",
        host.ssh_audit
    );
    assert!(
        blocked.iter().any(|a| field(a, "Action") == "Audit"),
        "Audit alerts from sshd after the reload: {:#?}",
        summary(all)
    );
}

fn check_watchdog(log: &BootLog, unit: &str) {
    if !unit.contains("WatchdogSec=") {
        assert!(log.first_with_prefix("EA-WATCHDOG none").is_some());
        eprintln!("debian_gateway: the unit has no WatchdogSec=: the SIGSTOP scenario is skipped");
        return;
    }
    let restarted = log
        .first_with_prefix("EA-RESTARTED ")
        .expect("the stopped agent was restarted");
    assert!(restarted.contains(" breaches=0"), "{restarted}");
    assert!(!restarted.contains("checks=0 "), "{restarted}");
    let after = tries(log)
        .into_iter()
        .find(|(n, _)| n == "after-restart-dpkg")
        .map(|(_, r)| r)
        .unwrap_or_default();
    assert!(after.starts_with("rc=126 "), "{after}");
    eprintln!("debian_gateway: watchdog: {restarted}");
}

#[test]
fn x86_64_debian_6_12() {
    gateway(Arch::X86_64);
}

#[test]
fn aarch64_debian_6_12() {
    gateway(Arch::Aarch64);
}
