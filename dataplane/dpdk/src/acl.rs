//! Packet classification with DPDK's `rte_acl`: the multi-field, priority-ordered matcher behind l3fwd-acl,
//! ipsec-secgw and most DPDK firewalls.
//!
//! Lifecycle: describe the input once ([`Layout`]), add rules to an [`AclBuilder`], [`AclBuilder::build`] it into
//! an immutable [`AclContext`], and classify with that context from any number of lcores. A new policy is a new
//! context, built on a management thread and handed to the workers (e.g. through [`crate::rcu::RcuCell`]).
//!
//! # Byte order
//! Rule values are plain integers in host order. Input bytes are read in network order (big endian): a field of
//! `size` bytes at `offset` compares the integer `uN::from_be_bytes(input[offset..offset + size])` against the
//! rule. Packet headers already are in that order, so classify their bytes as they are; a caller assembling an
//! input by hand writes every multi-byte field with `to_be_bytes()`. (Verified by `tests/acl.rs` for 2-, 4- and
//! 8-byte fields of every kind.)
//!
//! # Why classifying is safe
//! `rte_acl_classify` takes bare pointers and reads, for each input group, 4 bytes at the group's offset (8 for
//! an 8-byte field), plus the first field's byte (or 4 bytes there when another field lies further on). That
//! extent is [`Layout::input_len`], and [`AclContext::classify`] refuses any shorter input, so DPDK never reads
//! out of bounds. The layout rules checked by [`Layout::new`] are what makes that extent exact: with any other
//! grouping rte_acl would silently read bytes other than the ones the layout names.
//!
//! A context lives in EAL memory, so it cannot outlive the [`Eal`]:
//!
//! ```compile_fail,E0597
//! # use dpdk::acl::{AclBuilder, FieldDef, FieldKind, Layout};
//! let layout = Layout::new(&[FieldDef::new(FieldKind::Bitmask, 1, 0, 0, 0)])?;
//! let acl = {
//!     let eal = dpdk::Eal::init(&["app"])?;
//!     AclBuilder::new(&eal, "acl", &layout, 16)?.build(1)?
//! };
//! # Ok::<(), dpdk::Error>(())
//! ```

use std::ffi::CString;
use std::marker::PhantomData;
use std::mem::{align_of, offset_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use dpdk_sys::{rte_acl_ctx, rte_acl_field, rte_acl_rule, rte_acl_rule_data};

use crate::error::{check, Error, Result, ENOTSUP};
use crate::mempool::SOCKET_ID_ANY;
use crate::Eal;

/// Most fields a layout may have (`RTE_ACL_MAX_FIELDS`).
pub const MAX_FIELDS: usize = dpdk_sys::RTE_ACL_MAX_FIELDS as usize;
/// Most categories a context can be built with (`RTE_ACL_MAX_CATEGORIES`).
pub const MAX_CATEGORIES: u32 = dpdk_sys::RTE_ACL_MAX_CATEGORIES;
/// Highest rule priority; the highest priority among matching rules wins.
pub const MAX_PRIORITY: i32 = dpdk_sys::RTE_ACL_MAX_PRIORITY as i32;
/// Lowest rule priority.
pub const MIN_PRIORITY: i32 = dpdk_sys::RTE_ACL_MIN_PRIORITY as i32;

/// Inputs handed to DPDK per call: the pointer array lives on the stack, so classifying never allocates.
const CHUNK: usize = 64;
/// Rules staged before one `rte_acl_add_rules` call (DPDK copies them into the context).
const BATCH: usize = 64;
/// `RTE_ACL_NAMESIZE`, NUL included.
const NAME_SIZE: usize = dpdk_sys::RTE_ACL_NAMESIZE as usize;

// RTE_ACL_RULE_DEF(name, n) is `struct { rte_acl_rule_data data; rte_acl_field field[n]; }`: the builder stages a
// rule as 1 + n `rte_acl_field` slots, the first one holding the header. These are the facts that relies on.
const _: () = {
    assert!(offset_of!(rte_acl_rule, field) == size_of::<rte_acl_field>());
    assert!(size_of::<rte_acl_rule>() == size_of::<rte_acl_field>());
    assert!(size_of::<rte_acl_rule_data>() <= size_of::<rte_acl_field>());
    assert!(align_of::<rte_acl_rule_data>() <= align_of::<rte_acl_field>());
};

/// How a field is matched (`RTE_ACL_FIELD_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// Prefix match: [`FieldValue::value`] and a prefix length in bits (e.g. `10.0.0.0/8` is `0x0a00_0000`, 8).
    Mask,
    /// Inclusive range: low and high bound (e.g. ports `1024..=65535`).
    Range,
    /// `input & mask == value & mask` (e.g. protocol `6/0xff`, or any protocol `0/0`).
    Bitmask,
}

