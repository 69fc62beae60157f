//! TUN offloads, pure: the `virtio_net_hdr` a TUN device opened with `IFF_VNET_HDR` puts before
//! every packet, completing partial checksums (`NEEDS_CSUM`), and cutting a TCP/IPv4
//! super-segment (TSO, up to 64 KB) into MTU-sized packets with their own IP length, id and
//! checksum and TCP sequence number, flags and checksum. Packets come from the local kernel, but
//! nothing here indexes unchecked: malformed input is an error, never a panic.

/// Length of the (legacy) `virtio_net_hdr`, the TUN default.
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// A parsed `virtio_net_hdr` (native byte order: TUN's default on little-endian hosts, and the
/// legacy format's everywhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let h = b.first_chunk::<VNET_HDR_LEN>()?;
        let u = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
        Some(VnetHdr {
            flags: h[0],
            gso_type: h[1],
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    #[cfg(test)]
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = self.flags;
        h[1] = self.gso_type;
        h[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        h[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        h[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        h
    }
}

/// How to send a packet read from the TUN device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// As it is (checksum completed).
    One,
    /// A TCP/IPv4 super-segment: `count` segments of `mss` payload bytes (the last shorter),
    /// each behind a copy of the `hl` bytes of IP and TCP headers.
    Tcp4 { hl: usize, mss: usize, count: usize },
}

/// Why a packet cannot be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsupported;

/// Completes a partial checksum in place and says how to send `packet` (without its vnet header).
pub fn prepare(h: &VnetHdr, packet: &mut [u8]) -> Result<Plan, Unsupported> {
    match h.gso_type & !GSO_ECN {
        GSO_NONE => {
            if h.flags & F_NEEDS_CSUM != 0 {
                complete_csum(
                    packet,
                    usize::from(h.csum_start),
                    usize::from(h.csum_offset),
                )?;
            }
            Ok(Plan::One)
        }
        GSO_TCPV4 => {
            let (_, hl) = tcp4_header_len(packet).ok_or(Unsupported)?;
            let mss = usize::from(h.gso_size);
            if mss == 0 {
                return Err(Unsupported);
            }
            let payload = packet.len() - hl;
            Ok(Plan::Tcp4 {
                hl,
                mss,
                count: payload.div_ceil(mss).max(1),
            })
        }
        _ => Err(Unsupported),
    }
}

/// (IP header length, IP + TCP header length) of a TCP/IPv4 packet, checked against its length.
fn tcp4_header_len(p: &[u8]) -> Option<(usize, usize)> {
    let v = *p.first()?;
    let ihl = usize::from(v & 0x0f) * 4;
    if v >> 4 != 4 || ihl < 20 || *p.get(9)? != 6 {
        return None;
    }
    let doff = usize::from(*p.get(ihl + 12)? >> 4) * 4;
    if doff < 20 || ihl + doff > p.len() {
        return None;
    }
    Some((ihl, ihl + doff))
}

/// Stores the one's complement of the sum over `packet[start..]` at `start + offset` (the field
/// already holds the pseudo-header sum, as the kernel leaves it with `CHECKSUM_PARTIAL`).
fn complete_csum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), Unsupported> {
    let at = start.checked_add(offset).ok_or(Unsupported)?;
    if at + 2 > packet.len() {
        return Err(Unsupported);
    }
    let body = packet.get(start..).ok_or(Unsupported)?;
    let mut c = !fold(sum(body, 0));
    // UDP sends a computed zero as all ones (zero means "no checksum").
    if c == 0 && packet.get(9) == Some(&17) && packet.first().is_some_and(|v| v >> 4 == 4) {
        c = 0xffff;
    }
    packet
        .get_mut(at..at + 2)
        .ok_or(Unsupported)?
        .copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Writes segment `k` of a [`Plan::Tcp4`] super-segment into `out`; returns its length, or `None`
/// when `k` is out of range or `out` too small.
pub fn write_segment(
    packet: &[u8],
    hl: usize,
    mss: usize,
    k: usize,
    out: &mut [u8],
) -> Option<usize> {
    let (ihl, _) = tcp4_header_len(packet)?;
    let start = hl.checked_add(k.checked_mul(mss)?)?;
    let total = packet.len();
    if start > total || (start == total && k > 0) {
        return None;
    }
    let end = (start + mss).min(total);
    let last = end == total;
    let len = hl + (end - start);
    out.get_mut(..hl)?.copy_from_slice(packet.get(..hl)?);
    out.get_mut(hl..len)?
        .copy_from_slice(packet.get(start..end)?);
    let seg = out.get_mut(..len)?;
    // IPv4: total length, id (+k), checksum.
    let id = u16::from_be_bytes([*seg.get(4)?, *seg.get(5)?]).wrapping_add(k as u16);
    seg.get_mut(2..4)?
        .copy_from_slice(&(len as u16).to_be_bytes());
    seg.get_mut(4..6)?.copy_from_slice(&id.to_be_bytes());
    seg.get_mut(10..12)?.copy_from_slice(&[0, 0]);
    let ipsum = !fold(sum(seg.get(..ihl)?, 0));
    seg.get_mut(10..12)?.copy_from_slice(&ipsum.to_be_bytes());
    // TCP: sequence number, flags, checksum.
    let (ip, tcp) = seg.split_at_mut(ihl);
    let seq =
        u32::from_be_bytes(*tcp.get(4..8)?.first_chunk::<4>()?).wrapping_add((k * mss) as u32);
    tcp.get_mut(4..8)?.copy_from_slice(&seq.to_be_bytes());
    let flags = tcp.get_mut(13)?;
    if !last {
        *flags &= !(TCP_FIN | TCP_PSH);
    }
    if k > 0 {
        *flags &= !TCP_CWR;
    }
    tcp.get_mut(16..18)?.copy_from_slice(&[0, 0]);
    let mut pseudo = sum(ip.get(12..20)?, 0);
    pseudo += 6 + tcp.len() as u64;
    let tsum = !fold(sum(tcp, pseudo));
    tcp.get_mut(16..18)?.copy_from_slice(&tsum.to_be_bytes());
    Some(len)
}

/// Receive-side coalescing (GRO): consecutive in-order segments of one TCP/IPv4 flow become one
/// super-segment, written to the TUN device with a GSO `virtio_net_hdr` so the stack behind it
/// handles one packet instead of dozens. One flow at a time; the caller flushes at the end of
/// every receive batch and before writing anything else.
pub struct Gro {
    buf: Box<[u8]>,
    len: usize,
    count: usize,
    hl: usize,
    mss: usize,
    next_seq: u32,
    closed: bool,
}

impl Default for Gro {
    fn default() -> Self {
        Gro {
            buf: vec![0u8; 65_535].into_boxed_slice(),
            len: 0,
            count: 0,
            hl: 0,
            mss: 0,
            next_seq: 0,
            closed: false,
        }
    }
}

/// Header length of a packet GRO can take: IPv4 without options or fragmentation, total length
/// matching, TCP with only ACK (and PSH) set, a non-empty payload.
fn gro_eligible(p: &[u8]) -> Option<usize> {
    let h = p.first_chunk::<40>()?;
    if h[0] != 0x45 || h[9] != 6 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None;
    }
    if usize::from(u16::from_be_bytes([h[2], h[3]])) != p.len() {
        return None;
    }
    let flags = h[33];
    if flags & 0x10 == 0 || flags & !(0x10 | TCP_PSH) != 0 {
        return None;
    }
    let hl = 20 + usize::from(h[32] >> 4) * 4;
    (hl >= 40 && hl < p.len()).then_some(hl)
}

fn seq_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(*p.get(24..28)?.first_chunk::<4>()?))
}

