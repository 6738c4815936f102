//! Just enough of a BTF reader to answer two questions about the running kernel:
//! where a struct member lives (the probes get these offsets as globals instead of
//! CO-RE relocations) and whether a function exists (is BPF-LSM built in?).
//!
//! Format: `Documentation/bpf/btf.rst`. Every read is bounds-checked; a truncated or
//! corrupt blob is an error naming the type id where parsing stopped.
//!
//! Memory: the kernel's BTF is ~5.5 MB with ~130,000 types, and the agent's peak
//! memory is set while loading. [`KernelBtf::parse`] therefore indexes the blob where
//! it lies (one offset per type, struct names borrowed), reads a struct's members only
//! when asked, and keeps nothing of it but the answers: the probes' offsets and the
//! names of the `bpf_lsm_*` functions. The blob can go as soon as it returns.

use std::collections::{HashMap, HashSet};

use edgearmor_probe_abi::{KernelOffsets, exec_identity::ExecOffsets};

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// The blob is shorter than its header or a section it declares.
    #[error("BTF is truncated in its {what}")]
    Truncated { what: &'static str },
    #[error("not BTF: magic {0:#06x}, expected {BTF_MAGIC:#06x}")]
    BadMagic(u16),
    /// A type record has a kind this reader does not know how to skip.
    #[error("BTF type {type_id} has unknown kind {kind}")]
    UnknownKind { type_id: u32, kind: u32 },
    /// The struct is not in the kernel's BTF.
    #[error("kernel BTF has no `struct {0}`")]
    NoStruct(String),
    /// The struct has no such member (searched through anonymous members too).
    #[error("kernel BTF: `struct {strukt}` has no member `{member}`")]
    NoMember { strukt: String, member: String },
    /// The member is a bitfield or not byte-aligned.
    #[error("kernel BTF: `struct {strukt}.{member}` is not byte-aligned")]
    NotByteAligned { strukt: String, member: String },
}

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

struct TypeRecord {
    kind: u32,
    name_off: u32,
    /// `size` or `type` depending on the kind.
    size_or_type: u32,
    members: Vec<Member>,
}

/// What the agent needs from the kernel's BTF (`/sys/kernel/btf/vmlinux`), read once.
pub struct KernelBtf {
    offsets: Result<KernelOffsets, BtfError>,
    exec_offsets: Result<ExecOffsets, BtfError>,
    /// The kernel's `bpf_lsm_*` functions: one per LSM hook BPF can attach to.
    lsm_funcs: HashSet<String>,
}

/// Where the BPF-LSM hook functions' names start.
const LSM_FUNC_PREFIX: &str = "bpf_lsm_";

/// A BTF blob indexed in place: the start of every type record, and struct ids by
/// (borrowed) name. Records are decoded when a lookup reaches them.
pub(crate) struct BtfIndex<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset of type `id` in `types`; index 0 is the implicit `void`.
    starts: Vec<u32>,
    structs_by_name: HashMap<&'a str, u32>,
    lsm_funcs: Vec<&'a str>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u32(&mut self, what: &'static str) -> Result<u32, BtfError> {
        let end = self
            .pos
            .checked_add(4)
            .ok_or(BtfError::Truncated { what })?;
        let b = self
            .bytes
            .get(self.pos..end)
            .ok_or(BtfError::Truncated { what })?;
        self.pos = end;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), BtfError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(BtfError::Truncated { what })?;
        if end > self.bytes.len() {
            return Err(BtfError::Truncated { what });
        }
        self.pos = end;
        Ok(())
    }
}

/// The type and string sections a BTF header points at, bounds-checked.
fn sections(blob: &[u8]) -> Result<(&[u8], &[u8]), BtfError> {
    let header = blob
        .get(..24)
        .ok_or(BtfError::Truncated { what: "header" })?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let magic = u16::from_le_bytes([header[0], header[1]]);
    if magic != BTF_MAGIC {
        return Err(BtfError::BadMagic(magic));
    }
    let hdr_len = word(4) as usize;
    let (type_off, type_len) = (word(8) as usize, word(12) as usize);
    let (str_off, str_len) = (word(16) as usize, word(20) as usize);
    let section = |off: usize, len: usize, what| {
        let start = hdr_len
            .checked_add(off)
            .ok_or(BtfError::Truncated { what })?;
        let end = start.checked_add(len).ok_or(BtfError::Truncated { what })?;
        blob.get(start..end).ok_or(BtfError::Truncated { what })
    };
    Ok((
        section(type_off, type_len, "type section")?,
        section(str_off, str_len, "string section")?,
    ))
}

