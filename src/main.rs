//! The `moltd` binary. All the work happens in [`moltd::cli::main`].
//!
//! `no_main`: Rust's start-up code sets SIGPIPE to "ignored" before `main`,
//! and an ignored signal survives exec. moltd must hand its child the signal
//! dispositions it was itself given, so it takes over the C `main` symbol and
//! skips that start-up step. Arguments are read from the parameters here.
#![no_main]
// The C `main` below is the binary's one exception (see src/lib.rs).
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, OsString, c_char, c_int};
use std::os::unix::ffi::OsStringExt;

#[allow(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let args = (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| {
            // SAFETY: the C runtime passes argc valid NUL-terminated strings.
            let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
            OsString::from_vec(arg.to_bytes().to_vec())
        })
        .collect();
    moltd::cli::main(args)
}
