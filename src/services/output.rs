//! Service output on moltd's own stdout and stderr, one line at a time,
//! each prefixed with the service's name (`web | listening on :80`), so the
//! container log says who said what.

use crate::sys::io::Pipe;
use nix::errno::Errno;
use std::io::Write;

/// A line longer than this is cut and written in pieces, so a service that
/// never prints a newline cannot make moltd buffer without bound.
const MAX_LINE: usize = 16 * 1024;

/// One output stream of one program.
#[derive(Debug)]
pub struct Output {
    pub pipe: Pipe,
    label: String,
    to_stderr: bool,
    pending: Vec<u8>,
}

impl Output {
    pub fn new(label: String, to_stderr: bool) -> Result<Output, Errno> {
        Ok(Output::adopt(label, to_stderr, Pipe::new(true)?))
    }

    /// Reads what is waiting in the pipe and writes out every whole line.
    /// A pipe the previous PID 1 read, taken back after a self-update.
    pub fn adopt(label: String, to_stderr: bool, pipe: Pipe) -> Output {
        Output {
            pipe,
            label,
            to_stderr,
            pending: Vec::new(),
        }
    }

    pub fn drain(&mut self) {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = self.pipe.read_some(&mut buf) {
            self.pending.extend_from_slice(&buf[..n]);
            let mut lines = Vec::new();
            loop {
                let cut = match self.pending.iter().position(|&b| b == b'\n') {
                    Some(end) => end + 1,
                    None if self.pending.len() >= MAX_LINE => MAX_LINE,
                    None => break,
                };
                lines.push(self.pending.drain(..cut).collect());
            }
            self.write(&lines);
        }
    }

    /// Writes out a last line without its newline (the service is gone).
    pub fn flush(&mut self) {
        self.drain();
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.write(&[rest]);
        }
    }

    fn write(&self, lines: &[Vec<u8>]) {
        if lines.is_empty() {
            return;
        }
        let mut text = Vec::new();
        for line in lines {
            if crate::logging::json() {
                let msg = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line));
                let (level, stream) = match self.to_stderr {
                    true => ("error", "stderr"),
                    false => ("info", "stdout"),
                };
                let extra = [
                    ("source", "service"),
                    ("service", &self.label),
                    ("stream", stream),
                ];
                let line = crate::logging::json_line(level, &msg, &extra);
                text.extend_from_slice(line.as_bytes());
                continue;
            }
            text.extend_from_slice(self.label.as_bytes());
            text.extend_from_slice(b" | ");
            text.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
            text.push(b'\n');
        }
        // Nowhere to report a failure to: this is moltd's own output.
        let _ = if self.to_stderr {
            std::io::stderr().lock().write_all(&text)
        } else {
            std::io::stdout().lock().write_all(&text)
        };
    }
}
