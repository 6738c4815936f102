//! Process rules on multi-call binaries ([`multi_call`]): links become applet
//! rules, paths that do not exist yet are both, and the binaries are marked.

use super::*;

impl Builder<'_> {
    /// An exact process path: see [`multi_call`] for links to multi-call binaries
    /// and paths that do not exist yet.
    pub(super) fn process_path(&mut self, path: &str, value: RuleValue, source: u64, policy: &str) {
        // The link itself is never what the kernel resolves an exec to: no exact rule.
        let (exact, applet) = match multi_call::classify(path, self.resolver.real_path(path)) {
            ExecPath::Applet { applet, binary } => {
                log::info!("policy {policy}: {path} is applet {applet} of {binary} to the kernel");
                self.multi_call.insert(binary);
                (false, Some(applet))
            }
            ExecPath::Missing => (true, Some(multi_call::file_name(path).to_owned())),
            ExecPath::MultiCall(real) => {
                self.warn(
                    policy,
                    path,
                    format!("{real} is a multi-call binary: the rule covers every applet run through a link to it (name a link, e.g. /usr/bin/wget, for one applet)"),
                );
                (true, None)
            }
            ExecPath::Plain(_) => (true, None),
        };
        if exact && let Some(h) = self.kernel_hash(path, policy, path) {
            self.add((source, h, CLASS_PROCESS, MATCH_EXACT), value);
        }
        if let Some(name) = applet.filter(|n| !n.is_empty()) {
            let h = path_hash(&self.key, name.as_bytes());
            self.add((source, h, CLASS_PROCESS, MATCH_APPLET), value);
        }
    }

    /// Marks the multi-call binaries (`MATCH_MULTI_CALL`) when any applet rule exists.
    pub(super) fn mark_multi_call(&mut self) {
        let applets = self
            .set
            .rules
            .keys()
            .any(|&(_, _, class, kind)| class == CLASS_PROCESS && kind == MATCH_APPLET);
        if !applets {
            return;
        }
        let mut binaries = std::mem::take(&mut self.multi_call);
        binaries.extend(self.resolver.multi_call_binaries());
        for binary in binaries {
            if binary.len() > MAX_HASHED_PATH_BYTES {
                continue;
            }
            let h = path_hash(&self.key, binary.as_bytes());
            self.add(
                (ANY_SOURCE, h, CLASS_PROCESS, MATCH_MULTI_CALL),
                RuleValue::NONE,
            );
        }
    }
}

#[cfg(test)]
mod tests;
