//! The few raw syscalls the tunnel needs: opening a TUN device, poll, and batched UDP I/O
//! (recvmmsg/sendmmsg, with UDP GRO/GSO control messages) over preallocated buffers. Every unsafe block is here.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::gso::SendBatch;

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 203, int)`.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;

/// Opens `/dev/net/tun` and attaches to the TUN device `name`, creating it unless it exists (a
/// persistent one left by a previous run is re-attached). No packet info header, a
/// `virtio_net_hdr` before every packet both ways, checksum and TCP/IPv4 segmentation offloaded
/// to the reader, non-blocking.
pub fn open_tun(name: &str) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: plain open(2) of a constant NUL-terminated path; the fd is owned right away.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            TUNSETOFFLOAD as _,
            (TUN_F_CSUM | TUN_F_TSO4) as libc::c_ulong,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Makes the device behind `fd` outlive the fd (`true`) or die with its last fd (`false`).
pub fn set_persist(fd: RawFd, persist: bool) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its argument by value.
    let rc = unsafe { libc::ioctl(fd, TUNSETPERSIST as _, libc::c_ulong::from(persist)) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `fd` is readable or `timeout_ms` passes. Ok(true) when readable.
pub fn poll_in(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(rc > 0 && p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
}

/// read(2) into `buf`. Ok(None) on EAGAIN.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: the pointer and length describe `buf`.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// writev(2) of `head` then `body` as one packet.
pub fn write2(fd: RawFd, head: &[u8], body: &[u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    // SAFETY: both iovecs describe live slices; writev only reads them.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sets an integer socket option (best effort callers ignore the error).
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the option value is one c_int living across the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn to_storage(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = 0;
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 =
                unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // A v4-mapped source is the IPv4 peer.
            if let Some(v4) = ip.to_ipv4_mapped() {
                return Some(SocketAddr::new(
                    IpAddr::V4(v4),
                    u16::from_be(sin6.sin6_port),
                ));
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                0,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `SOL_UDP` options (linux/udp.h), not in the libc crate for every target.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Room for one control message carrying an int (or less), 8-byte aligned.
type Ctrl = [u64; 4];

/// Asks the kernel to deliver coalesced UDP datagrams with their segment size (UDP GRO).
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, UDP_GRO, 1)
}

/// The GRO segment size of a received message's control data, if any.
fn gro_size(h: &libc::msghdr) -> Option<usize> {
    // SAFETY: the control buffer and its length were set by us and filled by the kernel; the
    // CMSG_* macros walk it within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP
                && (*c).cmsg_type == UDP_GRO
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
                return usize::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// A datagram in a [`Batch`] slot.
pub struct Received<'a> {
    /// Its bytes (mutable, for in-place opening).
    pub data: &'a mut [u8],
    pub from: Option<SocketAddr>,
    /// Longer than the buffer, or its control data was.
    pub truncated: bool,
    /// The GRO segment size when the kernel coalesced several datagrams into this one.
    pub seg: Option<usize>,
}

/// `count` receive buffers with their mmsghdr/iovec/address/control arrays, allocated once.
pub struct Batch {
    bufs: Vec<Box<[u8]>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    ctrls: Vec<Ctrl>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in iovs/hdrs only ever point into this Batch's own buffers and are
// rebuilt before every syscall; the Batch is used by one thread at a time.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new(count: usize, buf_len: usize) -> Batch {
        // SAFETY: these libc structs are plain old data; zeroed is valid.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Batch {
            bufs: (0..count)
                .map(|_| vec![0u8; buf_len].into_boxed_slice())
                .collect(),
            addrs: vec![zero_addr; count],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                count
            ],
            ctrls: vec![[0; 4]; count],
            hdrs: vec![zero_hdr; count],
        }
    }

    /// The datagram received in slot `i`.
    pub fn received(&mut self, i: usize) -> Option<Received<'_>> {
        let h = self.hdrs.get(i)?;
        let len = h.msg_len as usize;
        let truncated = h.msg_hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
        let seg = gro_size(&h.msg_hdr);
        let from = from_storage(self.addrs.get(i)?);
        let buf = self.bufs.get_mut(i)?;
        Some(Received {
            data: buf.get_mut(..len)?,
            from,
            truncated,
            seg,
        })
    }

    /// recvmmsg into all slots; blocks until at least one datagram (or the socket's receive
    /// timeout: Ok(0)).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.bufs.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.ctrls[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = std::mem::size_of::<Ctrl>() as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs[..n] point at this batch's buffers/addresses/controls, set just above.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(rc as usize)
    }
}

/// What a [`Sender::send`] did, in frames.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub frames: usize,
    pub failed: usize,
    /// The kernel refused a segmented send (no UDP GSO here): its frames went out one by one;
    /// the caller should stop asking for GSO.
    pub gso_refused: Option<io::ErrorKind>,
}

/// sendmmsg of a [`SendBatch`]'s messages, each with a `UDP_SEGMENT` size when it holds more than
/// one frame. The header arrays are allocated once.
pub struct Sender {
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    ctrls: Vec<Ctrl>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: as for Batch: the pointers are rebuilt before every syscall and only point into
// memory borrowed for that call.
unsafe impl Send for Sender {}

impl Sender {
    pub fn new(count: usize) -> Sender {
        // SAFETY: plain old data; zeroed is valid.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Sender {
            addrs: vec![zero_addr; count],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                count
            ],
            ctrls: vec![[0; 4]; count],
            hdrs: vec![zero_hdr; count],
        }
    }

    /// Sends every message of `batch` (at most as many as this sender has slots).
    pub fn send(&mut self, fd: RawFd, batch: &SendBatch) -> Sent {
        let arena = batch.arena();
        let msgs = batch.msgs();
        let n = msgs.len().min(self.hdrs.len());
        let mut out = Sent::default();
        for (i, m) in msgs.iter().take(n).enumerate() {
            let Some(bytes) = arena.get(m.start..m.start + m.len) else {
                // Cannot happen (the batch built it); counted, not sent.
                out.failed += m.count;
                self.iovs[i].iov_len = 0;
                continue;
            };
            let alen = to_storage(&m.to, &mut self.addrs[i]);
            self.iovs[i] = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = alen;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
            if m.count > 1 {
                let ctrl = &mut self.ctrls[i];
                h.msg_hdr.msg_control = ctrl.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE of a u16 is 24 bytes, within the 32-byte aligned buffer;
                // the header and data are written through the CMSG_* macros inside it.
                unsafe {
                    h.msg_hdr.msg_controllen =
                        libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as _;
                    let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), m.seg as u16);
                }
            } else {
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            }
        }
        let mut at = 0;
        while at < n {
            // SAFETY: hdrs[at..n] point at this sender's addresses/controls and at `arena`,
            // which is borrowed for the whole call.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[at..n].as_mut_ptr(),
                    (n - at) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                for m in &msgs[at..at + rc as usize] {
                    out.frames += m.count;
                }
                at += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The message at `at` failed. A segmented one the kernel cannot segment goes out
            // frame by frame; anything else is dropped.
            let m = &msgs[at];
            let refused = matches!(
                e.raw_os_error(),
                Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
            );
            if m.count > 1 && refused {
                out.gso_refused = Some(e.kind());
                for r in m.frames() {
                    match arena.get(r).map(|f| send_to(fd, f, &m.to)) {
                        Some(Ok(())) => out.frames += 1,
                        _ => out.failed += 1,
                    }
                }
            } else {
                out.failed += m.count;
            }
            at += 1;
        }
        out
    }
}

/// sendto(2) of one datagram.
fn send_to(fd: RawFd, buf: &[u8], to: &SocketAddr) -> io::Result<()> {
    // SAFETY: plain old data; zeroed is valid.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let alen = to_storage(to, &mut addr);
    // SAFETY: the buffer and address live across the call.
    let rc = unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (&addr as *const libc::sockaddr_storage).cast(),
            alen,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Loopback sockets, no root: the kernel's side of GSO/GRO and the fallback.
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// `SO_NO_CHECK` (asm-generic/socket.h): no UDP checksums, which the kernel refuses to
    /// combine with GSO (EINVAL): a portable way to see the fallback.
    const SO_NO_CHECK: libc::c_int = 11;

    fn pair() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        (tx, rx)
    }

    fn batch_of(to: SocketAddr, lens: &[usize]) -> SendBatch {
        let mut b = SendBatch::new(8, 1500, 64 * 1024);
        for (k, &len) in lens.iter().enumerate() {
            let f = b.next_frame().unwrap();
            f[..len].fill(k as u8);
            assert!(b.commit(len, to));
        }
        b
    }

    /// Every frame received, in order, as (length, fill byte).
    fn drain(rx: &UdpSocket, gro: bool, want: usize) -> (Vec<(usize, u8)>, usize) {
        let mut batch = Batch::new(4, 65_536);
        let (mut frames, mut datagrams) = (Vec::new(), 0);
        while frames.len() < want {
            let n = batch.recv(rx.as_raw_fd()).unwrap();
            assert!(n > 0, "timed out after {frames:?}");
            for i in 0..n {
                let r = batch.received(i).unwrap();
                assert!(!r.truncated);
                assert!(gro || r.seg.is_none());
                datagrams += 1;
                for f in super::super::gso::split(r.data.len(), r.seg) {
                    frames.push((f.len(), r.data[f.start]));
                }
            }
        }
        (frames, datagrams)
    }

    #[test]
    fn gso_send_arrives_as_frames_and_gro_coalesces_them() {
        let want = vec![(1000, 0), (1000, 1), (1000, 2), (300, 3)];
        for gro in [false, true] {
            let (tx, rx) = pair();
            if gro {
                enable_gro(rx.as_raw_fd()).unwrap();
            }
            let b = batch_of(rx.local_addr().unwrap(), &[1000, 1000, 1000, 300]);
            assert_eq!(b.msgs().len(), 1);
            let sent = Sender::new(8).send(tx.as_raw_fd(), &b);
            assert_eq!(
                sent,
                Sent {
                    frames: 4,
                    failed: 0,
                    gso_refused: None
                }
            );
            let (frames, datagrams) = drain(&rx, gro, 4);
            assert_eq!(frames, want, "gro {gro}");
            if gro {
                assert_eq!(datagrams, 1, "one coalesced datagram");
            } else {
                assert_eq!(datagrams, 4);
            }
        }
    }

    #[test]
    fn refused_gso_falls_back_to_one_datagram_per_frame() {
        let (tx, rx) = pair();
        setsockopt_int(tx.as_raw_fd(), libc::SOL_SOCKET, SO_NO_CHECK, 1).unwrap();
        let to = rx.local_addr().unwrap();
        let b = batch_of(to, &[800, 800, 500]);
        let sent = Sender::new(8).send(tx.as_raw_fd(), &b);
        assert_eq!((sent.frames, sent.failed), (3, 0));
        assert!(sent.gso_refused.is_some(), "{sent:?}");
        let (frames, _) = drain(&rx, false, 3);
        assert_eq!(frames, vec![(800, 0), (800, 1), (500, 2)]);
        // A single frame needs no GSO and goes out as it is.
        let b = batch_of(to, &[200]);
        let sent = Sender::new(8).send(tx.as_raw_fd(), &b);
        assert_eq!(
            sent,
            Sent {
                frames: 1,
                failed: 0,
                gso_refused: None
            }
        );
    }
}
