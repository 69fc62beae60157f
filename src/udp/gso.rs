//! UDP segmentation offload bookkeeping, pure. Send side (GSO): frames are written one after the
//! other into one arena, and consecutive frames to the same peer with the same length (the last
//! one may be shorter) become one message, sent with a `UDP_SEGMENT` size so the kernel carries
//! them as one packet as far as it can. Receive side (GRO): a datagram delivered with a segment
//! size is cut back into its frames. No I/O and no allocation after construction.

use std::net::SocketAddr;
use std::ops::Range;

/// Most segments the kernel takes in one GSO send (`UDP_MAX_SEGMENTS` of older kernels).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes of UDP payload in one GSO send: 65535 less an IPv6 header (40) and UDP (8), so one
/// limit fits both underlay families.
pub const MAX_GSO_BYTES: usize = 65_535 - 40 - 8;

/// One message of a [`SendBatch`]: `count` frames in `arena[start..start + len]`, each `seg`
/// bytes but the last (which may be shorter), all to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg {
    pub start: usize,
    pub len: usize,
    pub seg: usize,
    pub count: usize,
    pub to: SocketAddr,
}

impl Msg {
    /// The frames of this message as ranges of the arena.
    pub fn frames(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let (start, end, seg) = (self.start, self.start + self.len, self.seg.max(1));
        (start..end)
            .step_by(seg)
            .map(move |a| a..(a + seg).min(end))
    }
}

/// Frames waiting to be sent, grouped into messages.
pub struct SendBatch {
    arena: Box<[u8]>,
    used: usize,
    msgs: Vec<Msg>,
    max_msgs: usize,
    frame_cap: usize,
    /// Whether frames join messages (GSO on); off, every frame is its own message.
    gso: bool,
    /// The last message ended with a short frame: nothing more joins it.
    closed: bool,
}

impl SendBatch {
    /// Room for `max_msgs` messages in an arena of `arena_len` bytes; no frame is longer than
    /// `frame_cap`.
    pub fn new(max_msgs: usize, frame_cap: usize, arena_len: usize) -> SendBatch {
        let max_msgs = max_msgs.max(1);
        let frame_cap = frame_cap.max(1);
        SendBatch {
            arena: vec![0u8; arena_len.max(frame_cap)].into_boxed_slice(),
            used: 0,
            msgs: Vec::with_capacity(max_msgs),
            max_msgs,
            frame_cap,
            gso: true,
            closed: false,
        }
    }

    pub fn set_gso(&mut self, on: bool) {
        self.gso = on;
    }

