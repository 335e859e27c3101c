//! Loopback measurement of what presence costs the edge: 1,000 online users on real QUIC
//! connections, each watching 20 others, with production timings (heartbeats every 10 s,
//! snapshots every 30 s), measured over one 30 s window.
//!
//! Ignored by default because it takes about a minute. Run it by name, in release:
//! `cargo test --release -p tidings-edge --test presence_cost -- --ignored --nocapture`.
//! `PRESENCE_USERS` changes the number of users (a multiple of 500).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use bytes::Bytes;
use common::{TestEdge, WAIT, connect, read_frame, start_edge, write_frame};
use tidings_schema::codec;
use tidings_schema::frame::{CreateGroup, Frame, Hello};
use tidings_schema::mesh::{OwnerReply, OwnerRequest, Stamp};
use tidings_schema::presence::{Heartbeat, PresenceState, PresenceSubscribe};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const WATCHED: usize = 20;
const GROUP_SIZE: usize = 500;
const WINDOW: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_secs(10);
const MAX_CONCURRENT_LOGINS: usize = 16;
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Shared state of the simulated devices.
struct Load {
    logins: Semaphore,
    ready: AtomicU64,
    received: AtomicU64,
    stop: CancellationToken,
}

fn user(index: usize) -> String {
    format!("user-{index:05}")
}

/// Returns the CPU time (user plus system) this process has used, from `/proc`.
fn process_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // NOTE: assumes the usual USER_HZ of 100 ticks per second on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

async fn create_groups(edge: &TestEdge, users: usize) -> Result<()> {
    for (number, first) in (0..users).step_by(GROUP_SIZE).enumerate() {
        let members = (first + 1..first + GROUP_SIZE).map(user).collect();
        let request = OwnerRequest::CreateGroup {
            user: user(first),
            request: CreateGroup {
                request_id: 1,
                name: format!("load {number}"),
                members,
            },
            conversation_id: 1_000 + number as u64,
            stamp: Stamp::default(),
        };
        match edge.owner.call(request).await {
            Ok(OwnerReply::Conversation(_)) => {}
            other => bail!("group {number} not created: {other:?}"),
        }
    }
    Ok(())
}

/// Logs one device in, subscribes it to its 20 neighbours in its group, then sends
/// heartbeats and counts presence datagrams until `until`.
async fn run_device(edge: Arc<TestEdge>, index: usize, load: Arc<Load>) -> Result<()> {
    let permit = load.logins.acquire().await?;
    let connection = connect(&edge).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let hello = Frame::Hello(Hello {
        token: edge.token(&user(index)),
        device_id: "load".to_owned(),
        client_version: "test".to_owned(),
    });
    write_frame(&mut send, &hello).await?;
    let max = edge.config.limits.max_frame_bytes;
    let Frame::Welcome(_) = read_frame(&mut recv, max).await? else {
        bail!("no Welcome for {}", user(index));
    };
    let base = index / GROUP_SIZE * GROUP_SIZE;
    let users = (1..=WATCHED)
        .map(|k| user(base + (index - base + k) % GROUP_SIZE))
        .collect();
    let subscribe = Frame::PresenceSubscribe(PresenceSubscribe {
        request_id: 1,
        users,
        open_conversations: Vec::new(),
    });
    write_frame(&mut send, &subscribe).await?;
    let Frame::PresenceUpdate(_) = read_frame(&mut recv, max).await? else {
        bail!("subscription of {} rejected", user(index));
    };
    drop(permit);
    load.ready.fetch_add(1, Ordering::Relaxed);

    let heartbeat = Bytes::from(codec::encode(&Frame::Heartbeat(Heartbeat {
        state: PresenceState::Online,
    })));
    // Spread the first heartbeats over the interval, as independent devices are.
    let offset = HEARTBEAT * (index as u32 % 100) / 100;
    let mut next_beat = Instant::now() + offset;
    connection.send_datagram(heartbeat.clone())?;
    loop {
        tokio::select! {
            _ = load.stop.cancelled() => break,
            _ = tokio::time::sleep_until(next_beat) => {
                connection.send_datagram(heartbeat.clone())?;
                next_beat += HEARTBEAT;
            }
            datagram = connection.read_datagram() => {
                datagram?;
                load.received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    connection.close(0u32.into(), b"done");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load measurement; run by name in release"]
async fn presence_cost_per_thousand_users() -> Result<()> {
    let users: usize = std::env::var("PRESENCE_USERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000);
    let edge = Arc::new(start_edge(|_| {}).await?);
    create_groups(&edge, users).await?;

    let load = Arc::new(Load {
        logins: Semaphore::new(MAX_CONCURRENT_LOGINS),
        ready: AtomicU64::new(0),
        received: AtomicU64::new(0),
        stop: CancellationToken::new(),
    });
    let received = &load.received;
    let mut devices = Vec::new();
    for index in 0..users {
        let task = run_device(Arc::clone(&edge), index, Arc::clone(&load));
        devices.push(tokio::spawn(task));
    }

    // Measure one window after every device logged in and sent its first heartbeats.
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    while load.ready.load(Ordering::Relaxed) < users as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {users} devices logged in",
                load.ready.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(HEARTBEAT + Duration::from_secs(5)).await;
    let hub = &edge
        .edge
        .as_ref()
        .expect("edge is running")
        .presence()
        .counters;
    let (sent, bytes, dropped, beats) = (
        hub.frames_sent.load(Ordering::Relaxed),
        hub.bytes_sent.load(Ordering::Relaxed),
        hub.frames_dropped.load(Ordering::Relaxed),
        hub.heartbeats.load(Ordering::Relaxed),
    );
    let seen = received.load(Ordering::Relaxed);
    let cpu = process_cpu()?;
    tokio::time::sleep(WINDOW).await;
    let cpu = process_cpu()? - cpu;
    let seconds = WINDOW.as_secs_f64();
    let rate = |after: u64, before: u64| (after - before) as f64 / seconds;
    println!(
        "{users} users x {WATCHED} watchers over {seconds:.0} s: \
         {:.1} datagrams/s sent ({:.0} bytes/s), {:.1} received by clients, \
         {:.1} dropped/s, {:.1} heartbeats/s in, process CPU {:.1} % of one core \
         (edge and all clients together)",
        rate(hub.frames_sent.load(Ordering::Relaxed), sent),
        rate(hub.bytes_sent.load(Ordering::Relaxed), bytes),
        rate(received.load(Ordering::Relaxed), seen),
        rate(hub.frames_dropped.load(Ordering::Relaxed), dropped),
        rate(hub.heartbeats.load(Ordering::Relaxed), beats),
        cpu.as_secs_f64() / seconds * 100.0,
    );

    load.stop.cancel();
    for device in devices {
        tokio::time::timeout(WAIT, device).await???;
    }
    Ok(())
}
