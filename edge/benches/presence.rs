//! Cost of the presence logic for 1,000 online users with 20 watchers each.
//!
//! Each user has one device that sends a heartbeat every 10 s and watches the next 20
//! users (by index, wrapping around). The simulation runs on explicit time with the
//! edge's 100 ms tick, and every notice is encoded into datagrams as the edge sends them.
//! Two loads: steady (nobody changes state) and churn (each user switches between online
//! and away once a minute).
//!
//! Run: `cargo bench -p tidings-edge --bench presence`. Besides criterion's timings it
//! prints the datagrams and bytes per second of simulated time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tidings_edge::presence::{PresenceConfig, PresenceTracker};
use tidings_schema::presence::{PresenceState, encode_datagrams};

const USERS: usize = 1_000;
const WATCHED: usize = 20;
const TICK: Duration = Duration::from_millis(100);
const HEARTBEAT: Duration = Duration::from_secs(10);

fn user(index: usize) -> String {
    format!("user-{index:05}")
}

/// Builds a tracker with every user online and subscribed to their 20 neighbours, and
/// returns it with the time at which the setup ended.
fn setup() -> (PresenceTracker, Instant) {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let start = Instant::now();
    for index in 0..USERS {
        tracker.heartbeat(&user(index), index as u64, PresenceState::Online, start, 1);
    }
    for index in 0..USERS {
        let watched: Vec<String> = (1..=WATCHED).map(|k| user((index + k) % USERS)).collect();
        tracker.subscribe(index as u64, &watched, start);
    }
    (tracker, start)
}

#[derive(Default, Debug)]
struct Traffic {
    datagrams: u64,
    bytes: u64,
}

/// Runs `duration` of simulated time from `from` and returns the datagrams the edge
/// would send. With `churn`, each user toggles online and away once a minute.
fn simulate(
    tracker: &mut PresenceTracker,
    from: Instant,
    duration: Duration,
    churn: bool,
) -> Traffic {
    let mut traffic = Traffic::default();
    let ticks = (duration.as_millis() / TICK.as_millis()) as u64;
    let per_tick = USERS as u64 * TICK.as_millis() as u64 / HEARTBEAT.as_millis() as u64;
    for step in 1..=ticks {
        let now = from + TICK * step as u32;
        // Heartbeats are spread evenly over the interval, as independent devices are.
        for slot in 0..per_tick {
            let index = ((step * per_tick + slot) % USERS as u64) as usize;
            let minute = (now - from).as_secs() / 60 + index as u64;
            let state = if churn && minute % 2 == 1 {
                PresenceState::Away
            } else {
                PresenceState::Online
            };
            let output = tracker.heartbeat(&user(index), index as u64, state, now, 1);
            count(&mut traffic, output);
        }
        let output = tracker.tick(now);
        count(&mut traffic, output);
    }
    traffic
}

fn count(traffic: &mut Traffic, output: tidings_edge::presence::Output) {
    for notice in output.notices {
        for datagram in encode_datagrams(notice.entries, notice.snapshot) {
            traffic.datagrams += 1;
            traffic.bytes += datagram.len() as u64;
            black_box(datagram);
        }
    }
}

/// Prints the traffic and CPU time of 5 simulated minutes, once per load.
fn report() {
    for churn in [false, true] {
        let (mut tracker, start) = setup();
        let simulated = Duration::from_secs(300);
        let began = Instant::now();
        let traffic = simulate(&mut tracker, start, simulated, churn);
        let cpu = began.elapsed();
        let seconds = simulated.as_secs_f64();
        println!(
            "presence {}: {:.1} datagrams/s, {:.0} bytes/s, {:.2} ms CPU per simulated s \
             ({:.3} % of one core), for {USERS} users x {WATCHED} watchers",
            if churn { "churn" } else { "steady" },
            traffic.datagrams as f64 / seconds,
            traffic.bytes as f64 / seconds,
            cpu.as_secs_f64() * 1000.0 / seconds,
            cpu.as_secs_f64() / seconds * 100.0,
        );
    }
}

fn bench(criterion: &mut Criterion) {
    report();
    for churn in [false, true] {
        let name = if churn { "10s_churn" } else { "10s_steady" };
        criterion.bench_function(name, |bencher| {
            let (mut tracker, start) = setup();
            let mut from = start;
            bencher.iter(|| {
                let traffic = simulate(&mut tracker, from, Duration::from_secs(10), churn);
                from += Duration::from_secs(10);
                black_box(traffic)
            });
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
