//! Link mode through real namespaces, TUN devices and kernel TCP/UDP.
//!
//! These tests need root. Without root they fail, unless TIDINGS_SKIP_ROOT_TESTS=1 is set,
//! in which case they print that they were skipped. Each test builds its own link, and link
//! names carry the process id and a counter, so parallel tests never share a namespace.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tidings_netsim::config::Scenario;
use tidings_netsim::engine::{Direction, LinkSpec};
use tidings_netsim::link::{CLIENT_ADDRESS, NetnsLink, SERVER_ADDRESS};
use tidings_netsim::{netns, scenarios};

/// Returns false and prints a notice when root tests are skipped; panics when root is missing.
/// Serialises the tests that measure rate, RTT or loss: two forwarders pushing 10 Mbit/s
/// each at once starve each other on a 2-core machine and skew every figure.
static MEASURING: Mutex<()> = Mutex::new(());

fn measure_alone() -> MutexGuard<'static, ()> {
    MEASURING.lock().unwrap_or_else(PoisonError::into_inner)
}

fn root_available(test: &str) -> bool {
    if netns::require_root().is_ok() {
        return true;
    }
    if std::env::var("TIDINGS_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root, and TIDINGS_SKIP_ROOT_TESTS=1 is set");
        return false;
    }
    panic!(
        "{test} needs root for network namespaces; run as root or set TIDINGS_SKIP_ROOT_TESTS=1"
    );
}

fn start(name: &str, seed: u64) -> NetnsLink {
    let (scenario, _) = scenarios::load(name).unwrap();
    let spec = LinkSpec::resolve(&scenario, None, None).unwrap();
    NetnsLink::start(&spec, seed).unwrap()
}

fn udp_in(link: &NetnsLink, server_side: bool, address: Ipv4Addr) -> UdpSocket {
    let bind = move || UdpSocket::bind((address, 0));
    let socket = if server_side {
        link.run_in_server(bind)
    } else {
        link.run_in_client(bind)
    };
    let socket = socket.unwrap().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
}

/// Receives one datagram, retrying when a signal interrupts the call.
fn recv(socket: &UdpSocket, buffer: &mut [u8]) -> (usize, SocketAddr) {
    loop {
        match socket.recv_from(buffer) {
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            result => return result.unwrap(),
        }
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn assert_within(name: &str, observed: f64, expected: f64, tolerance: f64) {
    let error = (observed - expected).abs() / expected;
    eprintln!("{name}: observed {observed:.4}, expected {expected:.4}");
    assert!(
        error <= tolerance,
        "{name}: observed {observed:.4}, expected {expected:.4} ± {tolerance}"
    );
}

/// Echoes datagrams until one reads "stop" or nothing arrives for 2 s.
fn spawn_udp_echo(socket: UdpSocket) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        loop {
            let (length, from) = match socket.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if &buffer[..length] == b"stop" {
                return;
            }
            socket.send_to(&buffer[..length], from).unwrap();
        }
    })
}

/// Sends `count` numbered datagrams of `size` bytes, at most `per_second`. A sender that
/// falls behind does not catch up with a burst, which could overflow the link's queue.
/// Sleeping here paces the load; it does not wait for anything.
fn send_paced(socket: &UdpSocket, to: SocketAddr, count: u32, size: usize, per_second: f64) {
    let gap = Duration::from_secs_f64(1.0 / per_second);
    let mut datagram = vec![0u8; size];
    for sequence in 0..count {
        let sent = Instant::now();
        datagram[..4].copy_from_slice(&sequence.to_be_bytes());
        socket.send_to(&datagram, to).unwrap();
        if let Some(wait) = (sent + gap).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Receives numbered datagrams until 1 s passes without one; returns the sequence numbers
/// with their arrival times and sizes.
fn receive_numbered(socket: &UdpSocket) -> Vec<(u32, Instant, usize)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 2048];
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match socket.recv_from(&mut buffer) {
            Ok((length, _)) => {
                let sequence = u32::from_be_bytes(buffer[..4].try_into().unwrap());
                received.push((sequence, Instant::now(), length));
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !received.is_empty() {
                    break;
                }
            }
            Err(error) => panic!("recv failed: {error}"),
        }
    }
    received
}

