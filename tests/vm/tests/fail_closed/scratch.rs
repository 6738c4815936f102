//! The `scratch` part of the fail-closed guest (`guest/failclosed/`).

use crate::Run;

pub fn check(run: &Run) {
    let _ = run;
}