impl FieldKind {
    fn raw(self) -> u8 {
        let raw = match self {
            FieldKind::Mask => dpdk_sys::RTE_ACL_FIELD_TYPE_MASK,
            FieldKind::Range => dpdk_sys::RTE_ACL_FIELD_TYPE_RANGE,
            FieldKind::Bitmask => dpdk_sys::RTE_ACL_FIELD_TYPE_BITMASK,
        };
        raw as u8
    }
}

/// One field of the input, as `struct rte_acl_field_def` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldDef {
    pub kind: FieldKind,
    /// 1, 2, 4 or 8 bytes.
    pub size: u8,
    /// Which entry of [`Rule::fields`] holds this field's value.
    pub field_index: u8,
    /// The 4-byte input group the field belongs to; see [`Layout::new`].
    pub input_index: u8,
    /// Byte offset of the field in every input.
    pub offset: u32,
}

impl FieldDef {
    /// A field definition, arguments in `struct rte_acl_field_def`'s order.
    pub const fn new(
        kind: FieldKind,
        size: u8,
        field_index: u8,
        input_index: u8,
        offset: u32,
    ) -> Self {
        FieldDef {
            kind,
            size,
            field_index,
            input_index,
            offset,
        }
    }

    /// The value that matches anything in this field.
    pub fn any(&self) -> FieldValue {
        match self.kind {
            FieldKind::Mask => FieldValue::prefix(0, 0),
            FieldKind::Range => FieldValue::range(0, max_for(self.size)),
            FieldKind::Bitmask => FieldValue::bitmask(0, 0),
        }
    }

    fn bits(&self) -> u32 {
        u32::from(self.size) * 8
    }
}

/// The largest value a field of `size` bytes holds.
fn max_for(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (u32::from(size) * 8)) - 1
    }
}

/// A rule's value for one field (`struct rte_acl_field`), in host order; its meaning depends on the field's
/// [`FieldKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FieldValue {
    /// Mask: the address (bits past the prefix are ignored); Range: low bound; Bitmask: the value.
    pub value: u64,
    /// Mask: prefix length in bits; Range: high bound (inclusive); Bitmask: the mask.
    pub mask_range: u64,
}

impl FieldValue {
    /// For a [`FieldKind::Mask`] field: `value/len`.
    pub const fn prefix(value: u64, len: u32) -> Self {
        FieldValue {
            value,
            mask_range: len as u64,
        }
    }

    /// For a [`FieldKind::Range`] field: `lo..=hi`.
    pub const fn range(lo: u64, hi: u64) -> Self {
        FieldValue {
            value: lo,
            mask_range: hi,
        }
    }

    /// For a [`FieldKind::Bitmask`] field: `value/mask`.
    pub const fn bitmask(value: u64, mask: u64) -> Self {
        FieldValue {
            value,
            mask_range: mask,
        }
    }
}

/// Why a field layout was refused. rte_acl itself would accept several of these and then read the wrong bytes
/// (or past the input), so they are checked before DPDK sees the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("a layout needs at least one field")]
    Empty,
    #[error("{0} fields; rte_acl handles at most {MAX_FIELDS}")]
    TooManyFields(usize),
    #[error("field {field}: size {size} (must be 1, 2, 4 or 8 bytes)")]
    BadSize { field: usize, size: u8 },
    #[error("the first field must be 1 byte long (rte_acl reads it alone, before the 4-byte groups), not {0}")]
    FirstFieldSize(u8),
    #[error("the first field must have field_index 0, not {0}")]
    FirstFieldIndex(u8),
    #[error(
        "the first field must be alone in its input group, but field 1 shares input_index {0}"
    )]
    FirstFieldShared(u8),
    #[error("field {field}: field_index {index} is out of range or repeated (the {count} fields must use 0..{count}, once each)")]
    FieldIndex {
        field: usize,
        index: u8,
        count: usize,
    },
    #[error("field {field}: input_index {input_index} was already used by an earlier group (a group's fields must be listed together)")]
    InputIndexReused { field: usize, input_index: u8 },
    #[error("field {field}: in input group {input_index} it must start at offset {expected} (right after the previous field), not {found}")]
    GroupGap {
        field: usize,
        input_index: u8,
        expected: u64,
        found: u32,
    },
    #[error("input group {input_index} (starting at field {field}) covers {bytes} bytes; rte_acl reads groups of exactly 4 consecutive bytes, or one 8-byte field")]
    GroupSize {
        field: usize,
        input_index: u8,
        bytes: u32,
    },
    #[error("field {field}: offset {offset} is too large")]
    OffsetOverflow { field: usize, offset: u32 },
}

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{got} field values for a layout of {expected} fields")]
    FieldCount { expected: usize, got: usize },
    #[error("userdata 0 is reserved: classification reports 0 for \"no match\"")]
    ZeroUserdata,
    #[error("priority {0} is outside {MIN_PRIORITY}..={MAX_PRIORITY}")]
    Priority(i32),
    #[error("category mask {0:#x} must select at least one of the {MAX_CATEGORIES} categories, and nothing else")]
    CategoryMask(u32),
    #[error("field {field_index}: {what} {value:#x} does not fit in {size} bytes")]
    TooWide {
        field_index: u8,
        what: &'static str,
        value: u64,
        size: u8,
    },
    #[error("field {field_index}: prefix length {len} exceeds the field's {bits} bits")]
    PrefixTooLong {
        field_index: u8,
        len: u64,
        bits: u32,
    },
    #[error("field {field_index}: range {lo:#x}..={hi:#x} is empty")]
    EmptyRange { field_index: u8, lo: u64, hi: u64 },
}

