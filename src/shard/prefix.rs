//! Stage 6d, per-connection prefixes of shared frames on `/test/`: the seed's chunk
//! `Recvd msg #N: 'MSG'<br/>\n` numbers messages per connection, so its size line and
//! `Recvd msg #N: '` are each subscriber's own while the escaped message and `'<br/>\n` (and
//! the chunk's CRLF) are the fan-out's shared frame; one vectored send (`Driver::sendmsg`)
//! carries both.
//!
//! Who owns the memory: a prefix, its two iovecs and its msghdr live in one [`Slot`] of an
//! arena of fixed chunks that never move (a chunk is never freed or reallocated), lent to
//! one send from `take` until the connection's frame is done (`free`): the kernel reads
//! them until the completion (io_uring copies the msghdr at submission, the bytes later).
//! The arena grows to the peak of prefixed sends in flight and stays: no allocation per
//! send once warm.

use std::io::Write;

/// Slots per chunk of the arena.
const CHUNK: usize = 256;

/// Longest prefix: `ffffffff\r\nRecvd msg #4294967295: '` is 36 bytes.
const PREFIX_MAX: usize = 40;

/// One prefixed send's memory.
#[repr(C)]
struct Slot {
    msg: libc::msghdr,
    iov: [libc::iovec; 2],
    bytes: [u8; PREFIX_MAX],
    len: u8,
}

// SAFETY: a Slot's raw pointers point into its own chunk and the frame its connection's
// Aux holds, both owned by the same shard; the arena is only touched by that shard's thread.
unsafe impl Send for Slot {}

/// The arena of prefix slots.
#[derive(Default)]
pub(super) struct Prefixes {
    chunks: Vec<Box<[Slot]>>,
    free: Vec<u32>,
}

impl Prefixes {
    /// A free slot, growing the arena by a chunk when none is.
    fn take(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        let base = (self.chunks.len() * CHUNK) as u32;
        // SAFETY: Slot is plain C data (integers, null pointers): all zeroes is a valid value.
        let chunk = (0..CHUNK).map(|_| unsafe { std::mem::zeroed::<Slot>() });
        self.chunks.push(chunk.collect());
        self.free.extend((1..CHUNK as u32).rev().map(|k| base + k));
        base
    }

    fn slot(&mut self, s: u32) -> &mut Slot {
        &mut self.chunks[s as usize / CHUNK][s as usize % CHUNK]
    }

    /// A slot holding message `n`'s `/test/` prefix before a shared `body` of `body_len`
    /// bytes (the escaped message and `'<br/>\n`, then CRLF if `chunked`): the chunk's size
    /// line when `chunked`, then `Recvd msg #N: '`.
    pub(super) fn seed(&mut self, n: u32, body_len: usize, chunked: bool) -> u32 {
        let s = self.take();
        let slot = self.slot(s);
        let mut text = [0u8; 32];
        let t = {
            let mut w = &mut text[..];
            // Writing a number into 32 bytes cannot fail.
            let _ = write!(w, "Recvd msg #{n}: '");
            32 - w.len()
        };
        let mut w = &mut slot.bytes[..];
        if chunked {
            let data = t + body_len - 2;
            let _ = write!(w, "{data:x}\r\n");
        }
        let _ = w.write_all(&text[..t]);
        slot.len = (PREFIX_MAX - w.len()) as u8;
        s
    }

    /// Slot `s`'s prefix length.
    pub(super) fn len(&self, s: u32) -> usize {
        usize::from(self.chunks[s as usize / CHUNK][s as usize % CHUNK].len)
    }

    /// The msghdr of the send of slot `s`'s prefix from byte `from` on, then all of `body`.
    /// It stays valid until the slot is freed.
    pub(super) fn msghdr(&mut self, s: u32, from: usize, body: &[u8]) -> *const libc::msghdr {
        let slot = self.slot(s);
        let len = usize::from(slot.len);
        slot.iov[0] = libc::iovec {
            iov_base: slot.bytes[from..len].as_ptr() as *mut libc::c_void,
            iov_len: len - from,
        };
        slot.iov[1] = libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        };
        slot.msg.msg_iov = slot.iov.as_mut_ptr();
        slot.msg.msg_iovlen = 2;
        &slot.msg
    }

    /// Gives slot `s` back (its send has completed).
    pub(super) fn free(&mut self, s: u32) {
        self.free.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::Prefixes;

    #[test]
    fn seed_prefixes_and_msghdr() {
        let mut p = Prefixes::default();
        // Body `5:1:9'<br/>\n` plus CRLF: the chunk holds `Recvd msg #7: '` + 12 bytes.
        let s = p.seed(7, 14, true);
        let t = p.seed(12345, 12, false);
        assert_ne!(s, t);
        let body = b"5:1:9'<br/>\n\r\n";
        let m = p.msghdr(s, 0, body);
        // SAFETY: the msghdr and its iovecs were just set to live buffers.
        let got: Vec<u8> = unsafe {
            let iov = std::slice::from_raw_parts((*m).msg_iov, (*m).msg_iovlen);
            iov.iter()
                .flat_map(|v| {
                    std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len).to_vec()
                })
                .collect()
        };
        let mut want = Vec::new();
        crate::http::response::seed_chunk(&mut want, 7, b"5:1:9", true);
        assert_eq!(got, want);
        assert_eq!(p.len(t), "Recvd msg #12345: '".len());
        p.free(s);
        assert_eq!(p.seed(1, 10, true), s);
        // A second chunk when the first is used up.
        let many: Vec<u32> = (0..600).map(|_| p.seed(1, 10, true)).collect();
        assert!(many.iter().all(|&k| p.len(k) > 0));
    }
}