    pub fn gso(&self) -> bool {
        self.gso
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Space for the next frame (`frame_cap` bytes), or `None` when the batch is full: send it
    /// and [`SendBatch::clear`] it first.
    pub fn next_frame(&mut self) -> Option<&mut [u8]> {
        if self.msgs.len() >= self.max_msgs {
            return None;
        }
        let end = self.used.checked_add(self.frame_cap)?;
        self.arena.get_mut(self.used..end)
    }

    /// Commits the first `len` bytes of [`SendBatch::next_frame`]'s space as a frame to `to`:
    /// it joins the last message when GSO is on, the peer is the same, it is no longer than that
    /// message's segments and the limits allow; otherwise it starts a message. False (and
    /// nothing committed) when `len` is 0, longer than the frame space, or the batch is full.
    pub fn commit(&mut self, len: usize, to: SocketAddr) -> bool {
        if len == 0 || len > self.frame_cap || self.next_frame().is_none() {
            return false;
        }
        if self.gso
            && !self.closed
            && let Some(m) = self.msgs.last_mut()
            && m.to == to
            && len <= m.seg
            && m.count < MAX_SEGMENTS
            && m.len + len <= MAX_GSO_BYTES
            && m.start + m.len == self.used
        {
            m.len += len;
            m.count += 1;
            self.closed = len < m.seg;
            self.used += len;
            return true;
        }
        self.msgs.push(Msg {
            start: self.used,
            len,
            seg: len,
            count: 1,
            to,
        });
        self.closed = false;
        self.used += len;
        true
    }

    pub fn msgs(&self) -> &[Msg] {
        &self.msgs
    }

    pub fn arena(&self) -> &[u8] {
        &self.arena
    }

    /// Frames committed (over all messages).
    #[cfg(test)]
    pub fn frames(&self) -> usize {
        self.msgs.iter().map(|m| m.count).sum()
    }

    pub fn clear(&mut self) {
        self.msgs.clear();
        self.used = 0;
        self.closed = false;
    }
}

/// The frames of a datagram of `len` bytes that arrived with GRO segment size `seg` (`None`: not
/// coalesced). A zero or oversized segment size means one frame; nothing here trusts `seg`
/// beyond bounds.
pub fn split(len: usize, seg: Option<usize>) -> impl Iterator<Item = Range<usize>> {
    let seg = match seg {
        Some(s) if s > 0 && s < len => s,
        _ => len.max(1),
    };
    (0..len).step_by(seg).map(move |a| a..(a + seg).min(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn put(b: &mut SendBatch, len: usize, to: SocketAddr, fill: u8) -> bool {
        match b.next_frame() {
            Some(f) => {
                f[..len].fill(fill);
                b.commit(len, to)
            }
            None => false,
        }
    }

    #[test]
    fn equal_frames_to_one_peer_make_one_message() {
        let mut b = SendBatch::new(8, 1500, 64 * 1024);
        for k in 0..5 {
            assert!(put(&mut b, 1400, addr(1), k));
        }
        assert!(put(&mut b, 600, addr(1), 9), "a shorter last frame joins");
        assert!(put(&mut b, 600, addr(1), 10), "but closes the message");
        assert_eq!(b.msgs().len(), 2);
        let m = b.msgs()[0];
        assert_eq!(
            (m.start, m.len, m.seg, m.count),
            (0, 5 * 1400 + 600, 1400, 6)
        );
        let frames: Vec<_> = m.frames().collect();
        assert_eq!(frames.len(), 6);
        assert_eq!(frames[5], 7000..7600);
        for (k, r) in frames.iter().enumerate() {
            assert!(
                b.arena()[r.clone()]
                    .iter()
                    .all(|&x| x == [0, 1, 2, 3, 4, 9][k])
            );
        }
        assert_eq!(b.msgs()[1].start, 7600);
        assert_eq!(b.frames(), 7);
    }

    #[test]
    fn peer_change_longer_frame_and_limits_start_messages() {
        let mut b = SendBatch::new(16, 1500, 1 << 20);
        assert!(put(&mut b, 1000, addr(1), 0));
        assert!(put(&mut b, 1000, addr(2), 0), "other peer");
        assert!(put(&mut b, 1200, addr(2), 0), "longer than the segment");
        assert_eq!(b.msgs().len(), 3);
        b.clear();
        for _ in 0..MAX_SEGMENTS + 1 {
            assert!(put(&mut b, 100, addr(1), 0));
        }
        assert_eq!(b.msgs().len(), 2, "{MAX_SEGMENTS} segments at most");
        b.clear();
        for _ in 0..50 {
            assert!(put(&mut b, 1472, addr(1), 0));
        }
        assert!(b.msgs().iter().all(|m| m.len <= MAX_GSO_BYTES));
        assert_eq!(b.msgs()[0].count, MAX_GSO_BYTES / 1472);
        assert_eq!(b.frames(), 50);
    }

    #[test]
    fn without_gso_every_frame_is_a_message_and_fullness_is_reported() {
        let mut b = SendBatch::new(3, 1500, 1 << 20);
        b.set_gso(false);
        for _ in 0..3 {
            assert!(put(&mut b, 1000, addr(1), 0));
        }
        assert_eq!(b.msgs().len(), 3);
        assert!(b.next_frame().is_none(), "message slots full");
        assert!(!b.commit(10, addr(1)));
        b.clear();
        assert!(b.is_empty());
        // Arena full: two frame spaces fit, not three.
        let mut b = SendBatch::new(64, 1000, 3200);
        assert!(put(&mut b, 1000, addr(1), 0));
        assert!(put(&mut b, 1000, addr(1), 0));
        assert!(
            b.next_frame().is_some(),
            "500 bytes used of the third space"
        );
        assert!(put(&mut b, 400, addr(1), 0));
        assert!(b.next_frame().is_none());
        assert!(!b.commit(0, addr(1)) && !b.commit(1001, addr(1)));
    }

    #[test]
    fn split_cuts_coalesced_datagrams() {
        let v: Vec<_> = split(3000, Some(1400)).collect();
        assert_eq!(v, [0..1400, 1400..2800, 2800..3000]);
        assert_eq!(split(2800, Some(1400)).count(), 2);
        let one = |seg| {
            let v: Vec<_> = split(100, seg).collect();
            v.len() == 1 && v[0] == (0..100)
        };
        assert!(one(None));
        // Bogus sizes: one frame, never a panic or an endless loop.
        assert!(one(Some(0)));
        assert!(one(Some(100)));
        assert!(one(Some(usize::MAX)));
        assert_eq!(split(0, Some(5)).count(), 0);
        assert_eq!(split(5, Some(1)).count(), 5);
    }
}