/// A validated field layout, and how many bytes of every input classification reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    defs: Vec<FieldDef>,
    /// `by_index[k]` is the position in `defs` of the field with `field_index == k`.
    by_index: Vec<usize>,
    input_len: usize,
}

impl Layout {
    /// Checks `defs` against what rte_acl requires:
    ///
    /// * 1 to [`MAX_FIELDS`] fields of 1, 2, 4 or 8 bytes; their `field_index`es are `0..n`, once each;
    /// * the first field is 1 byte, has `field_index` 0 and an `input_index` of its own (DPDK consumes it
    ///   before the loop that reads 4 bytes at a time);
    /// * every other field belongs to a group: consecutive fields sharing an `input_index` (not used by any
    ///   other group), adjacent in the input, covering exactly 4 bytes, or a single 8-byte field.
    ///
    /// The classic IPv4 5-tuple is `proto` (1 byte, group 0), `src` (4, group 1), `dst` (4, group 2), then
    /// `sport` and `dport` (2 + 2, group 3).
    pub fn new(defs: &[FieldDef]) -> Result<Self> {
        Ok(Self::check(defs)?)
    }

    fn check(defs: &[FieldDef]) -> std::result::Result<Self, LayoutError> {
        let n = defs.len();
        if n == 0 {
            return Err(LayoutError::Empty);
        }
        if n > MAX_FIELDS {
            return Err(LayoutError::TooManyFields(n));
        }
        let mut by_index = vec![usize::MAX; n];
        let mut end = 0u64;
        for (field, d) in defs.iter().enumerate() {
            if !matches!(d.size, 1 | 2 | 4 | 8) {
                return Err(LayoutError::BadSize {
                    field,
                    size: d.size,
                });
            }
            let k = usize::from(d.field_index);
            if k >= n || by_index[k] != usize::MAX {
                return Err(LayoutError::FieldIndex {
                    field,
                    index: d.field_index,
                    count: n,
                });
            }
            by_index[k] = field;
            end = end.max(u64::from(d.offset) + u64::from(d.size));
        }
        let first = defs[0];
        if first.size != 1 {
            return Err(LayoutError::FirstFieldSize(first.size));
        }
        if first.field_index != 0 {
            return Err(LayoutError::FirstFieldIndex(first.field_index));
        }
        if let Some(second) = defs.get(1) {
            if second.input_index == first.input_index {
                return Err(LayoutError::FirstFieldShared(first.input_index));
            }
        }

        // Groups after the first field: maximal runs of equal input_index.
        let mut used = vec![first.input_index];
        let mut start = 1;
        while start < n {
            let input_index = defs[start].input_index;
            if used.contains(&input_index) {
                return Err(LayoutError::InputIndexReused {
                    field: start,
                    input_index,
                });
            }
            used.push(input_index);
            let mut stop = start + 1;
            while stop < n && defs[stop].input_index == input_index {
                stop += 1;
            }
            let group = &defs[start..stop];
            let mut next = u64::from(group[0].offset);
            let mut bytes = 0u32;
            for (i, d) in group.iter().enumerate() {
                if u64::from(d.offset) != next {
                    return Err(LayoutError::GroupGap {
                        field: start + i,
                        input_index,
                        expected: next,
                        found: d.offset,
                    });
                }
                next += u64::from(d.size);
                bytes += u32::from(d.size);
            }
            let single_wide = group.len() == 1 && group[0].size == 8;
            if !(single_wide || (bytes == 4 && group.iter().all(|d| d.size <= 4))) {
                return Err(LayoutError::GroupSize {
                    field: start,
                    input_index,
                    bytes,
                });
            }
            start = stop;
        }

        // rte_acl loads 4 bytes at the first field when another field lies further on (get_first_load_size).
        if defs[1..].iter().any(|d| d.offset > first.offset) {
            end = end.max(u64::from(first.offset) + 4);
        }
        let input_len = usize::try_from(end).map_err(|_| LayoutError::OffsetOverflow {
            field: 0,
            offset: first.offset,
        })?;
        Ok(Layout {
            defs: defs.to_vec(),
            by_index,
            input_len,
        })
    }

