// SPDX-License-Identifier: GPL-2.0

//! [`ResultWriter`]: appends text to the `result` buffer of a `status` or `message` call.

use core::fmt;
use kernel::prelude::*;

/// Appends formatted text to a caller-provided result buffer, like `DMEMIT`.
///
/// The buffer always holds a NUL-terminated string. Text that does not fit is cut off and the
/// writer remembers it ([`ResultWriter::truncated`]); dm core notices the full buffer and asks
/// again with a larger one. Writing never fails, so `write!` results can be ignored.
///
/// # Invariants
///
/// `buf` is valid for writes of `cap` bytes for `'a`; if `cap > 0`, `buf[len]` is NUL and
/// `len < cap`.
pub struct ResultWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    truncated: bool,
}

impl<'a> ResultWriter<'a> {
    /// A writer over `buf`, which it empties (writes the terminating NUL at the start).
    pub fn new(buf: &'a mut [u8]) -> Self {
        if let Some(first) = buf.first_mut() {
            *first = 0;
        }
        // INVARIANT: `len` is 0 and `buf[0]` is NUL if the buffer is not empty.
        Self {
            buf,
            len: 0,
            truncated: false,
        }
    }

    /// Builds a writer over a raw result buffer.
    ///
    /// # Safety
    ///
    /// `result` must be valid for writes of `maxlen` bytes for `'a` and not accessed otherwise
    /// during `'a`.
    pub(crate) unsafe fn from_raw(result: *mut c_char, maxlen: u32) -> Self {
        let buf: &'a mut [u8] = if result.is_null() || maxlen == 0 {
            &mut []
        } else {
            // SAFETY: Guaranteed by the caller; `maxlen` fits in `usize`.
            unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) }
        };
        Self::new(buf)
    }

    /// The text written so far (without the NUL).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether some text did not fit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Write for ResultWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Room for text: everything but the byte that keeps the terminating NUL.
        let room = self.buf.len().saturating_sub(self.len + 1);
        let n = s.len().min(room);
        if n < s.len() {
            self.truncated = true;
        }
        if n > 0 {
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            // INVARIANT: `len + 1 <= buf.len()` by the choice of `room`.
            self.buf[self.len] = 0;
        }
        Ok(())
    }
}

// The glue test module (rust/dm_rthin_test.rs) builds this file too; the suite runs in dm-rthin.
#[cfg(not(rthin_glue_test))]
#[kunit_tests(rthin_dm_result)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn writes_and_terminates() {
        let mut buf = [0xffu8; 16];
        let mut w = ResultWriter::new(&mut buf);
        let _ = write!(w, "{} {}", 12, 345);
        assert_eq!(w.as_bytes(), b"12 345");
        assert!(!w.truncated());
        assert_eq!(buf[6], 0);
    }

    #[test]
    fn truncates_like_dmemit() {
        let mut buf = [0xffu8; 4];
        let mut w = ResultWriter::new(&mut buf);
        let _ = write!(w, "abcdef");
        let _ = write!(w, "gh");
        assert_eq!(w.as_bytes(), b"abc");
        assert!(w.truncated());
        assert_eq!(buf, *b"abc\0");
    }

    #[test]
    fn empty_buffer_is_safe() {
        let mut buf = [0u8; 0];
        let mut w = ResultWriter::new(&mut buf);
        let _ = write!(w, "x");
        assert!(w.is_empty());
        assert!(w.truncated());
    }
}