impl Gro {
    /// Segments held.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether the run is complete (a short or PSH segment ended it): flush now.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Appends `p` to the held run, or starts a run with it when nothing is held. False when `p`
    /// does not fit (flush, then try again) or cannot be coalesced at all (write it as it is).
    pub fn push(&mut self, p: &[u8]) -> bool {
        let Some(hl) = gro_eligible(p) else {
            return false;
        };
        let Some(seq) = seq_of(p) else { return false };
        let payload = p.len() - hl;
        if self.count == 0 {
            let Some(dst) = self.buf.get_mut(..p.len()) else {
                return false;
            };
            dst.copy_from_slice(p);
            self.len = p.len();
            self.count = 1;
            self.hl = hl;
            self.mss = payload;
            self.next_seq = seq.wrapping_add(payload as u32);
            self.closed = p.get(33).is_some_and(|f| f & TCP_PSH != 0);
            return true;
        }
        let Some(held) = self.buf.get(..hl) else {
            return false;
        };
        let same = hl == self.hl
            && !self.closed
            && seq == self.next_seq
            && payload <= self.mss
            && self.len + payload <= self.buf.len()
            // TOS, DF, TTL, addresses; ports; ack; header length; options.
            && p.get(1) == held.get(1)
            && p.get(6) == held.get(6)
            && p.get(8) == held.get(8)
            && p.get(12..24) == held.get(12..24)
            && p.get(28..33) == held.get(28..33)
            && p.get(40..hl) == held.get(40..hl);
        if !same {
            return false;
        }
        let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..self.len + payload), p.get(hl..))
        else {
            return false;
        };
        dst.copy_from_slice(src);
        self.len += payload;
        self.count += 1;
        self.next_seq = seq.wrapping_add(payload as u32);
        let psh = p.get(33).is_some_and(|f| f & TCP_PSH != 0);
        if psh && let Some(f) = self.buf.get_mut(33) {
            *f |= TCP_PSH;
        }
        self.closed = psh || payload < self.mss;
        true
    }

    /// The held run as (vnet header, packet) to write, and the sum of its segments' lengths;
    /// empties the run. A single segment goes out as it came (no GSO).
    pub fn take(&mut self) -> Option<([u8; VNET_HDR_LEN], &[u8], usize)> {
        if self.count == 0 {
            return None;
        }
        let (count, len, hl) = (self.count, self.len, self.hl);
        self.count = 0;
        self.closed = false;
        let mut h = [0u8; VNET_HDR_LEN];
        if count > 1 {
            let p = self.buf.get_mut(..len)?;
            p.get_mut(2..4)?
                .copy_from_slice(&(len as u16).to_be_bytes());
            p.get_mut(10..12)?.copy_from_slice(&[0, 0]);
            let ipsum = !fold(sum(p.get(..20)?, 0));
            p.get_mut(10..12)?.copy_from_slice(&ipsum.to_be_bytes());
            // CHECKSUM_PARTIAL: the TCP field holds the pseudo-header sum.
            let pseudo = fold(sum(p.get(12..20)?, 6 + (len - 20) as u64));
            p.get_mut(36..38)?.copy_from_slice(&pseudo.to_be_bytes());
            h[0] = F_NEEDS_CSUM;
            h[1] = GSO_TCPV4;
            h[2..4].copy_from_slice(&(hl as u16).to_ne_bytes());
            h[4..6].copy_from_slice(&(self.mss as u16).to_ne_bytes());
            h[6..8].copy_from_slice(&20u16.to_ne_bytes());
            h[8..10].copy_from_slice(&16u16.to_ne_bytes());
        }
        let segments = len + (count - 1) * hl;
        Some((h, self.buf.get(..len)?, segments))
    }
}

