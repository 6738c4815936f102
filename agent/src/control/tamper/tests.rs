use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgearmor-tamper-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn report(time_us: u64, resource: &str) -> TamperReport {
    TamperReport {
        time_us,
        pid: 4242,
        ppid: 1,
        uid: 0,
        process: "/usr/sbin/edgearmor".into(),
        parent_process: "/bin/bash".into(),
        resource: resource.into(),
    }
}

fn summary(count: u64) -> TamperReport {
    report(0, &format!("{count} not kept"))
}

fn drain_all(dir: &Path) -> Vec<TamperReport> {
    let mut seen = Vec::new();
    let n = drain(
        dir,
        &mut |r| {
            seen.push(r.clone());
            true
        },
        &summary,
    )
    .expect("drains");
    assert_eq!(n, seen.len());
    seen
}

#[test]
fn reports_wait_in_order_and_are_delivered_once() {
    let dir = scratch("order");
    assert!(drain_all(&dir).is_empty(), "nothing there yet");
    // Control characters cannot forge another key.
    let sneaky = report(2, "edgearmor unload: x\nuid=7");
    for r in [report(3, "third"), report(1, "first"), sneaky.clone()] {
        assert!(matches!(record(&dir, &r), Ok(Recorded::Stored(_))));
    }
    let seen = drain_all(&dir);
    let resources: Vec<&str> = seen.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(resources, ["first", "edgearmor unload: x?uid=7", "third"]);
    assert_eq!(seen[0], report(1, "first"));
    assert_eq!(seen[1].uid, 0);
    assert!(drain_all(&dir).is_empty(), "delivered once");
}

#[test]
fn a_full_queue_leaves_the_rest_waiting() {
    let dir = scratch("full-queue");
    for t in 1..=3 {
        record(&dir, &report(t, "r")).expect("records");
    }
    let mut taken = 0;
    let n = drain(
        &dir,
        &mut |_| {
            taken += 1;
            taken <= 1
        },
        &summary,
    )
    .expect("drains");
    assert_eq!(n, 1);
    let rest: Vec<u64> = drain_all(&dir).iter().map(|r| r.time_us).collect();
    assert_eq!(rest, [2, 3]);
}

#[test]
fn past_the_limit_refusals_are_counted_and_the_count_delivered() {
    let dir = scratch("limit");
    for t in 0..MAX_TAMPER_REPORTS as u64 {
        assert!(matches!(
            record(&dir, &report(t + 1, "r")),
            Ok(Recorded::Stored(_))
        ));
    }
    assert_eq!(
        record(&dir, &report(100, "r")).expect("counts"),
        Recorded::Counted(1)
    );
    assert_eq!(
        record(&dir, &report(101, "r")).expect("counts"),
        Recorded::Counted(2)
    );
    // A damaged report is counted with them, not dropped unseen.
    std::fs::write(
        dir.join(REPORTS_DIR).join("00000000000000000000-1.report"),
        "garbage",
    )
    .expect("writes");
    let seen = drain_all(&dir);
    assert_eq!(seen.len(), MAX_TAMPER_REPORTS + 1);
    assert_eq!(seen.last().map(|r| r.resource.as_str()), Some("3 not kept"));
    assert!(drain_all(&dir).is_empty(), "the count is delivered once");
    assert!(matches!(
        record(&dir, &report(200, "r")),
        Ok(Recorded::Stored(_))
    ));
}

#[test]
fn a_planted_link_is_refused() {
    let dir = scratch("link");
    std::fs::create_dir_all(&dir).expect("dir");
    std::os::unix::fs::symlink("/tmp", dir.join(REPORTS_DIR)).expect("links");
    let err = record(&dir, &report(1, "r")).expect_err("a link");
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn draining_never_follows_a_planted_link() {
    let dir = scratch("drain-link");
    let elsewhere = scratch("drain-link-target");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::create_dir_all(&elsewhere).expect("dir");
    let victim = elsewhere.join("precious.report");
    std::fs::write(&victim, "x").expect("writes");
    std::os::unix::fs::symlink(&elsewhere, dir.join(REPORTS_DIR)).expect("links");
    let err = drain(&dir, &mut |_| true, &summary).expect_err("a link");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(victim.exists());
}

#[test]
fn a_report_is_a_blocking_alert_of_the_self_protection_policy() {
    let event = report(
        1_800_000_000_000_000,
        "edgearmor unload /sys/fs/bpf/edgearmor: no unlock token",
    )
    .event(9);
    assert_eq!(event.time_us, 1_800_000_000_000_000);
    let EventBody::Alert(alert) = event.body else {
        panic!("an alert: {:?}", event.body)
    };
    assert_eq!(alert.policy, PolicyRef::Id(9));
    assert_eq!(
        (alert.operation, alert.action, alert.result),
        (Operation::Process, Action::Block, Outcome::PermissionDenied)
    );
    assert_eq!((alert.pid, alert.ppid, alert.uid), (4242, 1, 0));
    assert_eq!(alert.process.as_str(), "/usr/sbin/edgearmor");
    assert_eq!(alert.parent_process.as_str(), "/bin/bash");
    assert!(alert.resource.ends_with(": no unlock token"));
    // A resource longer than the wire's is cut, not refused.
    let long = report(1, &"x".repeat(1000)).event(9);
    let EventBody::Alert(alert) = long.body else {
        panic!("an alert")
    };
    assert_eq!(alert.resource.len(), edgearmor_wire::PATH_LEN);
    let summary = TamperReport::summary(3, 7);
    assert!(
        summary.resource.contains("3 more refusal(s)")
            && summary.resource.contains("MAX_TAMPER_REPORTS")
    );
}
