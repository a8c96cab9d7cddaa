//! A device's label: its name, its node's name, whether it is online and
//! when it was last seen, in 16 bytes and one allocation that holds the
//! two names and nothing else (a 6-byte name on a 2-byte node takes 8
//! bytes, the allocator's smallest class).
//!
//! The 16 bytes are a thin pointer to the allocation, whose lowest bit
//! (free: the allocation is aligned to 2) is the online flag, and a word
//! holding the name's length less one (8 bits), the node's length (8 bits)
//! and the last-seen time (48 bits, signed: ±4,400 years around 1970, in
//! ms). A label that does not fit that word (a node of 255 or 256 bytes,
//! which `IM.CONNECT` accepts; a name of 0 or more than 256 bytes, which
//! only a replicated effect or a foreign RDB can bring; a time beyond 48
//! bits) is kept whole: the word's node byte says so, and the allocation
//! starts with the time (8 bytes, little-endian) and the two lengths
//! (LEB128 varints). Nothing is lost or clamped either way.
//!
//! This is the only unsafe code of the device table: every raw access goes
//! through [`Label::base`], sized by what [`Label::new`] wrote.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

/// The pointer's bit that holds the online flag.
const ONLINE: usize = 1;

/// The allocation's alignment: enough to leave [`ONLINE`] free.
const ALIGN: usize = 2;

/// The node byte of a label kept whole.
const WHOLE: u64 = 0xff;

/// The bits of the word below the time.
const LENS_BITS: u32 = 16;

/// Most bytes a LEB128 varint of a `usize` takes.
const MAX_VARINT: usize = 10;

/// The bytes before the names in a label kept whole, at most: the time and
/// two varints.
const MAX_HEADER: usize = 8 + 2 * MAX_VARINT;

/// A device's name, node, online flag and last-seen time (Unix ms): 16
/// bytes and one allocation of the two names.
pub struct Label {
    /// The allocation, with [`ONLINE`] set while the device is online.
    ptr: NonNull<u8>,
    /// The name's length less one (bits 0-7), the node's length (8-15;
    /// [`WHOLE`] for a label kept whole) and the time (16-63, signed).
    word: u64,
}

// SAFETY: a label owns its allocation outright, as a `Box<[u8]>` does, and
// changes it only through `&mut self`; nothing is shared between labels.
unsafe impl Send for Label {}
// SAFETY: `&Label` only reads the allocation.
unsafe impl Sync for Label {}

/// Appends `n` as a LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a LEB128 varint at `*at` of `b`, moving `*at` past it.
fn varint(b: &[u8], at: &mut usize) -> usize {
    let mut n = 0usize;
    for shift in (0..usize::BITS).step_by(7) {
        let Some(&x) = b.get(*at) else { break };
        *at += 1;
        n |= usize::from(x & 0x7f) << shift;
        if x < 0x80 {
            break;
        }
    }
    n
}

/// The word of a label whose names and time fit it; `None` when they do
/// not.
fn short_word(name: usize, node: usize, last_seen: i64) -> Option<u64> {
    let name = u64::try_from(name.checked_sub(1)?)
        .ok()
        .filter(|&n| n <= 0xff)?;
    let node = u64::try_from(node).ok().filter(|&n| n < WHOLE)?;
    let time = last_seen << LENS_BITS;
    (time >> LENS_BITS == last_seen).then_some((time as u64) | (node << 8) | name)
}

impl Label {
    /// A label for `name` on `node` (empty for the default node), online
    /// or not, last seen at `last_seen` (Unix ms).
    pub fn new(name: &[u8], node: &[u8], online: bool, last_seen: i64) -> Label {
        let short = short_word(name.len(), node.len(), last_seen);
        let mut bytes = Vec::with_capacity(MAX_HEADER + name.len() + node.len());
        if short.is_none() {
            bytes.extend_from_slice(&last_seen.to_le_bytes());
            put_varint(&mut bytes, name.len());
            put_varint(&mut bytes, node.len());
        }
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(node);
        let layout = match Layout::from_size_align(bytes.len(), ALIGN) {
            Ok(l) => l,
            // Not reached: the bytes are in memory already, so their size
            // is a valid one.
            Err(_) => handle_alloc_error(Layout::new::<u16>()),
        };
        // SAFETY: `layout` has a non-zero size: a label that fits the word
        // has a name of at least one byte, and one kept whole has a
        // header.
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        // SAFETY: `ptr` is a fresh allocation of `bytes.len()` bytes, which
        // `bytes` cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
        let mut label = Label {
            ptr,
            word: short.unwrap_or(WHOLE << 8),
        };
        label.set_online(online);
        label
    }

