//! The policy set shipped in `policies/` fits the kernel tables whole.

use super::*;
use edgearmor_policy::{DefaultPostures, compile, load_policy_directory};

#[test]
fn the_shipped_set_fits_the_kernel_tables_whole() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let load = load_policy_directory(&dir, "any-gateway").expect("policies/ is readable");
    assert!(load.rejected.is_empty(), "{:?}", load.rejected);
    let compiled = compile(
        &load.policies,
        DefaultPostures::uniform(DefaultPosture::Audit),
    );
    let identity = |p: &str| p.to_owned();
    let set = KernelRuleSet::build(
        &SetidRuleSet::default(),
        &compiled,
        &mut PolicyCatalog::default(),
        [1, 2],
        &identity,
    );
    assert!(set.skipped.is_empty(), "{:?}", set.skipped);
    assert!(!set.globs.is_empty());
}
