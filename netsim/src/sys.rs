//! The few system calls the standard library does not wrap: `setns`, the TUN attach ioctl and
//! `poll`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Moves the calling thread into the network namespace that `namespace` refers to (a file
/// under /run/netns). Other threads of the process stay where they are.
pub(crate) fn enter_network_namespace(namespace: &File) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `namespace` keeps open for the call.
    let result = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates (or attaches to) the TUN device `name` in the calling thread's network namespace,
/// without the 4-byte packet information header, so each read returns one bare IP packet.
pub(crate) fn open_tun(name: &str) -> io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TUN name `{name}` must have 1 to 15 bytes"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")?;

    // SAFETY: ifreq is plain old data (integers, arrays and a union of such), so all zero
    // bytes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;

    // SAFETY: TUNSETIFF reads and writes one ifreq, and `request` is a live, properly
    // aligned ifreq for the whole call; the descriptor is open.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Waits until `file` is readable or `timeout_ms` passes; returns whether it is readable.
pub(crate) fn wait_readable(file: &impl AsFd, timeout_ms: i32) -> io::Result<bool> {
    let mut poll_fd = libc::pollfd {
        fd: file.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes exactly one pollfd, which lives on this stack frame for
    // the whole call.
    let result = unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
    match result {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(error)
            }
        }
    }
}

/// Returns whether the process runs with effective user id 0.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and touches no memory; POSIX defines no errors for it.
    unsafe { libc::geteuid() == 0 }
}

/// Sends SIGTERM to every process in the process group `group`. Errors are ignored, because
/// the usual one is a group that has exited already.
pub(crate) fn terminate_process_group(group: u32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    if group <= 1 {
        return;
    }
    // SAFETY: kill only sends a signal; a negative pid addresses the group that the child
    // leads, which was created for it with process_group(0).
    unsafe {
        libc::kill(-group, libc::SIGTERM);
    }
}