#[test]
fn baseline_udp_rtt_and_rate() {
    let _alone = measure_alone();
    if !root_available("baseline_udp_rtt_and_rate") {
        return;
    }
    let link = start("baseline-30ms", 1);
    let server = udp_in(&link, true, SERVER_ADDRESS);
    let server_address = server.local_addr().unwrap();
    let client = udp_in(&link, false, CLIENT_ADDRESS);
    let client_address = client.local_addr().unwrap();

    // Round trip: 15 ms each way plus two 100-byte serializations at 10 Mbit/s.
    let echo = spawn_udp_echo(server.try_clone().unwrap());
    let mut rtts = Vec::new();
    let mut buffer = [0u8; 2048];
    for _ in 0..20 {
        let sent = Instant::now();
        client.send_to(&[1u8; 100], server_address).unwrap();
        recv(&client, &mut buffer);
        rtts.push(sent.elapsed());
    }
    client.send_to(b"stop", server_address).unwrap();
    echo.join().unwrap();
    let rtt = median(rtts).as_secs_f64();
    assert_within("UDP RTT (s)", rtt, 0.030, 0.10);

    // Rate, downlink: the server offers 15 Mbit/s for 2 s; the client sees the link rate.
    let sender = std::thread::spawn(move || {
        send_paced(&server, client_address, 2600, 1400, 1340.0);
    });
    let received = receive_numbered(&client);
    sender.join().unwrap();
    let span = (received.last().unwrap().1 - received[0].1).as_secs_f64();
    let wire_bits: usize = received[1..]
        .iter()
        .map(|(_, _, size)| (size + 28) * 8)
        .sum();
    assert_within(
        "UDP downlink rate (bit/s)",
        wire_bits as f64 / span,
        10e6,
        0.10,
    );
    assert!(
        link.stats(Direction::Downlink).dropped_queue > 0,
        "the queue never overflowed"
    );
}

#[test]
fn baseline_tcp_rtt_and_rate() {
    let _alone = measure_alone();
    if !root_available("baseline_tcp_rtt_and_rate") {
        return;
    }
    let link = start("baseline-30ms", 2);
    let listener = link
        .run_in_server(|| TcpListener::bind((SERVER_ADDRESS, 0)))
        .unwrap()
        .unwrap();
    let server_address = listener.local_addr().unwrap();
    let stream =
        link.run_in_client(|| TcpStream::connect_timeout(&server_address, Duration::from_secs(5)));
    let mut client = stream.unwrap().unwrap();
    let (mut server, _) = listener.accept().unwrap();
    for stream in [&client, &server] {
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }

    // Round trip by ping-pong of 64-byte messages.
    let mut rtts = Vec::new();
    let mut message = [0u8; 64];
    for _ in 0..20 {
        let sent = Instant::now();
        client.write_all(&message).unwrap();
        server.read_exact(&mut message).unwrap();
        server.write_all(&message).unwrap();
        client.read_exact(&mut message).unwrap();
        rtts.push(sent.elapsed());
    }
    assert_within("TCP RTT (s)", median(rtts).as_secs_f64(), 0.030, 0.10);

    // Rate, uplink: goodput between the 1st and the 4th megabyte, after slow start. Each
    // 1500-byte packet carries 1448 bytes of payload (TCP timestamps are on by default).
    const TOTAL: usize = 4_000_000;
    let (done_sender, done) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65_536];
        let (mut received, mut first_mark) = (0usize, None);
        while received < TOTAL {
            let length = match server.read(&mut buffer) {
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                result => result.unwrap(),
            };
            assert!(length > 0, "connection closed after {received} bytes");
            received += length;
            if received >= 1_000_000 && first_mark.is_none() {
                first_mark = Some((Instant::now(), received));
            }
        }
        let (mark_time, mark_bytes) = first_mark.unwrap();
        done_sender
            .send(((received - mark_bytes) as f64, mark_time.elapsed()))
            .unwrap();
    });
    let chunk = vec![7u8; 65_536];
    let mut sent = 0;
    while sent < TOTAL {
        let length = chunk.len().min(TOTAL - sent);
        client.write_all(&chunk[..length]).unwrap();
        sent += length;
    }
    let (bytes, elapsed) = done.recv_timeout(Duration::from_secs(30)).unwrap();
    reader.join().unwrap();
    let goodput = bytes * 8.0 / elapsed.as_secs_f64();
    assert_within(
        "TCP uplink goodput (bit/s)",
        goodput,
        10e6 * 1448.0 / 1500.0,
        0.10,
    );
}