    pub fn fields(&self) -> &[FieldDef] {
        &self.defs
    }

    /// Bytes of every input that classification reads: shorter inputs are refused.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Size of one rule as DPDK stores it (`RTE_ACL_RULE_SZ(n)`).
    fn rule_size(&self) -> usize {
        size_of::<rte_acl_rule>() + self.defs.len() * size_of::<rte_acl_field>()
    }

    fn check_rule(&self, rule: &Rule<'_>) -> std::result::Result<(), RuleError> {
        if rule.fields.len() != self.defs.len() {
            return Err(RuleError::FieldCount {
                expected: self.defs.len(),
                got: rule.fields.len(),
            });
        }
        if rule.userdata == 0 {
            return Err(RuleError::ZeroUserdata);
        }
        if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&rule.priority) {
            return Err(RuleError::Priority(rule.priority));
        }
        if rule.category_mask == 0 || rule.category_mask >> MAX_CATEGORIES != 0 {
            return Err(RuleError::CategoryMask(rule.category_mask));
        }
        for (k, v) in rule.fields.iter().enumerate() {
            let d = self.defs[self.by_index[k]];
            let max = max_for(d.size);
            let too_wide = |what, value| RuleError::TooWide {
                field_index: d.field_index,
                what,
                value,
                size: d.size,
            };
            if v.value > max {
                return Err(too_wide("value", v.value));
            }
            match d.kind {
                FieldKind::Mask if v.mask_range > u64::from(d.bits()) => {
                    return Err(RuleError::PrefixTooLong {
                        field_index: d.field_index,
                        len: v.mask_range,
                        bits: d.bits(),
                    })
                }
                FieldKind::Range | FieldKind::Bitmask if v.mask_range > max => {
                    let what = if d.kind == FieldKind::Range {
                        "range end"
                    } else {
                        "mask"
                    };
                    return Err(too_wide(what, v.mask_range));
                }
                FieldKind::Range if v.value > v.mask_range => {
                    return Err(RuleError::EmptyRange {
                        field_index: d.field_index,
                        lo: v.value,
                        hi: v.mask_range,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One classification rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule<'a> {
    /// [`MIN_PRIORITY`]..=[`MAX_PRIORITY`]; the highest priority among matching rules wins. rte_acl does not
    /// define which of two matching rules of equal priority wins, so "first listed wins" is expressed as
    /// `MAX_PRIORITY - position`.
    pub priority: i32,
    /// What classification reports for this rule; non-zero (0 means "no match").
    pub userdata: u32,
    /// Categories the rule belongs to (bit `c` for category `c`, below [`MAX_CATEGORIES`]).
    pub category_mask: u32,
    /// One value per field, indexed by [`FieldDef::field_index`].
    pub fields: &'a [FieldValue],
}

/// Classification algorithms (`enum rte_acl_classify_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// The best one available (DPDK's own choice).
    Default,
    Scalar,
    Sse,
    Avx2,
    Neon,
    Altivec,
    /// Needs AVX-512 and an EAL max SIMD bitwidth of at least 256.
    Avx512x16,
    /// Needs AVX-512 and `--force-max-simd-bitwidth=512`.
    Avx512x32,
}

impl Alg {
    /// DPDK's name for it (`dpdk-test-acl --alg`).
    pub const fn name(self) -> &'static str {
        match self {
            Alg::Default => "default",
            Alg::Scalar => "scalar",
            Alg::Sse => "sse",
            Alg::Avx2 => "avx2",
            Alg::Neon => "neon",
            Alg::Altivec => "altivec",
            Alg::Avx512x16 => "avx512x16",
            Alg::Avx512x32 => "avx512x32",
        }
    }

    fn raw(self) -> dpdk_sys::rte_acl_classify_alg {
        match self {
            Alg::Default => dpdk_sys::RTE_ACL_CLASSIFY_DEFAULT,
            Alg::Scalar => dpdk_sys::RTE_ACL_CLASSIFY_SCALAR,
            Alg::Sse => dpdk_sys::RTE_ACL_CLASSIFY_SSE,
            Alg::Avx2 => dpdk_sys::RTE_ACL_CLASSIFY_AVX2,
            Alg::Neon => dpdk_sys::RTE_ACL_CLASSIFY_NEON,
            Alg::Altivec => dpdk_sys::RTE_ACL_CLASSIFY_ALTIVEC,
            Alg::Avx512x16 => dpdk_sys::RTE_ACL_CLASSIFY_AVX512X16,
            Alg::Avx512x32 => dpdk_sys::RTE_ACL_CLASSIFY_AVX512X32,
        }
    }
}

/// DPDK's preference order for [`Alg::Default`] on every architecture (the ones foreign to this CPU fail), so
/// trying them in turn finds DPDK's choice and lets us report it.
const PREFERENCE: [Alg; 7] = [
    Alg::Avx512x32,
    Alg::Avx512x16,
    Alg::Avx2,
    Alg::Sse,
    Alg::Neon,
    Alg::Altivec,
    Alg::Scalar,
];

/// Owns an `rte_acl_ctx`; frees it on drop.
#[derive(Debug)]
struct RawCtx(NonNull<rte_acl_ctx>);

impl RawCtx {
    fn set_classify(&mut self, alg: Alg) -> Result<Alg> {
        if alg == Alg::Default {
            let found = PREFERENCE
                .into_iter()
                .find(|&a| self.set_classify(a).is_ok());
            // Scalar is always available; DPDK asserts as much.
            return Ok(found.unwrap_or(Alg::Scalar));
        }
        // SAFETY: the context is alive and exclusively borrowed (no classification runs concurrently); DPDK
        // checks that `alg` is known, compiled in, supported by the CPU and allowed by the EAL's SIMD bitwidth.
        let ret = unsafe { dpdk_sys::rte_acl_set_ctx_classify(self.0.as_ptr(), alg.raw()) };
        match ret {
            0 => Ok(alg),
            r if r == -ENOTSUP => Err(Error::AclAlgorithmUnsupported(alg)),
            r => Err(Error::call("rte_acl_set_ctx_classify", r)),
        }
    }
}

impl Drop for RawCtx {
    fn drop(&mut self) {
        // SAFETY: the context was created by rte_acl_create, is owned by self, and is freed once; no classify can
        // run (callers borrow the owning AclContext).
        unsafe { dpdk_sys::rte_acl_free(self.0.as_ptr()) };
    }
}

/// Counter making context names unique: `rte_acl_create` hands back the *existing* context when the name is
/// taken, which would make two owners of one context.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);
/// Serializes the check-then-create of context names within the process.
static CREATE: Mutex<()> = Mutex::new(());

/// A unique context name, at most `RTE_ACL_NAMESIZE - 1` bytes: a prefix of `label`, the pid (contexts are listed
/// in shared EAL memory) and a counter.
fn unique_name(label: &str) -> String {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("-{:x}-{id:x}", std::process::id());
    let room = NAME_SIZE - 1 - suffix.len();
    let mut cut = label.len().min(room);
    while !label.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &label[..cut])
}

/// Collects rules for a new context (`rte_acl_create` + `rte_acl_add_rules`). Rules are staged in a fixed
/// buffer and handed to DPDK 64 at a time; DPDK copies them into the context's own storage, sized for
/// `max_rules` up front.
pub struct AclBuilder<'eal> {
    raw: RawCtx,
    name: String,
    layout: Layout,
    max_rules: u32,
    /// Rules accepted so far, staged ones included.
    rules: u32,
    /// Rules in `batch` not yet handed to DPDK.
    staged: usize,
    /// `staged` rules of `1 + fields` slots each: an `rte_acl_rule_data` header, then the fields.
    batch: Vec<rte_acl_field>,
    /// Union of the category masks of all rules.
    categories_used: u32,
    _eal: PhantomData<&'eal Eal>,
}

impl std::fmt::Debug for AclBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclBuilder")
            .field("name", &self.name)
            .field("rules", &self.rules)
            .field("max_rules", &self.max_rules)
            .finish_non_exhaustive()
    }
}