    /// The allocation's start, without the flag.
    #[inline]
    fn base(&self) -> *mut u8 {
        self.ptr.as_ptr().map_addr(|a| a & !ONLINE)
    }

    /// Kept whole: the allocation starts with the time and the lengths.
    #[inline]
    fn whole(&self) -> bool {
        (self.word >> 8) & 0xff == WHOLE
    }

    /// Where the name starts in the allocation, its length and the node's.
    #[inline]
    fn layout(&self) -> (usize, usize, usize) {
        if !self.whole() {
            let name = (self.word & 0xff) as usize + 1;
            let node = ((self.word >> 8) & 0xff) as usize;
            return (0, name, node);
        }
        let head = self.header_bytes();
        let mut at = 8;
        let name = varint(head, &mut at);
        let node = varint(head, &mut at);
        (at, name, node)
    }

    /// The header of a label kept whole: as many of its first
    /// [`MAX_HEADER`] bytes as belong to it.
    fn header_bytes(&self) -> &[u8] {
        // The header's length is only known once its varints are read, so
        // read them a byte at a time: the time's 8 bytes, then each varint
        // up to its last byte, all written by `new`.
        let mut len = 8;
        for _ in 0..2 {
            loop {
                // SAFETY: `len` is within the header `new` wrote: the time,
                // then varints whose every byte but the last is at least
                // 0x80, so the loop stops on each varint's last byte.
                let b = unsafe { *self.base().add(len) };
                len += 1;
                if b < 0x80 {
                    break;
                }
            }
        }
        // SAFETY: those `len` bytes are the header `new` wrote and
        // initialised, and live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base(), len) }
    }

    /// Asks the CPU to fetch the name and the node (a hint: nothing is
    /// read).
    #[inline]
    pub fn prefetch(&self) {
        crate::prefetch::prefetch_address(self.base());
    }

    /// The name and the node (empty for the default node).
    pub fn parts(&self) -> (&[u8], &[u8]) {
        (self.name(), self.node())
    }

    /// The device's name.
    #[inline]
    pub fn name(&self) -> &[u8] {
        let (at, name, _) = self.layout();
        // SAFETY: the name is the `name` bytes from `at` of the allocation
        // `new` wrote (the word or the header says so), initialised, and
        // living as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base().add(at), name) }
    }

    /// The node's name; empty for the default node.
    #[inline]
    pub fn node(&self) -> &[u8] {
        let (at, name, node) = self.layout();
        // SAFETY: the node is the `node` bytes after the name, the last of
        // the allocation `new` wrote, initialised, and living as long as
        // `self`.
        unsafe { std::slice::from_raw_parts(self.base().add(at + name), node) }
    }

    /// Whether the device is online.
    #[inline]
    pub fn online(&self) -> bool {
        self.ptr.as_ptr().addr() & ONLINE != 0
    }

    /// Marks the device online or not.
    pub fn set_online(&mut self, online: bool) {
        let flag = if online { ONLINE } else { 0 };
        // The allocation's address is even and not null, so the address
        // with its lowest bit set or cleared is not null either.
        if let Some(p) = NonNull::new(self.ptr.as_ptr().map_addr(|a| (a & !ONLINE) | flag)) {
            self.ptr = p;
        }
    }

