//! The forwarding threads: two readers feed packets from the TUN devices into the engine,
//! one scheduler writes packets out when the engine reports them due.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::{Direction, Link, Packet};
use crate::pcap::PcapWriter;
use crate::sys;

/// Upper bound on how long a thread waits before it checks the stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// Larger than any packet a TUN device with MTU 1500 returns, with room for GSO-less jumbo.
const READ_BUFFER: usize = 65_536;

struct Shared {
    link: Mutex<Link>,
    wake: Condvar,
    stop: AtomicBool,
}

/// Running forwarding threads; stopping joins them and closes the TUN devices.
pub(crate) struct Forwarder {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts forwarding between the client-side and server-side TUN devices.
    pub(crate) fn start(
        link: Link,
        client_tun: File,
        server_tun: File,
        capture: Option<PcapWriter>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            link: Mutex::new(link),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let client_out = client_tun.try_clone()?;
        let server_out = server_tun.try_clone()?;
        let mut threads = Vec::new();
        for (direction, tun, name) in [
            (Direction::Uplink, client_tun, "netsim-uplink"),
            (Direction::Downlink, server_tun, "netsim-downlink"),
        ] {
            let shared = Arc::clone(&shared);
            let thread = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || read_loop(&shared, direction, tun))?;
            threads.push(thread);
        }
        let scheduler_shared = Arc::clone(&shared);
        let scheduler = std::thread::Builder::new()
            .name("netsim-scheduler".to_owned())
            .spawn(move || schedule_loop(&scheduler_shared, client_out, server_out, capture))?;
        threads.push(scheduler);
        Ok(Self { shared, threads })
    }

    /// Locks the engine, for statistics.
    pub(crate) fn link(&self) -> MutexGuard<'_, Link> {
        lock(&self.shared.link)
    }

    /// Stops all threads and waits for them.
    pub(crate) fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a netsim forwarding thread panicked");
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(link: &Mutex<Link>) -> MutexGuard<'_, Link> {
    // A panic in another forwarding thread leaves the engine usable for statistics.
    link.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_loop(shared: &Shared, direction: Direction, mut tun: File) {
    let mut buffer = vec![0u8; READ_BUFFER];
    let timeout = i32::try_from(STOP_CHECK.as_millis()).unwrap_or(100);
    while !shared.stop.load(Ordering::SeqCst) {
        match sys::wait_readable(&tun, timeout) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(error) => {
                tracing::error!(?direction, %error, "poll on TUN device failed; stopping reader");
                return;
            }
        }
        let length = match tun.read(&mut buffer) {
            Ok(length) => length,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::error!(?direction, %error, "read from TUN device failed; stopping reader");
                return;
            }
        };
        let packet = Packet {
            bytes: buffer[..length].to_vec(),
            flow: 0,
        };
        lock(&shared.link).push(direction, Instant::now(), packet);
        shared.wake.notify_one();
    }
}

fn schedule_loop(
    shared: &Shared,
    mut client_tun: File,
    mut server_tun: File,
    mut capture: Option<PcapWriter>,
) {
    let mut due = Vec::new();
    let mut write_errors = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        {
            let mut link = lock(&shared.link);
            let now = Instant::now();
            for direction in [Direction::Uplink, Direction::Downlink] {
                while let Some(packet) = link.pop_due(direction, now) {
                    due.push((direction, packet));
                }
            }
            if due.is_empty() {
                let wait = link
                    .next_event()
                    .map_or(STOP_CHECK, |next| next.saturating_duration_since(now))
                    .min(STOP_CHECK);
                drop(shared.wake.wait_timeout(link, wait));
                continue;
            }
        }
        let now = Instant::now();
        for (direction, packet) in due.drain(..) {
            capture_packet(&mut capture, now, &packet.bytes);
            let tun = match direction {
                Direction::Uplink => &mut server_tun,
                Direction::Downlink => &mut client_tun,
            };
            if let Err(error) = tun.write_all(&packet.bytes) {
                // NOTE: the kernel rejects packets it cannot parse; count and go on.
                write_errors += 1;
                if write_errors.is_power_of_two() {
                    tracing::warn!(?direction, %error, write_errors, "write to TUN device failed");
                }
            }
        }
    }
    if let Some(writer) = &mut capture
        && let Err(error) = writer.flush()
    {
        tracing::error!(%error, "failed to write the end of the link capture");
    }
}

/// Appends a packet to the capture; on a write error logs it and stops capturing.
fn capture_packet(capture: &mut Option<PcapWriter>, now: Instant, bytes: &[u8]) {
    let Some(writer) = capture else {
        return;
    };
    if let Err(error) = writer.write(now, bytes) {
        tracing::error!(%error, written = writer.written(), "writing the link capture failed; stopping it");
        *capture = None;
    }
}