// SAFETY: the builder exclusively owns its context; rte_acl_add_rules/build may be called from any thread, one
// at a time, which `&mut self` ensures.
unsafe impl Send for AclBuilder<'_> {}

impl<'eal> AclBuilder<'eal> {
    /// Creates a context for up to `max_rules` rules over `layout`. `name` is a label: a unique suffix is added
    /// (DPDK names must be unique per process).
    pub fn new(_eal: &'eal Eal, name: &str, layout: &Layout, max_rules: u32) -> Result<Self> {
        let rule_size = layout.rule_size();
        // DPDK sizes the rule storage as `max_rule_num * rule_size` in 32-bit arithmetic: refuse what would wrap.
        let capacity_err = || Error::AclCapacity {
            max_rules,
            rule_size,
        };
        let storage = (max_rules as usize)
            .checked_mul(rule_size)
            .ok_or_else(capacity_err)?;
        u32::try_from(storage).map_err(|_| capacity_err())?;
        let name = unique_name(name);
        let cname = CString::new(name.as_str()).map_err(|_| Error::BadArgument(name.clone()))?;
        let param = dpdk_sys::rte_acl_param {
            name: cname.as_ptr(),
            socket_id: SOCKET_ID_ANY,
            rule_size: rule_size as u32,
            max_rule_num: max_rules,
        };
        let raw = {
            let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: valid C string; a lookup in the EAL's context list under its lock.
            let existing = unsafe { dpdk_sys::rte_acl_find_existing(cname.as_ptr()) };
            if !existing.is_null() {
                return Err(Error::call("rte_acl_create", EEXIST));
            }
            // SAFETY: the EAL is initialized (witnessed by `_eal`); param and the name it points to are valid for
            // the call, and DPDK copies the name.
            let raw = unsafe { dpdk_sys::rte_acl_create(&param) };
            RawCtx(NonNull::new(raw).ok_or_else(|| Error::from_rte_errno("rte_acl_create"))?)
        };
        let batch_rules = BATCH.min(max_rules as usize);
        let slots = 1 + layout.defs.len();
        Ok(AclBuilder {
            raw,
            name,
            layout: layout.clone(),
            max_rules,
            rules: 0,
            staged: 0,
            batch: vec![rte_acl_field::default(); batch_rules * slots],
            categories_used: 0,
            _eal: PhantomData,
        })
    }