impl Cursor<'_> {
    /// One type record and what follows it; struct and union members are kept only
    /// with `keep_members`.
    fn type_record(&mut self, type_id: u32, keep_members: bool) -> Result<TypeRecord, BtfError> {
        let name_off = self.u32("type record")?;
        let info = self.u32("type record")?;
        let size_or_type = self.u32("type record")?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        let mut members = Vec::new();
        match kind {
            KIND_STRUCT | KIND_UNION => {
                for _ in 0..vlen {
                    let name_off = self.u32("struct member")?;
                    let type_id = self.u32("struct member")?;
                    let raw = self.u32("struct member")?;
                    // With kind_flag the top 8 bits are a bitfield size.
                    let bit_offset = if kind_flag { raw & 0x00ff_ffff } else { raw };
                    let bitfield = kind_flag && raw >> 24 != 0;
                    if !keep_members {
                        continue;
                    }
                    members.push(Member {
                        name_off,
                        type_id,
                        bit_offset: if bitfield { u32::MAX } else { bit_offset },
                    });
                }
            }
            KIND_INT | KIND_VAR | KIND_DECL_TAG => self.skip(4, "type record")?,
            KIND_ARRAY => self.skip(12, "array record")?,
            KIND_ENUM | KIND_FUNC_PROTO => self.skip(8 * vlen, "enum/proto record")?,
            KIND_DATASEC | KIND_ENUM64 => self.skip(12 * vlen, "datasec/enum64 record")?,
            2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC | 16
            | KIND_TYPE_TAG => {}
            _ => return Err(BtfError::UnknownKind { type_id, kind }),
        }
        Ok(TypeRecord {
            kind,
            name_off,
            size_or_type,
            members,
        })
    }
}

impl KernelBtf {
    /// Reads a little-endian BTF blob: the probes' offsets and the `bpf_lsm_*`
    /// functions; nothing of the blob is kept.
    pub fn parse(blob: &[u8]) -> Result<Self, BtfError> {
        let index = BtfIndex::parse(blob)?;
        Ok(Self {
            offsets: index.kernel_offsets(),
            exec_offsets: index.exec_offsets(),
            lsm_funcs: index.lsm_funcs.iter().map(|f| (*f).to_owned()).collect(),
        })
    }

    /// Whether the kernel has this BPF-LSM hook function (e.g.
    /// `bpf_lsm_task_fix_setgid`); only `bpf_lsm_*` names are kept.
    pub fn has_func(&self, name: &str) -> bool {
        self.lsm_funcs.contains(name)
    }

    /// The struct member offsets the probes need, from this kernel.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        self.offsets.clone()
    }

    /// The member offsets exec identity reads (the ABI's `exec_identity`).
    pub fn exec_offsets(&self) -> Result<ExecOffsets, BtfError> {
        self.exec_offsets.clone()
    }
}

impl<'a> BtfIndex<'a> {
    /// Indexes a little-endian BTF blob: every record is checked as it is passed.
    pub(crate) fn parse(blob: &'a [u8]) -> Result<Self, BtfError> {
        let (types, strings) = sections(blob)?;
        let mut index = Self {
            types,
            strings,
            starts: vec![0],
            structs_by_name: HashMap::new(),
            lsm_funcs: Vec::new(),
        };
        let mut cur = Cursor {
            bytes: types,
            pos: 0,
        };
        while cur.pos < types.len() {
            let type_id = index.starts.len() as u32;
            index.starts.push(cur.pos as u32);
            let t = cur.type_record(type_id, false)?;
            let name = index.name(t.name_off);
            if name.is_empty() {
                continue;
            }
            match t.kind {
                // Keep the first complete definition; later duplicates are rare and equal.
                KIND_STRUCT => {
                    index.structs_by_name.entry(name).or_insert(type_id);
                }
                KIND_FUNC if name.starts_with(LSM_FUNC_PREFIX) => index.lsm_funcs.push(name),
                _ => {}
            }
        }
        Ok(index)
    }

