//! The directory-entry hooks: a name is removed, created, linked or renamed. Each
//! decides "dir/name" (the name being created, too: it does not exist yet), and a
//! directory also as the directory itself ("dir/name/"), so removing or renaming a
//! protected directory is decided by its `matchDirectories` rule.
//!
//! Removing, creating or replacing a name is a write to it; a hard link also exposes
//! the existing file under a new name, so it needs read and write on it.

use aya_ebpf::{bindings::path, macros::lsm, programs::LsmContext};
use edgearmor_probe_abi::{
    ACCESS_READ, ACCESS_UNLINK, ACCESS_WRITE, FILE_HOOK_LINK, FILE_HOOK_MKDIR, FILE_HOOK_MKNOD,
    FILE_HOOK_RENAME, FILE_HOOK_RMDIR, FILE_HOOK_SYMLINK, FILE_HOOK_UNLINK,
};

use crate::file::{S_IFMT, S_IFREG, Target, decide_targets, file_hook_generation, is_directory};

/// How a directory-entry hook decides.
#[derive(Clone, Copy)]
struct EntryHook {
    /// Argument index of the previous LSM's return value.
    ret_arg: usize,
    hook: u32,
    access: u32,
    /// Also decide the entry as a directory ("dir/name/").
    as_dir: bool,
    /// Only a Block acts and reports.
    block_only: bool,
}

/// A `(const struct path *dir, struct dentry *dentry, ...)` hook that writes the
/// entry.
#[inline(always)]
fn decide_entry(ctx: &LsmContext, h: EntryHook) -> i32 {
    let EntryHook {
        ret_arg,
        hook,
        access,
        as_dir,
        block_only,
    } = h;
    let generation = match file_hook_generation(ctx, ret_arg) {
        Ok(generation) => generation,
        Err(rc) => return rc,
    };
    let dir: *const path = ctx.arg(0);
    let dentry: *const u8 = ctx.arg(1);
    let entry = Target::entry(dir, dentry, access);
    let itself = if as_dir {
        entry.as_directory()
    } else {
        Target::NONE
    };
    decide_targets(hook, generation, [entry, itself], block_only)
}

/// An entry hook that needs `access`, decided as the entry only.
const fn entry_hook(ret_arg: usize, hook: u32, access: u32) -> EntryHook {
    EntryHook {
        ret_arg,
        hook,
        access,
        as_dir: false,
        block_only: false,
    }
}

/// `path_unlink(const struct path *dir, struct dentry *dentry)`: removing a file is
/// a write to it.
#[lsm(hook = "path_unlink")]
pub fn check_unlink(ctx: LsmContext) -> i32 {
    decide_entry(
        &ctx,
        entry_hook(2, FILE_HOOK_UNLINK, ACCESS_WRITE | ACCESS_UNLINK),
    )
}

/// `path_rmdir(const struct path *dir, struct dentry *dentry)`: as an entry of its
/// directory and as the directory itself.
#[lsm(hook = "path_rmdir")]
pub fn check_rmdir(ctx: LsmContext) -> i32 {
    decide_entry(
        &ctx,
        EntryHook {
            as_dir: true,
            ..entry_hook(2, FILE_HOOK_RMDIR, ACCESS_WRITE | ACCESS_UNLINK)
        },
    )
}

/// `path_mkdir(const struct path *dir, struct dentry *dentry, umode_t mode)`.
#[lsm(hook = "path_mkdir")]
pub fn check_mkdir(ctx: LsmContext) -> i32 {
    decide_entry(&ctx, entry_hook(3, FILE_HOOK_MKDIR, ACCESS_WRITE))
}

/// `path_mknod(const struct path *dir, struct dentry *dentry, umode_t mode,
/// unsigned int dev)`: device nodes, FIFOs, sockets, and every `open(O_CREAT)` of a
/// new name (`may_o_create` calls it before the file exists), so a refused create
/// leaves nothing behind. For a regular file only a Block acts: an audited create
/// is reported once, by the `file_open` that follows it.
#[lsm(hook = "path_mknod")]
pub fn check_mknod(ctx: LsmContext) -> i32 {
    let mode: u32 = ctx.arg(2);
    decide_entry(
        &ctx,
        EntryHook {
            block_only: mode as u16 & S_IFMT == S_IFREG,
            ..entry_hook(4, FILE_HOOK_MKNOD, ACCESS_WRITE)
        },
    )
}

/// `path_symlink(const struct path *dir, struct dentry *dentry, const char
/// *old_name)`: the new link's name. (Following a symlink later opens its target,
/// which `file_open` decides by the target's own path.)
#[lsm(hook = "path_symlink")]
pub fn check_symlink(ctx: LsmContext) -> i32 {
    decide_entry(&ctx, entry_hook(3, FILE_HOOK_SYMLINK, ACCESS_WRITE))
}

/// `path_link(struct dentry *old_dentry, const struct path *new_dir, struct dentry
/// *new_dentry)`: the existing file (under `new_dir`'s mount: links never cross
/// mounts) needs read and write, the new name write.
#[lsm(hook = "path_link")]
pub fn check_link(ctx: LsmContext) -> i32 {
    let generation = match file_hook_generation(&ctx, 3) {
        Ok(generation) => generation,
        Err(rc) => return rc,
    };
    let old_dentry: *const u8 = ctx.arg(0);
    let new_dir: *const path = ctx.arg(1);
    let new_dentry: *const u8 = ctx.arg(2);
    let existing = Target::entry(new_dir, old_dentry, ACCESS_READ | ACCESS_WRITE);
    let name = Target::entry(new_dir, new_dentry, ACCESS_WRITE);
    decide_targets(FILE_HOOK_LINK, generation, [existing, name], false)
}

/// `path_rename(const struct path *old_dir, struct dentry *old_dentry, const struct
/// path *new_dir, struct dentry *new_dentry, unsigned int flags)`: the source name
/// and the target name are written (with `RENAME_EXCHANGE` both are replaced: the
/// same), a directory also as itself.
#[lsm(hook = "path_rename")]
pub fn check_rename(ctx: LsmContext) -> i32 {
    let generation = match file_hook_generation(&ctx, 5) {
        Ok(generation) => generation,
        Err(rc) => return rc,
    };
    let old_dir: *const path = ctx.arg(0);
    let old_dentry: *const u8 = ctx.arg(1);
    let new_dir: *const path = ctx.arg(2);
    let new_dentry: *const u8 = ctx.arg(3);
    let source = Target::entry(old_dir, old_dentry, ACCESS_WRITE);
    let target = Target::entry(new_dir, new_dentry, ACCESS_WRITE);
    // A directory moved to the target name becomes that directory.
    let moves_directory = is_directory(old_dentry);
    let source_dir = if moves_directory {
        source.as_directory()
    } else {
        Target::NONE
    };
    let target_dir = if moves_directory || is_directory(new_dentry) {
        target.as_directory()
    } else {
        Target::NONE
    };
    decide_targets(
        FILE_HOOK_RENAME,
        generation,
        [source, source_dir, target, target_dir],
        false,
    )
}