    /// The context's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Rules added so far.
    pub fn len(&self) -> u32 {
        self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// Adds a rule after checking it against the layout. Values are in host order (see the module docs).
    pub fn add_rule(&mut self, rule: &Rule<'_>) -> Result<()> {
        self.layout.check_rule(rule)?;
        if self.rules >= self.max_rules {
            return Err(Error::AclFull {
                max_rules: self.max_rules,
            });
        }
        let slots = 1 + self.layout.defs.len();
        if (self.staged + 1) * slots > self.batch.len() {
            self.flush()?;
        }
        let base = self.staged * slots;
        let header = rte_acl_rule_data {
            category_mask: rule.category_mask,
            priority: rule.priority,
            userdata: rule.userdata,
        };
        let head: *mut rte_acl_field = &mut self.batch[base];
        // SAFETY: `head` is the rule's first slot, where RTE_ACL_RULE_DEF puts the rte_acl_rule_data header (its
        // fields start one slot further, checked at compile time above); the header fits in the slot and needs
        // no stricter alignment, and the slot is exclusively borrowed.
        unsafe { head.cast::<rte_acl_rule_data>().write(header) };
        for (k, v) in rule.fields.iter().enumerate() {
            let d = self.layout.defs[self.layout.by_index[k]];
            let mut f = rte_acl_field::default();
            // Values are stored in the union member of the field's width, as C code would.
            match d.size {
                1 => f.value.u8_ = v.value as u8,
                2 => f.value.u16_ = v.value as u16,
                4 => f.value.u32_ = v.value as u32,
                _ => f.value.u64_ = v.value,
            }
            match (d.kind, d.size) {
                // DPDK reads a prefix length as `mask_range.u64` whatever the field's size.
                (FieldKind::Mask, _) => f.mask_range.u64_ = v.mask_range,
                (_, 1) => f.mask_range.u8_ = v.mask_range as u8,
                (_, 2) => f.mask_range.u16_ = v.mask_range as u16,
                (_, 4) => f.mask_range.u32_ = v.mask_range as u32,
                _ => f.mask_range.u64_ = v.mask_range,
            }
            self.batch[base + 1 + k] = f;
        }
        self.staged += 1;
        self.rules += 1;
        self.categories_used |= rule.category_mask;
        Ok(())
    }

    /// Hands the staged rules to DPDK.
    fn flush(&mut self) -> Result<()> {
        if self.staged == 0 {
            return Ok(());
        }
        let n = self.staged as u32;
        self.staged = 0;
        // SAFETY: the context is alive and exclusively borrowed; `batch` holds `n` rules of exactly the
        // `rule_size` the context was created with, laid out as RTE_ACL_RULE_DEF, each checked against the layout
        // (so DPDK's own checks pass); the capacity check in add_rule keeps the total within max_rules. DPDK
        // copies the rules.
        check("rte_acl_add_rules", unsafe {
            dpdk_sys::rte_acl_add_rules(self.raw.0.as_ptr(), self.batch.as_ptr().cast(), n)
        })
    }

    /// Compiles the rules for `categories` categories (1..=[`MAX_CATEGORIES`]; rules of other categories are left
    /// out) into a context ready to classify.
    ///
    /// A rule set that leaves nothing to compile — no rules, or none in these categories — gives an empty context
    /// that classifies everything as "no match" (0): rte_acl refuses to build it (EINVAL), but a policy can
    /// legitimately compile to zero rules.
    pub fn build(mut self, categories: u32) -> Result<AclContext<'eal>> {
        if !(1..=MAX_CATEGORIES).contains(&categories) {
            return Err(Error::AclCategories(categories));
        }
        self.flush()?;
        self.batch = Vec::new();
        let empty = self.categories_used & ((1u32 << categories) - 1) == 0;
        if !empty {
            let mut cfg = dpdk_sys::rte_acl_config {
                num_categories: categories,
                num_fields: self.layout.defs.len() as u32,
                ..Default::default()
            };
            for (raw, d) in cfg.defs.iter_mut().zip(&self.layout.defs) {
                *raw = dpdk_sys::rte_acl_field_def {
                    type_: d.kind.raw(),
                    size: d.size,
                    field_index: d.field_index,
                    input_index: d.input_index,
                    offset: d.offset,
                };
            }
            // SAFETY: the context is alive and exclusively owned; cfg describes the validated layout the rules were
            // laid out for, and DPDK copies it.
            check("rte_acl_build", unsafe {
                dpdk_sys::rte_acl_build(self.raw.0.as_ptr(), &cfg)
            })?;
        }
        // rte_acl_create picked the best algorithm already; ask again to learn which one it is.
        let alg = self.raw.set_classify(Alg::Default)?;
        Ok(AclContext {
            raw: self.raw,
            name: self.name,
            layout: self.layout,
            rules: self.rules,
            categories,
            empty,
            alg,
            _eal: PhantomData,
        })
    }
}