    /// When the device was last seen (Unix ms).
    #[inline]
    pub fn last_seen(&self) -> i64 {
        if !self.whole() {
            return self.word as i64 >> LENS_BITS;
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(self.header_bytes().get(..8).unwrap_or(&[0; 8]));
        i64::from_le_bytes(t)
    }

    /// Records when the device was last seen (Unix ms).
    pub fn set_last_seen(&mut self, last_seen: i64) {
        if self.whole() {
            let t = last_seen.to_le_bytes();
            // SAFETY: a label kept whole starts with 8 bytes of time, which
            // `&mut self` owns alone.
            unsafe { std::ptr::copy_nonoverlapping(t.as_ptr(), self.base(), 8) };
            return;
        }
        let time = last_seen << LENS_BITS;
        if time >> LENS_BITS == last_seen {
            self.word = (time as u64) | (self.word & 0xffff);
        } else {
            let (name, node) = self.parts();
            *self = Label::new(name, node, self.online(), last_seen);
        }
    }

    /// The same device on another node (empty for the default node).
    pub fn with_node(&self, node: &[u8]) -> Label {
        Label::new(self.name(), node, self.online(), self.last_seen())
    }

    /// Heap bytes held (for `MEMORY USAGE`).
    pub fn heap_bytes(&self) -> usize {
        let (at, name, node) = self.layout();
        at + name + node
    }
}

impl Drop for Label {
    fn drop(&mut self) {
        if let Ok(layout) = Layout::from_size_align(self.heap_bytes(), ALIGN) {
            // SAFETY: the allocation `new` made with this very layout (its
            // size is what the word or the header says), freed once, here.
            unsafe { dealloc(self.base(), layout) };
        }
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Label) -> bool {
        (self.parts(), self.online(), self.last_seen())
            == (other.parts(), other.online(), other.last_seen())
    }
}

impl Eq for Label {}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, node) = self.parts();
        f.debug_struct("Label")
            .field("name", &String::from_utf8_lossy(name))
            .field("node", &String::from_utf8_lossy(node))
            .field("online", &self.online())
            .field("last_seen", &self.last_seen())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: [i64; 9] = [
        0,
        1,
        -1,
        1_732_690_028_123,
        (1 << 47) - 1,
        -(1 << 47),
        1 << 47,
        i64::MAX,
        i64::MIN,
    ];

    #[test]
    fn holds_any_lengths_and_times() {
        let long: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        for name_len in [0, 1, 5, 6, 127, 128, 255, 256, 257, 300, 16_384, 70_000] {
            for node_len in [0, 1, 2, 127, 128, 254, 255, 256, 70_000] {
                let name = &long[..name_len];
                let node = &long[long.len() - node_len..];
                for (i, &t) in TIMES.iter().enumerate() {
                    let online = i % 2 == 0;
                    let mut l = Label::new(name, node, online, t);
                    assert_eq!(l.parts(), (name, node));
                    assert_eq!((l.online(), l.last_seen()), (online, t));
                    let fits = (1..=256).contains(&name_len)
                        && node_len < 255
                        && (-(1 << 47)..1 << 47).contains(&t);
                    assert_eq!(l.heap_bytes() == name_len + node_len, fits);
                    l.set_online(!online);
                    assert_eq!((l.name(), l.node(), l.online()), (name, node, !online));
                    l.set_online(!online);
                    assert_eq!(l.online(), !online, "setting it twice holds");
                    l.set_online(online);
                    for &u in TIMES.iter().rev() {
                        l.set_last_seen(u);
                        assert_eq!(
                            (l.parts(), l.online(), l.last_seen()),
                            ((name, node), online, u)
                        );
                    }
                    l.set_last_seen(t);
                    assert_eq!(l, Label::new(name, node, online, t));
                    let moved = l.with_node(b"n1");
                    assert_eq!(moved.parts(), (name, &b"n1"[..]));
                    assert_eq!((moved.online(), moved.last_seen()), (online, t));
                }
            }
        }
    }

    #[test]
    fn a_short_label_fits_the_smallest_class() {
        assert_eq!(std::mem::size_of::<Label>(), 16);
        assert_eq!(std::mem::size_of::<Option<Label>>(), 16);
        let now = 1_732_690_028_123;
        assert_eq!(Label::new(b"tablet", b"n1", false, now).heap_bytes(), 8);
        assert_eq!(Label::new(b"phone", b"", true, now).heap_bytes(), 5);
    }

    #[test]
    fn equality_sees_names_node_flag_and_time() {
        let a = Label::new(b"ab", b"c", false, 5);
        assert_eq!(a, Label::new(b"ab", b"c", false, 5));
        assert_ne!(a, Label::new(b"a", b"bc", false, 5));
        assert_ne!(a, Label::new(b"ab", b"c", true, 5));
        assert_ne!(a, Label::new(b"ab", b"", false, 5));
        assert_ne!(a, Label::new(b"ab", b"c", false, 6));
        assert!(format!("{a:?}").contains("\"ab\""));
    }
}
