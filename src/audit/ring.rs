//! The shared-memory ring of recent denials and the audit counters, in the style of
//! pg_stat_statements: space requested in `shmem_request_hook`, attached in `shmem_startup_hook`,
//! one named LWLock tranche for the ring and lock-free atomics for the counters.
//!
//! Writers take the lock exclusively for one fixed-size copy (no allocation, nothing that can
//! raise an error while it is held); a full ring overwrites the oldest entry and counts it as
//! dropped when the background worker had not persisted it yet.

use crate::verify::Reason;
use pgrx::pg_sys;
use std::ffi::c_char;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Name of the shared-memory segment and of the LWLock tranche.
const SEGMENT: &std::ffi::CStr = c"pg_tenancy audit";

/// Fixed-capacity text stored inline (truncated on a UTF-8 boundary).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> Text<N> {
    /// Stores `value`, cut to the capacity at a character boundary.
    pub fn set(&mut self, value: &str) {
        let mut end = value.len().min(N);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        self.bytes[..end].copy_from_slice(&value.as_bytes()[..end]);
        self.len = end as u16;
    }

    /// The stored text.
    pub fn get(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

/// One denial as kept in shared memory.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Entry {
    /// Position in the ring's history, from 1; 0 marks an empty slot.
    pub seq: u64,
    /// When it happened (PostgreSQL timestamp, microseconds since 2000-01-01).
    pub at: i64,
    /// The token's `exp`, Unix seconds; `i64::MIN` when not read.
    pub exp: i64,
    pub pid: i32,
    pub database: u32,
    /// The session user: who connected (or `SET SESSION AUTHORIZATION`), whatever the function.
    pub role: u32,
    /// The current user when it differs from the session user (a SECURITY DEFINER function's
    /// owner, `SET ROLE`), else 0.
    pub acting_role: u32,
    pub reason: u8,
    pub client: Text<64>,
    pub application: Text<64>,
    pub iss: Text<256>,
    pub sub: Text<128>,
    pub org_id: Text<128>,
    pub sid: Text<128>,
    pub kid: Text<128>,
    pub detail: Text<256>,
    pub statement: Text<1024>,
}

impl Entry {
    /// An empty entry, to be filled in.
    pub fn empty() -> Entry {
        // SAFETY: every field is plain data for which all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }

    /// The reason stored in the entry.
    pub fn reason(&self) -> Reason {
        Reason::ALL
            .get(self.reason as usize)
            .copied()
            .unwrap_or(Reason::NoToken)
    }
}

/// What the counters count, in array order.
#[derive(Clone, Copy)]
pub enum Counter {
    Verifications,
    CacheHits,
    Denials,
    Persisted,
    Alerts,
}

/// Counters before the per-reason ones.
const FIXED_COUNTERS: usize = 5;
/// Every counter: the fixed ones, then one per denial reason.
pub const COUNTERS: usize = FIXED_COUNTERS + Reason::ALL.len();

/// The header of the segment; `capacity` entries follow it.
#[repr(C)]
struct Ring {
    lock: *mut pg_sys::LWLock,
    capacity: u64,
    /// When this ring was created (a crash restart creates a new one; sequence numbers restart).
    started_at: i64,
    /// Sequence number of the next entry (under `lock`).
    next_seq: u64,
    /// Every entry below this sequence number is in `tenancy.audit_log`.
    persisted: AtomicU64,
    /// Every entry below this sequence number has been copied by the worker (≥ `persisted`).
    copied: AtomicU64,
    /// Entries overwritten before the worker copied them.
    dropped: AtomicU64,
    /// The audit writer's latch while it runs (null otherwise): set when the ring fills up, so a
    /// storm is copied at once instead of after the writer's naptime.
    writer: AtomicPtr<pg_sys::Latch>,
    counters: [AtomicU64; COUNTERS],
}

/// Entries waiting to be copied at which a new denial wakes the writer (a quarter of the ring),
/// and then every this many entries: measured, a storm of 3,400 critical denials/s on 2 cores
/// dropped a few entries from the 1,024-entry ring while the writer slept its 200 ms naptime.
const WAKE_EVERY: u64 = 32;

/// The attached segment in this process; null when pg_tenancy was not preloaded.
static RING: AtomicPtr<Ring> = AtomicPtr::new(std::ptr::null_mut());
/// Capacity requested at postmaster start.
static mut CAPACITY: usize = 0;
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Installs the shared-memory hooks (only while shared_preload_libraries is processed).
pub fn init(capacity: usize) {
    unsafe {
        CAPACITY = capacity;
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request_shmem);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(attach_shmem);
    }
}

/// Bytes of the whole segment.
fn segment_size() -> usize {
    std::mem::size_of::<Ring>() + unsafe { CAPACITY } * std::mem::size_of::<Entry>()
}

/// `shmem_request_hook`: asks for the segment and one LWLock.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn request_shmem() {
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(segment_size());
        pg_sys::RequestNamedLWLockTranche(SEGMENT.as_ptr(), 1);
    }
}

/// `shmem_startup_hook`: creates or attaches the segment.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn attach_shmem() {
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            prev();
        }
        // AddinShmemInitLock is the 22nd individual LWLock (lwlocknames.txt).
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let ring = pg_sys::ShmemInitStruct(SEGMENT.as_ptr(), segment_size(), &mut found).cast::<Ring>();
        if !found {
            std::ptr::write_bytes(ring.cast::<u8>(), 0, segment_size());
            (*ring).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(SEGMENT.as_ptr())).lock;
            (*ring).capacity = CAPACITY as u64;
            (*ring).started_at = pg_sys::GetCurrentTimestamp();
            (*ring).next_seq = 1;
            (*ring).persisted.store(1, Ordering::Relaxed);
            (*ring).copied.store(1, Ordering::Relaxed);
        }
        pg_sys::LWLockRelease(init_lock);
        RING.store(ring, Ordering::Release);
    }
}

