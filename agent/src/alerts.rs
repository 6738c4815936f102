//! Turns kernel decisions into KubeArmor host alerts: identity of the node, wall-clock
//! time, and the policy metadata the kernel only refers to by rule id.

use edgearmor_alert::{AlertType, EventTime, HostAlert};

use crate::events::SetidDecision;
use crate::rules::SetidRuleSet;

pub struct AlertBuilder {
    pub cluster_name: String,
    pub host_name: String,
    /// Added to `CLOCK_BOOTTIME` stamps to get Unix nanoseconds.
    pub boottime_to_unix_ns: i128,
}

impl AlertBuilder {
    fn base(&self, alert_type: AlertType, boot_ns: u64) -> HostAlert {
        let mut a = HostAlert::new(alert_type);
        a.time = EventTime::from_unix_nanos(i128::from(boot_ns) + self.boottime_to_unix_ns);
        a.cluster_name = self.cluster_name.clone();
        a.host_name = self.host_name.clone();
        a
    }

    pub fn setid(&self, d: &SetidDecision, rules: &SetidRuleSet) -> HostAlert {
        let mut a = self.base(AlertType::MatchedHostPolicy, d.boot_ns);
        a.host_ppid = d.ppid as i32;
        a.ppid = d.ppid as i32;
        a.host_pid = d.tgid as i32;
        a.pid = d.tgid as i32;
        a.uid = d.uid as i32;
        a.parent_process_name = d.parent_exe.clone();
        a.process_name = d.exe.clone();
        a.source = d.exe.clone();
        if let Some(rule) = rules.get(d.rule_id) {
            a.policy_name = rule.policy.clone();
            a.severity = rule.severity.map(|s| s.to_string()).unwrap_or_default();
            a.tags = rule.tags.join(",");
            a.message = rule.message.clone();
        }
        a.operation = "Syscall".into();
        a.data = format!("syscall={} userid={}", d.syscall_name(), d.requested_id);
        a.enforcer = "BPFLSM".into();
        if d.denied {
            a.action = "Block".into();
            a.result = "Operation not permitted".into();
        } else {
            a.action = "Audit".into();
            a.result = "Passed".into();
        }
        a
    }

    /// A `SystemEvent` saying `lost` events never left the kernel (ring buffer full).
    pub fn ring_buffer_loss(&self, lost: u64, now_boot_ns: u64) -> HostAlert {
        let mut a = self.base(AlertType::SystemEvent, now_boot_ns);
        a.operation = "AlertLoss".into();
        a.resource = "kernel ring buffer".into();
        a.data = format!("dropped={lost}");
        a.message = format!("{lost} events were lost: the kernel ring buffer was full");
        a.enforcer = "BPFLSM".into();
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::{bytes_of, raw_event};
    use edgearmor_probe_abi::{LSM_SETID_ID, SETID_KIND_GID};

    #[test]
    fn setgid_alert_has_every_key_of_the_reference_example_in_order() {
        let d =
            SetidDecision::try_from(bytes_of(&raw_event(SETID_KIND_GID, LSM_SETID_ID)).as_slice())
                .expect("valid");
        let mut rules = SetidRuleSet::default();
        rules
            .add_flag("deny-setgid", "setgid", "/usr/sbin/sshd")
            .expect("valid");
        let builder = AlertBuilder {
            cluster_name: "default".into(),
            host_name: "gw1".into(),
            boottime_to_unix_ns: 1_692_814_084_000_000_000,
        };
        let json = builder.setid(&d, &rules).to_json();
        assert_eq!(
            json,
            concat!(
                r#"{"Timestamp":1692814089,"UpdatedTime":"2023-08-23T18:08:09.000000Z","ClusterName":"default","HostName":"gw1","#,
                r#""HostPPID":7,"HostPID":42,"PPID":7,"PID":42,"UID":0,"ParentProcessName":"/bin/busybox","ProcessName":"/usr/sbin/sshd","#,
                r#""PolicyName":"edgearmor-setid","Type":"MatchedHostPolicy","Source":"/usr/sbin/sshd","Operation":"Syscall","#,
                r#""Data":"syscall=SYS_SETGID userid=0","EventData":{"Syscall":"SYS_SETGID","Userid":"0"},"#,
                r#""Enforcer":"BPFLSM","Action":"Block","Result":"Operation not permitted"}"#
            )
        );
    }
}