#[test]
fn lossy_udp_loss_within_tolerance() {
    let _alone = measure_alone();
    if !root_available("lossy_udp_loss_within_tolerance") {
        return;
    }
    let link = start("lossy-2pct-burst3", 3);
    let server = udp_in(&link, true, SERVER_ADDRESS);
    let client = udp_in(&link, false, CLIENT_ADDRESS);
    let (server_address, client_address) =
        (server.local_addr().unwrap(), client.local_addr().unwrap());

    // Both directions at once: 4000 datagrams of 200 bytes at up to 1000 per second each way.
    const COUNT: u32 = 4000;
    let server_clone = server.try_clone().unwrap();
    let client_clone = client.try_clone().unwrap();
    let up_sender = std::thread::spawn(move || {
        send_paced(&client_clone, server_address, COUNT, 200, 1000.0);
    });
    let down_sender = std::thread::spawn(move || {
        send_paced(&server_clone, client_address, COUNT, 200, 1000.0);
    });
    let up_receiver = std::thread::spawn(move || receive_numbered(&server));
    let down_received = receive_numbered(&client);
    let up_received = up_receiver.join().unwrap();
    up_sender.join().unwrap();
    down_sender.join().unwrap();

    for (direction, received) in [
        (Direction::Uplink, up_received),
        (Direction::Downlink, down_received),
    ] {
        let stats = link.stats(direction);
        assert_eq!(
            stats.dropped_queue, 0,
            "{direction:?}: queue drops would skew the loss"
        );
        let lost = COUNT as usize - received.len();
        let loss = lost as f64 / f64::from(COUNT);
        // Binomial standard deviation for 4000 packets at 2 % is 0.22 %; allow 3 of them.
        assert!(
            (loss - 0.02).abs() < 0.007,
            "{direction:?}: observed loss {loss}"
        );
        assert_eq!(
            lost as u64, stats.dropped_loss,
            "{direction:?}: loss not from the model: {stats:?}"
        );

        let mut sequences: Vec<u32> = received.iter().map(|(sequence, _, _)| *sequence).collect();
        sequences.sort_unstable();
        let longest_gap = sequences.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap();
        assert!(
            longest_gap <= 3,
            "{direction:?}: {longest_gap} losses in a row"
        );
    }
}

/// Sends from the client for 1.6 s and returns each source the server saw, in order. The
/// first rebinding happens 1 s after the link starts.
fn sources_across_rebind(client: &UdpSocket, server: &UdpSocket) -> Vec<SocketAddr> {
    let server_address = server.local_addr().unwrap();
    let mut sources = Vec::new();
    let mut buffer = [0u8; 256];
    let begin = Instant::now();
    while begin.elapsed() < Duration::from_millis(1600) {
        client.send_to(b"hello", server_address).unwrap();
        let (_, from) = recv(server, &mut buffer);
        if sources.last() != Some(&from) {
            sources.push(from);
        }
    }
    sources
}

/// Checks that a reply to the old mapping is dropped while one sent after it to the new
/// mapping arrives. The link is FIFO, so the old one would have arrived first.
fn assert_only_new_mapping_works(
    link: &NetnsLink,
    client: &UdpSocket,
    server: &UdpSocket,
    old: SocketAddr,
    new: SocketAddr,
) {
    let dropped_before = link.stats(Direction::Downlink).dropped_nat;
    server.send_to(b"to-old", old).unwrap();
    server.send_to(b"to-new", new).unwrap();
    let mut buffer = [0u8; 64];
    let (length, from) = recv(client, &mut buffer);
    assert_eq!(&buffer[..length], b"to-new");
    assert_eq!(from, server.local_addr().unwrap());
    assert_eq!(
        link.stats(Direction::Downlink).dropped_nat,
        dropped_before + 1
    );
}