/// One's complement sum (unfolded) of `data` as big-endian 16-bit words, added to `acc`. The
/// bulk is summed eight bytes at a time in native order (the one's complement sum commutes with
/// swapping the bytes of every word), then swapped once.
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    let mut native = 0u64;
    for c in &mut chunks {
        let Some(w) = c.first_chunk::<8>().map(|b| u64::from_ne_bytes(*b)) else {
            break;
        };
        native += (w & 0xffff_ffff) + (w >> 32);
    }
    acc += u64::from(u16::from_be(fold(native)));
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = rest.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 packet 10.0.0.1:1000 → 10.0.0.2:2000 with `payload`, flags, and checksums as
    /// the kernel leaves them for offload (IP complete, TCP field = pseudo-header sum).
    fn tcp_packet(payload: &[u8], flags: u8, opts: usize) -> Vec<u8> {
        let hl = 20 + 20 + opts;
        let len = hl + payload.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = !fold(sum(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&1000u16.to_be_bytes());
        p[22..24].copy_from_slice(&2000u16.to_be_bytes());
        p[24..28].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        p[32] = ((20 + opts as u8) / 4) << 4;
        p[33] = flags;
        p[hl..].copy_from_slice(payload);
        let tcp_len = (len - 20) as u64;
        let pseudo = fold(sum(&p[12..20], 6 + tcp_len));
        p[36..38].copy_from_slice(&pseudo.to_be_bytes());
        p
    }

    fn valid_ip(p: &[u8]) -> bool {
        fold(sum(&p[..20], 0)) == 0xffff
    }

    fn valid_tcp(p: &[u8]) -> bool {
        let pseudo = sum(&p[12..20], 6 + (p.len() - 20) as u64);
        fold(sum(&p[20..], pseudo)) == 0xffff
    }

    #[test]
    fn sum_matches_the_word_by_word_definition() {
        fn naive(d: &[u8]) -> u16 {
            let mut acc = 0u64;
            for c in d.chunks(2) {
                acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            fold(acc)
        }
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 151 + 7) as u8 ^ 0xa5).collect();
        for len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 1499, 3000] {
            assert_eq!(fold(sum(&data[..len], 0)), naive(&data[..len]), "len {len}");
        }
        let ones = vec![0xffu8; 2001];
        assert_eq!(fold(sum(&ones, 0)), naive(&ones));
        assert_eq!(
            fold(sum(&data[..100], 0x1234)),
            fold(0x1234 + u64::from(naive(&data[..100])))
        );
    }

    #[test]
    fn vnet_header_round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 1,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.encode()), Some(h));
        assert_eq!(VnetHdr::parse(&[0u8; 9]), None);
    }

    #[test]
    fn completes_partial_checksum() {
        let payload: Vec<u8> = (0..333u32).map(|i| (i * 7) as u8).collect();
        let mut p = tcp_packet(&payload, 0x18, 0);
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        assert!(!valid_tcp(&p));
        assert_eq!(prepare(&h, &mut p), Ok(Plan::One));
        assert!(valid_tcp(&p));
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 60_000,
            ..VnetHdr::default()
        };
        assert_eq!(prepare(&h, &mut p), Err(Unsupported));
    }

    #[test]
    fn segments_a_super_segment() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 13 + 5) as u8).collect();
        // PSH|ACK|FIN|CWR, 12 bytes of options.
        let mut p = tcp_packet(&payload, 0x80 | 0x18 | 0x01, 12);
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            gso_size: 1388,
            csum_start: 20,
            csum_offset: 16,
        };
        let plan = prepare(&h, &mut p).unwrap();
        assert_eq!(
            plan,
            Plan::Tcp4 {
                hl: 52,
                mss: 1388,
                count: 8
            }
        );
        let mut out = vec![0u8; 2000];
        let mut joined = Vec::new();
        for k in 0..8 {
            let n = write_segment(&p, 52, 1388, k, &mut out).unwrap();
            let s = &out[..n];
            assert!(n <= 52 + 1388);
            assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize, n);
            assert_eq!(
                u16::from_be_bytes([s[4], s[5]]),
                0xfffeu16.wrapping_add(k as u16)
            );
            assert!(valid_ip(s), "segment {k} IP checksum");
            assert!(valid_tcp(s), "segment {k} TCP checksum");
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add((k * 1388) as u32));
            let flags = s[33];
            assert_eq!(flags & 0x10, 0x10, "ACK everywhere");
            assert_eq!(flags & 0x80 != 0, k == 0, "CWR on the first only");
            assert_eq!(flags & 0x09 != 0, k == 7, "FIN/PSH on the last only");
            assert_eq!(&s[20..52][..4], &p[20..24], "ports");
            joined.extend_from_slice(&s[52..]);
        }
        assert_eq!(joined, payload);
        assert_eq!(write_segment(&p, 52, 1388, 8, &mut out), None);
        assert_eq!(write_segment(&p, 52, 1388, 0, &mut [0u8; 100]), None);
    }

    #[test]
    fn rejects_what_it_cannot_segment() {
        let mut p = tcp_packet(&[1, 2, 3], 0x10, 0);
        let h = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 0,
            ..VnetHdr::default()
        };
        assert_eq!(prepare(&h, &mut p), Err(Unsupported));
        let h = VnetHdr {
            gso_type: 4, // TCPv6
            gso_size: 1000,
            ..VnetHdr::default()
        };
        assert_eq!(prepare(&h, &mut p), Err(Unsupported));
        let h = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            ..VnetHdr::default()
        };
        assert_eq!(prepare(&h, &mut p[..30]), Err(Unsupported));
        p[9] = 17;
        assert_eq!(prepare(&h, &mut p), Err(Unsupported));
    }

    #[test]
    fn gro_coalesces_in_order_segments() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 31 + 1) as u8).collect();
        let mut p = tcp_packet(&payload, 0x18, 12);
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 16,
        };
        let Plan::Tcp4 { hl, mss, count } = prepare(&h, &mut p).unwrap() else {
            panic!("not segmented");
        };
        let segs: Vec<Vec<u8>> = (0..count)
            .map(|k| {
                let mut out = vec![0u8; 2000];
                let n = write_segment(&p, hl, mss, k, &mut out).unwrap();
                out.truncate(n);
                out
            })
            .collect();
        let mut gro = Gro::default();
        // Out of order: the second segment does not join the first.
        assert!(gro.push(&segs[0]));
        assert!(!gro.push(&segs[2]));
        assert!(gro.push(&segs[1]));
        assert!(gro.push(&segs[2]));
        assert!(!gro.closed());
        assert!(gro.push(&segs[3]), "the short PSH segment ends the run");
        assert!(gro.closed());
        assert!(!gro.push(&segs[3]));
        assert_eq!(gro.count(), 4);
        let (vh, merged, seg_bytes) = gro.take().unwrap();
        let vh = VnetHdr::parse(&vh).unwrap();
        assert_eq!(
            (vh.gso_type, vh.gso_size, vh.flags),
            (GSO_TCPV4, 1400, F_NEEDS_CSUM)
        );
        assert_eq!(seg_bytes, segs.iter().map(Vec::len).sum::<usize>());
        assert_eq!(merged.len(), 52 + 5000);
        assert!(valid_ip(merged));
        assert_eq!(&merged[52..], &payload[..]);
        assert_eq!(merged[33] & 0x08, 0x08, "PSH kept");
        // Segmenting the merged packet again gives back the same segments.
        let mut again = merged.to_vec();
        let Plan::Tcp4 { hl, mss, count } = prepare(&vh, &mut again).unwrap() else {
            panic!("not segmented");
        };
        for (k, seg) in segs.iter().enumerate().take(count) {
            let mut out = vec![0u8; 2000];
            let n = write_segment(&again, hl, mss, k, &mut out).unwrap();
            assert_eq!(&out[..n], &seg[..], "segment {k}");
        }
        assert!(gro.take().is_none());
        // A lone segment goes out untouched, without GSO.
        assert!(gro.push(&segs[0]));
        let (vh, one, _) = gro.take().unwrap();
        assert_eq!(vh, [0u8; VNET_HDR_LEN]);
        assert_eq!(one, &segs[0][..]);
        // Not TCP: refused.
        let mut udp = segs[0].clone();
        udp[9] = 17;
        assert!(!gro.push(&udp));
    }
}