/// The attached ring, if pg_tenancy was preloaded.
fn ring() -> Option<&'static Ring> {
    unsafe { RING.load(Ordering::Acquire).as_ref() }
}

/// Pointer to slot `index` (modulo capacity) of the ring.
fn slot(ring: &Ring, seq: u64) -> *mut Entry {
    let base = (ring as *const Ring as *mut u8).wrapping_add(std::mem::size_of::<Ring>()) as *mut Entry;
    base.wrapping_add((seq % ring.capacity) as usize)
}

/// Adds one to a counter.
pub fn count(counter: Counter) {
    if let Some(ring) = ring() {
        ring.counters[counter as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends a denial; returns its sequence number (0 without a ring).
pub fn push(mut entry: Entry) -> u64 {
    let Some(ring) = ring() else { return 0 };
    ring.counters[Counter::Denials as usize].fetch_add(1, Ordering::Relaxed);
    ring.counters[FIXED_COUNTERS + entry.reason as usize].fetch_add(1, Ordering::Relaxed);
    unsafe {
        pg_sys::LWLockAcquire(ring.lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let header = ring as *const Ring as *mut Ring;
        let seq = (*header).next_seq;
        (*header).next_seq = seq + 1;
        let target = slot(ring, seq);
        let old = (*target).seq;
        if old != 0 && old >= ring.copied.load(Ordering::Relaxed) {
            ring.dropped.fetch_add(1, Ordering::Relaxed);
        }
        entry.seq = seq;
        target.write(entry);
        pg_sys::LWLockRelease(ring.lock);
        let waiting = (seq + 1).saturating_sub(ring.copied.load(Ordering::Relaxed));
        if waiting >= ring.capacity / 4 && seq.is_multiple_of(WAKE_EVERY) {
            let writer = ring.writer.load(Ordering::Acquire);
            if !writer.is_null() {
                // A latch in shared memory (the writer's PGPROC): setting it from any backend is
                // what latches are for; a stale one only wakes its new owner once.
                pg_sys::SetLatch(writer);
            }
        }
        seq
    }
}

/// Registers the calling process's latch as the writer's (`None`: the writer is stopping).
pub fn register_writer(latch: Option<*mut pg_sys::Latch>) {
    if let Some(ring) = ring() {
        ring.writer
            .store(latch.unwrap_or(std::ptr::null_mut()), Ordering::Release);
    }
}

/// Copies up to `max` entries with a sequence number of at least `from`, oldest first, for the
/// `tenancy.denials` view.
pub fn since(from: u64, max: usize) -> Vec<Entry> {
    copy(from, max, false)
}

/// The worker's copy of the next entries to persist: from then on, overwriting them is no drop.
pub fn claim(max: usize) -> Vec<Entry> {
    let Some(ring) = ring() else { return Vec::new() };
    copy(ring.persisted.load(Ordering::Relaxed), max, true)
}

/// Gives back a claim whose transaction failed: its entries count as drops again if overwritten.
pub fn unclaim() {
    if let Some(ring) = ring() {
        ring.copied
            .store(ring.persisted.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Copies entries from `from` under the shared lock; `claim` moves the copied mark past them.
fn copy(from: u64, max: usize, claim: bool) -> Vec<Entry> {
    let Some(ring) = ring() else { return Vec::new() };
    let mut out = Vec::new();
    unsafe {
        pg_sys::LWLockAcquire(ring.lock, pg_sys::LWLockMode::LW_SHARED);
        let next = ring.next_seq;
        let oldest = next.saturating_sub(ring.capacity).max(1);
        let mut seq = from.max(oldest);
        while seq < next && out.len() < max {
            out.push(*slot(ring, seq));
            seq += 1;
        }
        if claim {
            ring.copied.fetch_max(seq, Ordering::Relaxed);
        }
        pg_sys::LWLockRelease(ring.lock);
    }
    out
}

/// Records that every entry below `next` is persisted.
pub fn mark_persisted(next: u64, rows: u64) {
    if let Some(ring) = ring() {
        ring.persisted.fetch_max(next, Ordering::Relaxed);
        ring.counters[Counter::Persisted as usize].fetch_add(rows, Ordering::Relaxed);
    }
}

/// When the ring was created (with the sequence number, the key of a persisted entry).
pub fn started_at() -> i64 {
    ring().map_or(0, |r| r.started_at)
}

/// Every counter as (name, value), for `tenancy.stats`.
pub fn counters() -> Vec<(String, i64)> {
    let Some(ring) = ring() else { return Vec::new() };
    let fixed = ["verifications", "cache_hits", "denials", "persisted", "alerts"];
    let mut out: Vec<(String, i64)> = fixed
        .iter()
        .enumerate()
        .map(|(i, name)| (name.to_string(), ring.counters[i].load(Ordering::Relaxed) as i64))
        .collect();
    out.push(("dropped".into(), ring.dropped.load(Ordering::Relaxed) as i64));
    out.push(("ring_capacity".into(), ring.capacity as i64));
    for reason in Reason::ALL {
        let value = ring.counters[FIXED_COUNTERS + reason.index()].load(Ordering::Relaxed);
        out.push((format!("denials.{}", reason.code()), value as i64));
    }
    out
}

/// Copies a C string owned by PostgreSQL into a Rust string (lossy), "" for null.
pub fn c_text(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy().into_owned()
}