#[test]
fn nat_rebind_port_changes_source_port() {
    if !root_available("nat_rebind_port_changes_source_port") {
        return;
    }
    let link = start("nat-rebind-port", 4);
    let server = udp_in(&link, true, SERVER_ADDRESS);
    let client = udp_in(&link, false, CLIENT_ADDRESS);
    let client_address = client.local_addr().unwrap();

    let sources = sources_across_rebind(&client, &server);
    assert_eq!(sources.len(), 2, "sources seen by the server: {sources:?}");
    assert_eq!(
        sources[0], client_address,
        "the NAT is transparent before the first rebinding"
    );
    assert_eq!(sources[1].ip(), client_address.ip());
    assert_ne!(sources[1].port(), client_address.port());
    assert_only_new_mapping_works(&link, &client, &server, sources[0], sources[1]);
}

#[test]
fn nat_rebind_addr_changes_source_address() {
    if !root_available("nat_rebind_addr_changes_source_address") {
        return;
    }
    let link = start("nat-rebind-addr", 5);
    let server = udp_in(&link, true, SERVER_ADDRESS);
    let client = udp_in(&link, false, CLIENT_ADDRESS);
    let client_address = client.local_addr().unwrap();

    let sources = sources_across_rebind(&client, &server);
    assert_eq!(sources.len(), 2, "sources seen by the server: {sources:?}");
    assert_eq!(sources[0], client_address);
    assert_ne!(sources[1].ip(), client_address.ip());
    assert_eq!(sources[1].port(), client_address.port());
    assert_only_new_mapping_works(&link, &client, &server, sources[0], sources[1]);
}

fn root_state() -> (String, String) {
    let run = |args: &[&str]| {
        let output = Command::new("ip").args(args).output().unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    (
        run(&["-o", "link", "show"]),
        run(&["route", "show", "table", "all"]),
    )
}

#[test]
fn link_leaves_nothing_behind() {
    if !root_available("link_leaves_nothing_behind") {
        return;
    }
    // A namespace named like one of ours, from a process that no longer exists, stands for
    // what a crashed run leaves behind.
    let dead_pid = (100_000..4_000_000u32)
        .rev()
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .unwrap();
    let stale = format!("tn-cli-{dead_pid}-0");
    netns::ip(&["netns", "add", &stale]).unwrap();

    let before = root_state();
    let link = start("baseline-30ms", 6);
    let names = link.addresses().clone();
    let owned = netns::list_owned().unwrap();
    assert!(
        !owned.contains(&stale),
        "the stale namespace survived a new start"
    );
    assert!(owned.contains(&names.client_namespace));
    assert!(owned.contains(&names.server_namespace));

    let devices = netns::ip(&["-n", &names.client_namespace, "-o", "link", "show"]).unwrap();
    assert!(devices.contains("tnlink0"));
    let ipv6 = netns::ip(&["-n", &names.client_namespace, "-6", "addr", "show"]).unwrap();
    assert!(ipv6.trim().is_empty(), "IPv6 addresses on the link: {ipv6}");

    drop(link);
    let owned = netns::list_owned().unwrap();
    assert!(!owned.contains(&names.client_namespace));
    assert!(!owned.contains(&names.server_namespace));
    assert_eq!(
        root_state(),
        before,
        "devices or routes changed in the root namespace"
    );
}

#[test]
fn scenario_from_user_file_runs() {
    if !root_available("scenario_from_user_file_runs") {
        return;
    }
    // A user-written file: 50 ms each way, nothing else.
    let text = r#"
        name = "custom"
        summary = "s"
        probes = "p"
        source = "test"
        [uplink.delay]
        base = "50ms"
        [downlink.delay]
        base = "50ms"
    "#;
    let scenario = Scenario::from_toml(text).unwrap();
    let link = NetnsLink::start(&LinkSpec::resolve(&scenario, None, None).unwrap(), 7).unwrap();
    let server = udp_in(&link, true, SERVER_ADDRESS);
    let client = udp_in(&link, false, CLIENT_ADDRESS);
    let echo = spawn_udp_echo(server.try_clone().unwrap());
    let sent = Instant::now();
    client.send_to(b"x", server.local_addr().unwrap()).unwrap();
    recv(&client, &mut [0u8; 16]);
    assert_within("RTT (s)", sent.elapsed().as_secs_f64(), 0.100, 0.10);
    client
        .send_to(b"stop", server.local_addr().unwrap())
        .unwrap();
    echo.join().unwrap();
}