    fn name(&self, off: u32) -> &'a str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Type `id`, members included (id 0, `void`, has none).
    fn record(&self, id: u32) -> Option<TypeRecord> {
        if id == 0 {
            return Some(TypeRecord {
                kind: 0,
                name_off: 0,
                size_or_type: 0,
                members: Vec::new(),
            });
        }
        let pos = *self.starts.get(id as usize)? as usize;
        let mut cur = Cursor {
            bytes: self.types,
            pos,
        };
        // Checked when indexed: this reads the same bytes again.
        cur.type_record(id, true).ok()
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous
    /// struct/union members the way C name lookup does.
    pub(crate) fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let bits = self
            .find_member_bits(id, member, 0)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })?;
        if bits == u32::MAX || bits % 8 != 0 {
            return Err(BtfError::NotByteAligned {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            });
        }
        Ok(bits / 8)
    }

    fn find_member_bits(&self, type_id: u32, member: &str, depth: u32) -> Option<u32> {
        let t = self.record(type_id)?;
        for m in &t.members {
            if self.name(m.name_off) == member {
                return Some(m.bit_offset);
            }
        }
        if depth > 8 {
            return None;
        }
        for m in t.members.iter().filter(|m| m.name_off == 0) {
            let inner = self.strip_modifiers(m.type_id)?;
            if let Some(bits) = self.find_member_bits(inner, member, depth + 1) {
                if m.bit_offset == u32::MAX || bits == u32::MAX {
                    return Some(u32::MAX);
                }
                return Some(m.bit_offset + bits);
            }
        }
        None
    }

    /// Follows typedef/const/volatile/restrict/type-tag links to the underlying type.
    fn strip_modifiers(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let t = self.record(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// The struct member offsets the probes need, from this kernel.
    fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            task_tgid: self.member_offset("task_struct", "tgid")?,
            task_real_parent: self.member_offset("task_struct", "real_parent")?,
            binprm_file: self.member_offset("linux_binprm", "file")?,
            binprm_filename: self.member_offset("linux_binprm", "filename")?,
            file_f_path: self.member_offset("file", "f_path")?,
            file_f_mode: self.member_offset("file", "f_mode")?,
            dentry_name: self.member_offset("dentry", "d_name")?
                + self.member_offset("qstr", "name")?,
            cred_uid: self.member_offset("cred", "uid")?,
            cred_euid: self.member_offset("cred", "euid")?,
            cred_fsuid: self.member_offset("cred", "fsuid")?,
            cred_gid: self.member_offset("cred", "gid")?,
            cred_egid: self.member_offset("cred", "egid")?,
            cred_fsgid: self.member_offset("cred", "fsgid")?,
            binprm_p: self.member_offset("linux_binprm", "p")?,
            binprm_argc: self.member_offset("linux_binprm", "argc")?,
            task_mm: self.member_offset("task_struct", "mm")?,
            mm_exe_file: self.member_offset("mm_struct", "exe_file")?,
            dentry_parent: self.member_offset("dentry", "d_parent")?,
            dentry_name_len: self.member_offset("dentry", "d_name")?
                + self.member_offset("qstr", "len")?,
            dentry_inode: self.member_offset("dentry", "d_inode")?,
            inode_ino: self.member_offset("inode", "i_ino")?,
            inode_sb: self.member_offset("inode", "i_sb")?,
            inode_mode: self.member_offset("inode", "i_mode")?,
            sb_dev: self.member_offset("super_block", "s_dev")?,
            mount_mnt: self.member_offset("mount", "mnt")?,
            mount_parent: self.member_offset("mount", "mnt_parent")?,
            mount_mountpoint: self.member_offset("mount", "mnt_mountpoint")?,
            vfsmount_root: self.member_offset("vfsmount", "mnt_root")?,
            path_mnt: self.member_offset("path", "mnt")?,
            path_dentry: self.member_offset("path", "dentry")?,
            task_fs: self.member_offset("task_struct", "fs")?,
            fs_root: self.member_offset("fs_struct", "root")?,
            vma_file: self.member_offset("vm_area_struct", "vm_file")?,
            vma_flags: self.member_offset("vm_area_struct", "vm_flags")?,
            task_ptrace: self.member_offset("task_struct", "ptrace")?,
            vfsmount_sb: self.member_offset("vfsmount", "mnt_sb")?,
        })
    }

    /// The member offsets exec identity reads (the ABI's `exec_identity`).
    fn exec_offsets(&self) -> Result<ExecOffsets, BtfError> {
        Ok(ExecOffsets {
            file_inode: self.member_offset("file", "f_inode")?,
            file_private_data: self.member_offset("file", "private_data")?,
            sb_magic: self.member_offset("super_block", "s_magic")?,
            inode_nlink: self.member_offset("inode", "i_nlink")?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a BTF blob: `struct outer { int a; union { int x; int hidden; }; int b; }`
    /// plus `int bpf_lsm_demo(void)`.
    /// A BTF blob under construction: its strings, given up front, and its types as
    /// 32-bit words.
    pub(crate) struct BtfBlob {
        strings: Vec<u8>,
        types: Vec<u8>,
    }

    impl BtfBlob {
        pub(crate) fn new(names: &[&str]) -> Self {
            let mut strings = vec![0];
            for n in names {
                strings.extend_from_slice(n.as_bytes());
                strings.push(0);
            }
            BtfBlob {
                strings,
                types: Vec::new(),
            }
        }

        /// The string offset of `name` (one of `new`'s).
        pub(crate) fn name(&self, name: &str) -> u32 {
            let needle = format!("\0{name}\0");
            self.strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .expect("string present")
        }

        pub(crate) fn push(&mut self, words: &[u32]) {
            words
                .iter()
                .for_each(|w| self.types.extend_from_slice(&w.to_le_bytes()))
        }

        /// Header, types, strings.
        pub(crate) fn build(&self) -> Vec<u8> {
            let mut blob = Vec::new();
            blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            blob.extend_from_slice(&[1, 0]);
            let types = self.types.len() as u32;
            for w in [24u32, 0, types, types, self.strings.len() as u32] {
                blob.extend_from_slice(&w.to_le_bytes());
            }
            blob.extend_from_slice(&self.types);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }

    pub(crate) fn synthetic_btf() -> Vec<u8> {
        let mut b = BtfBlob::new(&["int", "outer", "a", "hidden", "b", "x", "bpf_lsm_demo"]);
        // 1: int (4 bytes)
        b.push(&[b.name("int"), KIND_INT << 24, 4, 32]);
        // 2: anonymous union { int x; int hidden; }
        b.push(&[
            0,
            (KIND_UNION << 24) | 2,
            4,
            b.name("x"),
            1,
            0,
            b.name("hidden"),
            1,
            0,
        ]);
        // 3: struct outer { int a; <anon union> at 32 bits; int b at 64 bits }
        b.push(&[
            b.name("outer"),
            (KIND_STRUCT << 24) | 3,
            12,
            b.name("a"),
            1,
            0,
            0,
            2,
            32,
            b.name("b"),
            1,
            64,
        ]);
        // 4: func proto, 5: func
        b.push(&[0, KIND_FUNC_PROTO << 24, 1]);
        b.push(&[b.name("bpf_lsm_demo"), KIND_FUNC << 24, 4]);
        b.build()
    }

    #[test]
    fn finds_members_directly_and_through_anonymous_unions() {
        let blob = synthetic_btf();
        let btf = BtfIndex::parse(&blob).expect("parses");
        assert_eq!(btf.member_offset("outer", "a"), Ok(0));
        assert_eq!(btf.member_offset("outer", "hidden"), Ok(4));
        assert_eq!(btf.member_offset("outer", "b"), Ok(8));
        let summary = KernelBtf::parse(&blob).expect("parses");
        assert!(summary.has_func("bpf_lsm_demo"));
        assert!(!summary.has_func("bpf_lsm_other"));
        assert_eq!(
            btf.member_offset("outer", "nope"),
            Err(BtfError::NoMember {
                strukt: "outer".into(),
                member: "nope".into()
            })
        );
        assert_eq!(
            btf.member_offset("inner", "a"),
            Err(BtfError::NoStruct("inner".into()))
        );
    }

    #[test]
    fn truncated_and_foreign_blobs_are_errors_not_panics() {
        let blob = synthetic_btf();
        for cut in [0, 10, 24, 40, blob.len() - 1] {
            assert!(KernelBtf::parse(&blob[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = blob.clone();
        bad[0] = 0;
        assert!(matches!(KernelBtf::parse(&bad), Err(BtfError::BadMagic(_))));
    }

    #[test]
    fn this_hosts_kernel_btf_yields_plausible_offsets() {
        let Ok(blob) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux on this host; synthetic tests cover the parser");
            return;
        };
        let btf = KernelBtf::parse(&blob).expect("the running kernel's BTF parses");
        let off = btf.kernel_offsets().expect("all members present");
        let exec = btf.exec_offsets().expect("exec identity's members present");
        assert!(exec.file_inode > 0 && exec.file_private_data > 0);
        assert_ne!(exec.file_inode, exec.file_private_data);
        assert!(exec.sb_magic > 0 && exec.inode_nlink > 0);
        // cred starts with a usage counter, then uid, gid, suid, sgid, euid, egid, fsuid, fsgid.
        assert_eq!(off.cred_gid, off.cred_uid + 4);
        assert_eq!(off.cred_euid, off.cred_uid + 16);
        assert_eq!(off.cred_fsgid, off.cred_uid + 28);
        assert!(off.task_tgid > 0 && off.task_real_parent > off.task_tgid);
        assert!(off.task_mm > 0 && off.mm_exe_file > 0);
        // qstr: { union { struct { u32 hash; u32 len; }; u64 hash_len; }; name }.
        assert_eq!(off.dentry_name, off.dentry_name_len + 4);
        assert!(off.dentry_parent > 0 && off.dentry_inode > 0);
        // struct path { struct vfsmount *mnt; struct dentry *dentry; }.
        assert_eq!((off.path_mnt, off.path_dentry), (0, 8));
        // vfsmount starts with mnt_root; struct mount has its hash node, parent and
        // mountpoint before the embedded vfsmount.
        assert_eq!(off.vfsmount_root, 0);
        assert!(off.mount_parent < off.mount_mnt && off.mount_mountpoint < off.mount_mnt);
        assert!(off.inode_ino > 0 && off.inode_sb > 0 && off.task_fs > 0 && off.fs_root > 0);
    }

    /// `struct qstr` as the kernel declares it: the length sits in an anonymous struct
    /// inside an anonymous union, two levels down.
    #[test]
    fn finds_members_two_anonymous_levels_down() {
        let mut b = BtfBlob::new(&["int", "long", "qstr", "hash", "len", "hash_len", "name"]);
        // 1: int, 2: long
        b.push(&[b.name("int"), KIND_INT << 24, 4, 32]);
        b.push(&[b.name("long"), KIND_INT << 24, 8, 64]);
        // 3: struct { int hash; int len; }
        b.push(&[
            0,
            (KIND_STRUCT << 24) | 2,
            8,
            b.name("hash"),
            1,
            0,
            b.name("len"),
            1,
            32,
        ]);
        // 4: union { <3>; long hash_len; }
        b.push(&[
            0,
            (KIND_UNION << 24) | 2,
            8,
            0,
            3,
            0,
            b.name("hash_len"),
            2,
            0,
        ]);
        // 5: struct qstr { <4>; long name at 64 bits; }
        b.push(&[
            b.name("qstr"),
            (KIND_STRUCT << 24) | 2,
            16,
            0,
            4,
            0,
            b.name("name"),
            2,
            64,
        ]);
        let blob = b.build();
        let btf = BtfIndex::parse(&blob).expect("parses");
        assert_eq!(btf.member_offset("qstr", "hash"), Ok(0));
        assert_eq!(btf.member_offset("qstr", "len"), Ok(4));
        assert_eq!(btf.member_offset("qstr", "hash_len"), Ok(0));
        assert_eq!(btf.member_offset("qstr", "name"), Ok(8));
    }
}
