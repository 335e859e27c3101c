//! Reads `TCP_INFO` from a connected TCP socket (Linux only).

use std::os::fd::RawFd;
use std::time::Duration;

use crate::stats::TcpStats;

/// Reads the kernel's counters of the TCP socket `fd`; `None` where the call fails or the
/// platform has no `TCP_INFO`.
///
/// The caller keeps the socket open for the duration of the call.
#[cfg(target_os = "linux")]
pub(crate) fn read(fd: RawFd) -> Option<TcpStats> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut length = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: `info` is a writable buffer of `length` bytes that outlives the call, and
    // the kernel writes at most `length` bytes and updates `length`. A closed or reused
    // descriptor makes the call fail or return another socket's counters, never write
    // out of bounds.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut length,
        )
    };
    if result != 0 {
        return None;
    }
    // SAFETY: the buffer started zeroed and every field is a plain integer, so any bytes
    // the kernel left unwritten are valid zeros.
    let info = unsafe { info.assume_init() };
    Some(TcpStats {
        retransmits: u64::from(info.tcpi_total_retrans),
        rtt: Duration::from_micros(u64::from(info.tcpi_rtt)),
        rtt_var: Duration::from_micros(u64::from(info.tcpi_rttvar)),
        congestion_window: info.tcpi_snd_cwnd,
    })
}

/// Returns `None`: only Linux has `TCP_INFO` in this form.
#[cfg(not(target_os = "linux"))]
pub(crate) fn read(_fd: RawFd) -> Option<TcpStats> {
    None
}
