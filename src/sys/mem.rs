//! Memory PID 1 holds and no longer needs: freed heap, and the pages of
//! start-up code.
//!
//! glibc keeps what a program frees for its next allocations, returning
//! only a free top of its heap, and only past a threshold that grows with
//! the blocks it has seen. After reading a long release list PID 1 would
//! then hold megabytes it no longer uses for the hours until the next
//! check, so the updater asks glibc to let go once a check is over.
//!
//! Most of an idle PID 1's resident memory is file pages of its own binary,
//! and many of them only served start-up: the C runtime, parsing the
//! command line and the environment, reading the configuration. A page
//! fault maps up to 64 KiB of the file's cached neighbours ("fault-around"),
//! so that code drags in much of what lies around it, and the mappings stay
//! for PID 1's whole life. [`drop_start_up_pages`] unmaps every page of the
//! binary's read-only segments once, when start-up is over: the loop then
//! faults back in only what it runs (BENCHMARKS.md, "PID 1's footprint",
//! has the figures). It only ever touches segments that are mapped without
//! write permission and lie outside RELRO, whose pages are clean copies of
//! the file: dropping them loses nothing, the next access reads them back
//! from the page cache. Never a writable or relocated mapping: its pages
//! are private and dirty, and `MADV_DONTNEED` would throw their contents
//! away.
//!
//! `MADV_RANDOM` on the same ranges was measured and not adopted: on this
//! kernel (Linux 6.18) fault-around still maps cached neighbours, and with
//! a large read-ahead the whole binary is cached at exec anyway.

use nix::libc;
use std::ffi::c_void;
use std::ops::Range;

/// Returns the free pages of every glibc heap (arena) to the kernel. A
/// no-op with other C libraries, which have no such call.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer; it walks glibc's own heaps
    // under their locks and may be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Unmaps the pages of the binary's own read-only segments (code,
/// read-only data, unwind tables), so that what start-up alone used stops
/// counting in PID 1's resident memory. The pages stay in the page cache
/// and come back on the next access, so this is correct at any time; it is
/// worth doing once, when start-up is over.
pub fn drop_start_up_pages() {
    for range in clean_image_ranges() {
        // A failure only leaves the pages mapped: nothing to report.
        // SAFETY: `range` is whole pages of a segment of this program's own
        // image that is mapped without write permission and lies outside
        // RELRO, so it holds only clean file pages (see the module doc);
        // madvise changes no memory that Rust code can observe.
        unsafe {
            libc::madvise(range.start as *mut c_void, range.len(), libc::MADV_DONTNEED);
        }
    }
}

/// The whole pages of the program's own loaded segments that are mapped
/// without write permission and never were writable (not RELRO).
fn clean_image_ranges() -> Vec<Range<usize>> {
    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: glibc passes a valid dl_phdr_info; `data` is the Vec that
        // clean_image_ranges hands to dl_iterate_phdr, borrowed by nothing
        // else during the call.
        let (info, ranges) = unsafe { (&*info, &mut *data.cast::<Vec<Range<usize>>>()) };
        let headers = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            // SAFETY: dlpi_phdr points to dlpi_phnum program headers, which
            // stay mapped for the program's life.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) }
        };
        ranges.extend(read_only_pages(
            info.dlpi_addr as usize,
            headers,
            page_size(),
        ));
        1 // the first object is the program itself: stop there
    }
    let mut ranges = Vec::new();
    // SAFETY: the callback reads only what glibc passes and writes only to
    // `ranges`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(first_object), (&raw mut ranges).cast());
    }
    ranges
}

/// The whole pages, at load address `bias` + their virtual address, of the
/// loadable segments in `headers` that are not writable and do not overlap
/// a RELRO segment (relocated at start-up, so dirty even once read-only).
fn read_only_pages(bias: usize, headers: &[libc::Elf64_Phdr], page: usize) -> Vec<Range<usize>> {
    let span = |h: &libc::Elf64_Phdr| {
        let start = bias.wrapping_add(h.p_vaddr as usize);
        start..start.wrapping_add(h.p_memsz as usize)
    };
    let relro: Vec<_> = headers
        .iter()
        .filter(|h| h.p_type == libc::PT_GNU_RELRO)
        .map(span)
        .collect();
    headers
        .iter()
        .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0)
        .map(span)
        .map(|s| s.start.next_multiple_of(page)..s.end / page * page)
        .filter(|p| !p.is_empty() && relro.iter().all(|r| r.end <= p.start || p.end <= r.start))
        .collect()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static WRITABLE: AtomicUsize = AtomicUsize::new(7);
    // A table of pointers: relocated at start-up in a position-independent
    // binary, so it lives in RELRO.
    static RELOCATED: &[&str] = &["a", "b"];

    fn holds(ranges: &[Range<usize>], address: usize) -> bool {
        ranges.iter().any(|r| r.contains(&address))
    }

    fn header(p_type: u32, p_flags: u32, p_vaddr: u64, p_memsz: u64) -> libc::Elf64_Phdr {
        libc::Elf64_Phdr {
            p_type,
            p_flags,
            p_offset: 0,
            p_vaddr,
            p_paddr: p_vaddr,
            p_filesz: p_memsz,
            p_memsz,
            p_align: 0x1000,
        }
    }

    #[test]
    fn the_ranges_hold_code_and_read_only_data_but_nothing_writable_or_relocated() {
        let ranges = clean_image_ranges();
        assert!(holds(&ranges, clean_image_ranges as fn() -> _ as usize));
        assert!(holds(&ranges, "read-only text".as_ptr() as usize));
        assert!(!holds(&ranges, &raw const WRITABLE as usize));
        assert!(!holds(&ranges, &raw const RELOCATED as usize));
        let page = page_size();
        assert!(
            ranges
                .iter()
                .all(|r| r.start % page == 0 && r.end % page == 0)
        );
    }

    #[test]
    fn dropped_pages_come_back_intact() {
        WRITABLE.store(11, Ordering::Relaxed);
        let before = format!("{RELOCATED:?}");
        drop_start_up_pages();
        assert_eq!(WRITABLE.load(Ordering::Relaxed), 11);
        assert_eq!(format!("{RELOCATED:?}"), before);
        assert_eq!(before, r#"["a", "b"]"#);
    }

    #[test]
    fn partial_pages_and_segments_that_overlap_relro_are_left_alone() {
        let (r, rx, rw) = (libc::PF_R, libc::PF_R | libc::PF_X, libc::PF_R | libc::PF_W);
        let headers = [
            header(libc::PT_LOAD, r, 0, 0x13fec8),
            header(libc::PT_LOAD, rx, 0x140f00, 0x35c160),
            header(libc::PT_LOAD, rw, 0x49e060, 0x1bfa0),
            header(libc::PT_LOAD, r, 0x4c0000, 0x3000),
            header(libc::PT_GNU_RELRO, r, 0x4c1000, 0x800),
            header(libc::PT_GNU_STACK, rw, 0, 0),
        ];
        let bias = 0x7f00_0000_0000;
        assert_eq!(
            read_only_pages(bias, &headers, 0x1000),
            [bias..bias + 0x13f000, bias + 0x141000..bias + 0x49d000,]
        );
    }
}