/// Linux errno for a context name already taken (errno.h is not part of the bindings).
const EEXIST: i32 = 17;

/// A compiled rule set. Immutable: a new policy is a new context.
///
/// `Send + Sync`: DPDK documents classification as multi-thread safe on a built context — `rte_acl_classify`
/// only reads the context (it takes `const struct rte_acl_ctx *`) and keeps its state on the caller's stack — so
/// any number of lcores may classify with one context at once. The only mutation, [`AclContext::set_algorithm`],
/// takes `&mut self`.
#[derive(Debug)]
pub struct AclContext<'eal> {
    raw: RawCtx,
    name: String,
    layout: Layout,
    rules: u32,
    categories: u32,
    empty: bool,
    alg: Alg,
    _eal: PhantomData<&'eal Eal>,
}

// SAFETY: the context exclusively owns its rte_acl_ctx; freeing it (rte_free, under the EAL's tailq lock) works
// from any thread.
unsafe impl Send for AclContext<'_> {}
// SAFETY: through `&self` only rte_acl_classify runs, which DPDK allows concurrently on a built context (see the
// type's docs).
unsafe impl Sync for AclContext<'_> {}

impl AclContext<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Bytes every input must have; see [`Layout::input_len`].
    pub fn input_len(&self) -> usize {
        self.layout.input_len
    }

    /// Rules added to the builder (including any outside the built categories).
    pub fn rules(&self) -> u32 {
        self.rules
    }

    /// Categories the context was built with.
    pub fn categories(&self) -> u32 {
        self.categories
    }

    /// Whether nothing was compiled: every input classifies as "no match".
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// The algorithm classification uses (never [`Alg::Default`]: that is resolved to DPDK's choice).
    pub fn algorithm(&self) -> Alg {
        self.alg
    }

    /// Switches the classification algorithm (`rte_acl_set_ctx_classify`) and returns the one in force.
    /// [`Error::AclAlgorithmUnsupported`] when this CPU, this DPDK build, or the EAL's max SIMD bitwidth rules it
    /// out (AVX-512 needs `--force-max-simd-bitwidth=512` for `Avx512x32`); the previous one stays in force.
    pub fn set_algorithm(&mut self, alg: Alg) -> Result<Alg> {
        self.alg = self.raw.set_classify(alg)?;
        Ok(self.alg)
    }

    /// Classifies each input in category 0: `results[i]` is the userdata of the highest-priority rule matching
    /// `inputs[i]`, or 0. Only the first `inputs.len()` results are written. Inputs are read in network byte order
    /// and must be at least [`AclContext::input_len`] bytes long. Allocation-free, for the poll loop.
    #[inline]
    pub fn classify(&self, inputs: &[&[u8]], results: &mut [u32]) -> Result<()> {
        self.classify_categories(inputs, 1, results)
    }

    /// Classifies each input in the first `categories` categories (1, or a multiple of 4 up to 16, as DPDK
    /// requires): `results[i * categories + c]` is the userdata of the best rule of category `c` matching
    /// `inputs[i]`, or 0. Nothing is written unless every input is long enough.
    pub fn classify_categories(
        &self,
        inputs: &[&[u8]],
        categories: u32,
        results: &mut [u32],
    ) -> Result<()> {
        // RTE_ACL_RESULTS_MULTIPLIER is 4 (results are resolved a vector of 4 at a time).
        if !matches!(categories, 1 | 4 | 8 | 12 | 16) {
            return Err(Error::AclCategories(categories));
        }
        let per = categories as usize;
        let need = inputs.len() * per;
        if results.len() < need {
            return Err(Error::AclResultsTooShort {
                inputs: inputs.len(),
                need,
                got: results.len(),
            });
        }
        let min = self.layout.input_len;
        if let Some((index, short)) = inputs.iter().enumerate().find(|(_, i)| i.len() < min) {
            return Err(Error::AclInputTooShort {
                index,
                len: short.len(),
                need: min,
            });
        }
        let results = &mut results[..need];
        if self.empty {
            results.fill(0);
            return Ok(());
        }
        let mut ptrs = [std::ptr::null::<u8>(); CHUNK];
        for (chunk, out) in inputs.chunks(CHUNK).zip(results.chunks_mut(CHUNK * per)) {
            for (p, input) in ptrs.iter_mut().zip(chunk) {
                *p = input.as_ptr();
            }
            // SAFETY: the context is built (not empty) and only read; the first chunk.len() pointers address
            // inputs of at least input_len bytes, which bounds every read rte_acl makes for this layout (see the
            // module docs); `out` has room for chunk.len() * categories results; categories is valid.
            let ret = unsafe {
                dpdk_sys::rte_acl_classify(
                    self.raw.0.as_ptr(),
                    ptrs.as_mut_ptr(),
                    out.as_mut_ptr(),
                    chunk.len() as u32,
                    categories,
                )
            };
            check("rte_acl_classify", ret)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4() -> Vec<FieldDef> {
        use FieldKind::*;
        vec![
            FieldDef::new(Bitmask, 1, 0, 0, 9),
            FieldDef::new(Mask, 4, 1, 1, 12),
            FieldDef::new(Mask, 4, 2, 2, 16),
            FieldDef::new(Range, 2, 3, 3, 20),
            FieldDef::new(Range, 2, 4, 3, 22),
        ]
    }

    #[test]
    fn the_classic_layout_is_accepted_and_its_extent_computed() {
        let l = Layout::new(&ipv4()).unwrap();
        assert_eq!(l.input_len(), 24);
        assert_eq!(l.rule_size(), 16 + 5 * 16);
        // First field last in memory: DPDK reads it byte-wise, so its extent is its own byte.
        let l = Layout::new(&[
            FieldDef::new(FieldKind::Bitmask, 1, 0, 0, 8),
            FieldDef::new(FieldKind::Mask, 4, 1, 1, 0),
        ])
        .unwrap();
        assert_eq!(l.input_len(), 9);
        // First field with others after it: DPDK may load 4 bytes there, which the group after it covers.
        let l = Layout::new(&[
            FieldDef::new(FieldKind::Bitmask, 1, 0, 0, 0),
            FieldDef::new(FieldKind::Mask, 4, 1, 1, 1),
        ])
        .unwrap();
        assert_eq!(l.input_len(), 5);
    }

    #[test]
    fn unique_names_fit_dpdk() {
        let a = unique_name("a-very-long-label-that-does-not-fit-at-all");
        let b = unique_name("a-very-long-label-that-does-not-fit-at-all");
        assert_ne!(a, b);
        assert!(a.len() < NAME_SIZE);
        assert!(unique_name("é".repeat(40).as_str()).len() < NAME_SIZE);
    }

    #[test]
    fn rules_are_checked_against_the_layout() {
        let l = Layout::new(&ipv4()).unwrap();
        let any: Vec<FieldValue> = l.fields().iter().map(FieldDef::any).collect();
        let ok = Rule {
            priority: 1,
            userdata: 1,
            category_mask: 1,
            fields: &any,
        };
        assert_eq!(l.check_rule(&ok), Ok(()));
        let mut bad = any.clone();
        bad[3] = FieldValue::range(2, 1);
        assert!(matches!(
            l.check_rule(&Rule { fields: &bad, ..ok }),
            Err(RuleError::EmptyRange { field_index: 3, .. })
        ));
        bad[3] = FieldValue::range(0, 65536);
        assert!(matches!(
            l.check_rule(&Rule { fields: &bad, ..ok }),
            Err(RuleError::TooWide { field_index: 3, .. })
        ));
        bad[3] = any[3];
        bad[1] = FieldValue::prefix(0, 33);
        assert!(matches!(
            l.check_rule(&Rule { fields: &bad, ..ok }),
            Err(RuleError::PrefixTooLong { field_index: 1, .. })
        ));
        assert_eq!(
            l.check_rule(&Rule { userdata: 0, ..ok }),
            Err(RuleError::ZeroUserdata)
        );
        assert_eq!(
            l.check_rule(&Rule { priority: 0, ..ok }),
            Err(RuleError::Priority(0))
        );
        assert_eq!(
            l.check_rule(&Rule {
                category_mask: 1 << 16,
                ..ok
            }),
            Err(RuleError::CategoryMask(1 << 16))
        );
        assert!(matches!(
            l.check_rule(&Rule {
                fields: &any[..4],
                ..ok
            }),
            Err(RuleError::FieldCount {
                expected: 5,
                got: 4
            })
        ));
    }
}
