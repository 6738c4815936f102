//! Socket creation (`socket_create`): family, type and protocol as items of class
//! `CLASS_NETWORK`.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use edgearmor_probe_abi::{CLASS_NETWORK, socket_items};

use crate::{
    identity::current_identity,
    maps::active_generation,
    matchers::{EACCES, decide_items, enforce},
    report::report,
};

/// `socket_create(int family, int type, int protocol, int kern)`.
#[lsm(hook = "socket_create")]
pub fn check_socket(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return 0; // the kernel's own sockets
    }
    let Some(generation) = active_generation(CLASS_NETWORK) else {
        return 0;
    };
    let family: u32 = ctx.arg(0);
    let sock_type: u32 = ctx.arg(1);
    let protocol: u32 = ctx.arg(2);
    let source = current_identity();
    let verdict = decide_items(
        CLASS_NETWORK,
        generation,
        source,
        socket_items(family, sock_type, protocol),
    );
    enforce(&verdict, EACCES, |outcome| {
        report(
            CLASS_NETWORK,
            outcome,
            &verdict,
            source,
            [family, sock_type, protocol, 0],
            u32::MAX,
        )
    })
}
