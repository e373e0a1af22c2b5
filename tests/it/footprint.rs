//! PID 1's footprint: once start-up is over, moltd unmaps the pages of its
//! binary that only start-up used (`sys::mem::drop_start_up_pages`), and
//! goes on reaping and forwarding as before.
//!
//! The witness is the binary's relocation table (`.rela.dyn`): the dynamic
//! loader reads all of it before `main` and nothing reads it again. In the
//! debug build the tests run it is over a megabyte, so a page in its middle
//! lies far from anything the loop touches (a fault maps at most 64 KiB
//! around it): without the drop that page stays mapped for PID 1's life.
//!
//! The release build also links the code PID 1's loop runs together
//! (build.rs, `src/pid1.order`), so that its loop maps a few 64 KiB windows
//! of code, not most of them: checked on the static build `.ci/run` makes.

use crate::static_build::static_bin;
use crate::util::{Mode, Moltd, TestDir, moltd_bin, process_state};
use std::fs;
use std::io::{Read, Seek, SeekFrom};

/// Address, relative to the load address, and size of the section `name`
/// of the ELF file `path` (64-bit little-endian, as moltd's targets are).
fn section(path: &std::path::Path, name: &str) -> (u64, u64) {
    let elf = fs::read(path).unwrap();
    let u16_at = |at: usize| u64::from(u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()));
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()));
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    assert_eq!(
        &elf[..5],
        b"\x7fELF\x02",
        "{} is not a 64-bit ELF file",
        path.display()
    );
    let (table, size, count) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c));
    let header = |i: u64| usize::try_from(table + i * size).unwrap();
    let names = usize::try_from(u64_at(header(u16_at(0x3e)) + 0x18)).unwrap();
    (0..count)
        .map(header)
        .find(|&h| {
            let at = names + usize::try_from(u32_at(h)).unwrap();
            elf[at..].split(|&b| b == 0).next() == Some(name.as_bytes())
        })
        .map(|h| (u64_at(h + 0x10), u64_at(h + 0x20)))
        .unwrap_or_else(|| panic!("{} has no {name} section", path.display()))
}

/// Whether the page at `address` is mapped in process `pid` (its present
/// bit in /proc/PID/pagemap).
fn page_present(pid: i32, address: u64) -> bool {
    let mut pagemap = fs::File::open(format!("/proc/{pid}/pagemap")).unwrap();
    pagemap.seek(SeekFrom::Start(address / 4096 * 8)).unwrap();
    let mut entry = [0; 8];
    pagemap.read_exact(&mut entry).unwrap();
    u64::from_le_bytes(entry) >> 63 == 1
}

/// The address in process `pid` of the middle page of moltd's relocation
/// table: the lowest mapping of the binary is its load address.
fn relocation_page(pid: i32) -> u64 {
    let binary = fs::canonicalize(moltd_bin()).unwrap();
    let (offset, size) = section(&binary, ".rela.dyn");
    assert!(
        size >= 256 << 10,
        ".rela.dyn is {size} bytes: too small to hold a page 64 KiB away from other code"
    );
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let base = maps
        .lines()
        .filter(|line| line.ends_with(&*binary.to_string_lossy()))
        .filter_map(|line| u64::from_str_radix(line.split('-').next()?, 16).ok())
        .min()
        .expect("moltd's binary among its mappings");
    base + offset + size / 2
}

#[test]
fn pid1_unmaps_the_pages_only_start_up_used() {
    let dir = TestDir::new("start_up_pages");
    dir.script("services/app/run", "#!/bin/sh\nexec sleep 600\n");
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "services"])
        .spawn();
    moltd.wait_for_sv("app", "run:");
    let pid = moltd.moltd_pid();
    if page_present(pid, relocation_page(pid)) {
        moltd.fail("PID 1 still maps its relocation table, which only start-up reads");
    }
    moltd.signal(nix::libc::SIGTERM);
    moltd.wait().expect_code(0);
}

#[test]
fn pid1_reaps_and_forwards_after_dropping_start_up_pages() {
    let dir = TestDir::new("after_start_up_pages");
    // The command leaves an orphan that exits a moment later, for PID 1 to
    // reap, then waits for USR1, forwarded by PID 1, and exits 7.
    let script = dir.script(
        "command.sh",
        "#!/bin/sh\n\
         sh -c 'sleep 0.2 &'\n\
         trap 'exit 7' USR1\n\
         echo ready > ready\n\
         i=0\n\
         while [ $i -lt 120 ]; do i=$((i + 1)); sleep 1 & wait $!; done\n",
    );
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--", "sh", &script.display().to_string()])
        .spawn();
    moltd.wait_for_file("ready", "ready");
    let pid = moltd.moltd_pid();
    if page_present(pid, relocation_page(pid)) {
        moltd.fail("PID 1 did not drop its start-up pages");
    }
    let command = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let command: i32 = command.split_whitespace().next().unwrap().parse().unwrap();
    moltd.wait_for("the orphan to be reaped", || {
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap()
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
            .all(|c| c == command && process_state(c) != Some('Z'))
    });
    moltd.signal(nix::libc::SIGUSR1);
    moltd.wait().expect_code(7);
}

/// KiB of `pid`'s resident pages in the executable mappings of its binary
/// `binary` (from /proc/PID/smaps).
fn resident_code_kib(pid: i32, binary: &std::path::Path) -> u64 {
    let binary = fs::canonicalize(binary).unwrap();
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut in_code = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            in_code = fields.get(1) == Some(&"r-xp")
                && fields.last() == Some(&&*binary.to_string_lossy());
        } else if in_code && fields.first() == Some(&"Rss:") {
            kib += fields[1].parse::<u64>().unwrap();
        }
    }
    kib
}

/// Before the code order, the supervisor's code lay spread among the
/// updater's: a static PID 1 with services mapped 1,800-2,400 KiB of code
/// (29 of the 54 windows of `.text`) after a restart and a few requests;
/// with it, 332 KiB. The bound leaves room for a list gone a little stale.
#[test]
fn static_pid1_maps_few_code_windows_after_events() {
    let Some(bin) = static_bin("static_pid1_maps_few_code_windows_after_events") else {
        return;
    };
    let dir = TestDir::new("code_windows");
    for name in ["a", "b", "c"] {
        dir.script(
            &format!("services/{name}/run"),
            "#!/bin/sh\necho up\nexec sleep 600\n",
        );
    }
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .program(&bin)
        .args(["--services", "services"])
        .spawn();
    moltd.wait_for_sv("a", "run:");
    // The events of PID 1's life: a restart, requests, a service's output.
    dir.sv(&["restart", "a"]);
    moltd.wait_for_sv("a", "run:");
    dir.sv(&["down", "b"]);
    moltd.wait_for_sv("b", "down:");
    dir.sv(&["up", "b"]);
    moltd.wait_for_sv("b", "run:");
    dir.moltd_client(&["status"]);
    let pid = moltd.moltd_pid();
    let kib = resident_code_kib(pid, &bin);
    if kib > 768 {
        moltd.fail(&format!(
            "PID 1 maps {kib} KiB of code: is its loop's code no longer linked together (build.rs)?"
        ));
    }
    moltd.signal(nix::libc::SIGTERM);
    moltd.wait().expect_code(0);
}
