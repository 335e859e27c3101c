//! Whole-pipeline tests on simulated time: rate, queues, traces, schedules and replay.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{Aqm, LossConfig, ProbabilityConfig, RateConfig};

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

fn packet(index: u64, size: usize) -> Packet {
    let mut bytes = vec![0u8; size.max(8)];
    bytes[..8].copy_from_slice(&index.to_be_bytes());
    Packet { bytes, flow: 0 }
}

fn index_of(packet: &Packet) -> u64 {
    u64::from_be_bytes(packet.bytes[..8].try_into().unwrap())
}

/// Delivers everything due up to `until`, at the exact times the engine requests.
fn drain_until(engine: &mut DirectionEngine, until: Instant, out: &mut Vec<(Instant, Packet)>) {
    for _ in 0..10_000_000 {
        let Some(next) = engine.next_event() else {
            return;
        };
        if next > until {
            return;
        }
        while let Some(packet) = engine.pop_due(next) {
            out.push((next, packet));
        }
    }
    panic!("the engine kept asking for wake-ups without progress");
}

/// Feeds arrivals in time order and returns every delivery with its time.
fn simulate(
    engine: &mut DirectionEngine,
    arrivals: impl IntoIterator<Item = (Instant, Packet)>,
    end: Instant,
) -> Vec<(Instant, Packet)> {
    let mut out = Vec::new();
    for (at, packet) in arrivals {
        drain_until(engine, at, &mut out);
        engine.push(at, packet);
    }
    drain_until(engine, end, &mut out);
    out
}

fn fixed(mbit: f64, queue_packets: Option<u32>, aqm: Aqm) -> BottleneckSpec {
    BottleneckSpec {
        service: Service::Fixed {
            bits_per_second: mbit * 1e6,
        },
        queue_packets,
        queue_bytes: None,
        aqm,
        codel_target: ms(5),
        codel_interval: ms(100),
    }
}

fn trace_bottleneck(text: &str) -> BottleneckSpec {
    BottleneckSpec {
        service: Service::Trace {
            trace: Arc::new(Trace::parse(text).unwrap()),
            repeat: true,
        },
        queue_packets: Some(100_000),
        queue_bytes: None,
        aqm: Aqm::DropTail,
        codel_target: ms(5),
        codel_interval: ms(100),
    }
}

fn engine(spec: DirectionSpec, start: Instant) -> DirectionEngine {
    DirectionEngine::new(&spec, PacketFormat::Ipv4, 1, Direction::Uplink, start)
}

/// Arrivals of `size`-byte packets at a constant bit rate for `duration`.
fn constant_load(
    start: Instant,
    mbit: f64,
    size: usize,
    duration: Duration,
) -> Vec<(Instant, Packet)> {
    let gap = Duration::from_secs_f64(size as f64 * 8.0 / (mbit * 1e6));
    let count = (duration.as_secs_f64() / gap.as_secs_f64()) as u64;
    (0..count)
        .map(|i| (start + gap * u32::try_from(i).unwrap(), packet(i, size)))
        .collect()
}

#[test]
fn fixed_rate_accuracy() {
    let start = Instant::now();
    let spec = DirectionSpec {
        bottleneck: Some(fixed(10.0, Some(100_000), Aqm::DropTail)),
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);
    let arrivals = constant_load(start, 20.0, 1500, ms(2000));
    let out = simulate(&mut engine, arrivals, start + ms(10_000));

    // A 1500-byte packet takes exactly 1.2 ms at 10 Mbit/s.
    for pair in out.windows(2).take(1000) {
        assert_eq!(pair[1].0 - pair[0].0, Duration::from_micros(1200));
    }
    let span = (out.last().unwrap().0 - out[0].0).as_secs_f64();
    let bits = ((out.len() - 1) * 1500 * 8) as f64;
    let rate = bits / span;
    assert!((rate - 10e6).abs() / 10e6 < 0.001, "rate {rate}");
}

#[test]
fn drop_tail_queue_limit_in_packets() {
    let start = Instant::now();
    let spec = DirectionSpec {
        bottleneck: Some(fixed(10.0, Some(25), Aqm::DropTail)),
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);
    let burst = (0..100).map(|i| (start, packet(i, 1500)));
    let out = simulate(&mut engine, burst, start + ms(1000));

    // One packet goes straight onto the wire, 25 wait, the other 74 are dropped.
    assert_eq!(out.len(), 26);
    assert_eq!(engine.stats().dropped_queue, 74);
    let delivered: Vec<u64> = out.iter().map(|(_, p)| index_of(p)).collect();
    assert_eq!(delivered, (0..26).collect::<Vec<_>>());
}

#[test]
fn drop_tail_queue_limit_in_bytes() {
    let start = Instant::now();
    let mut bottleneck = fixed(10.0, None, Aqm::DropTail);
    bottleneck.queue_bytes = Some(15_000);
    let spec = DirectionSpec {
        bottleneck: Some(bottleneck),
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);
    let burst = (0..50).map(|i| (start, packet(i, 1000)));
    let out = simulate(&mut engine, burst, start + ms(1000));
    assert_eq!(out.len(), 16);
    assert_eq!(engine.stats().dropped_queue, 34);
}

/// Median and maximum sojourn of packets delivered in the last 10 s of a 30 s overload at
/// 120 %.
fn late_sojourns(aqm: Aqm) -> (Duration, Duration, DirectionStats) {
    let start = Instant::now();
    let spec = DirectionSpec {
        bottleneck: Some(fixed(10.0, Some(1000), aqm)),
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);
    let arrivals = constant_load(start, 12.0, 1500, ms(30_000));
    let sent_at: Vec<Instant> = arrivals.iter().map(|(at, _)| *at).collect();
    let out = simulate(&mut engine, arrivals, start + ms(40_000));
    let mut sojourns: Vec<Duration> = out
        .iter()
        .filter(|(at, _)| *at > start + ms(20_000) && *at < start + ms(30_000))
        .map(|(at, p)| *at - sent_at[usize::try_from(index_of(p)).unwrap()])
        .collect();
    sojourns.sort();
    (
        sojourns[sojourns.len() / 2],
        *sojourns.last().unwrap(),
        engine.stats(),
    )
}

#[test]
fn codel_bounds_queue_delay() {
    let (tail_median, _, tail_stats) = late_sojourns(Aqm::DropTail);
    let (codel_median, codel_max, codel_stats) = late_sojourns(Aqm::Codel);

    // Drop-tail fills its 1000 packets: about 1.2 s of standing queue.
    assert!(
        tail_median > ms(1100),
        "drop-tail median sojourn {tail_median:?}"
    );
    assert!(tail_stats.dropped_queue > 0);
    assert_eq!(tail_stats.dropped_codel, 0);

    // Against this unresponsive load CoDel cycles: it ramps its drop rate up until the
    // queue drains, leaves the dropping state, and starts again when the sojourn has stayed
    // above target for an interval. The queue never comes near its 1000-packet limit.
    assert!(codel_max < ms(150), "CoDel max sojourn {codel_max:?}");
    assert!(
        codel_median < ms(130),
        "CoDel median sojourn {codel_median:?}"
    );
    assert!(codel_stats.dropped_codel > 0);
    assert_eq!(codel_stats.dropped_queue, 0);
}

#[test]
fn trace_delivers_at_opportunities() {
    let start = Instant::now();
    let spec = DirectionSpec {
        bottleneck: Some(trace_bottleneck("1\n3\n3\n6\n")),
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);
    let burst = (0..12).map(|i| (start, packet(i, 1500)));
    let out = simulate(&mut engine, burst, start + ms(100));
    let times: Vec<u128> = out
        .iter()
        .map(|(at, _)| (*at - start).as_millis())
        .collect();
    assert_eq!(times, vec![1, 3, 3, 6, 7, 9, 9, 12, 13, 15, 15, 18]);
}

#[test]
fn trace_packs_small_and_splits_large_packets() {
    let start = Instant::now();
    let spec = DirectionSpec {
        bottleneck: Some(trace_bottleneck("1\n")),
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);

    // 750-byte packets: two per opportunity.
    let burst = (0..4).map(|i| (start, packet(i, 750)));
    let out = simulate(&mut engine, burst, start + ms(10));
    let times: Vec<u128> = out
        .iter()
        .map(|(at, _)| (*at - start).as_millis())
        .collect();
    assert_eq!(times, vec![1, 1, 2, 2]);

    // 1000-byte packets: the second one spans two opportunities, as in mm-link.
    let later = start + ms(20);
    let burst = (0..3).map(|i| (later, packet(10 + i, 1000)));
    let out = simulate(&mut engine, burst, later + ms(10));
    let times: Vec<u128> = out
        .iter()
        .map(|(at, _)| (*at - start).as_millis())
        .collect();
    assert_eq!(times, vec![21, 22, 22]);
}

#[test]
fn trace_idle_opportunities_are_lost() {
    let start = Instant::now();
    let spec = DirectionSpec {
        bottleneck: Some(trace_bottleneck("1\n")),
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);
    let at = start + Duration::from_micros(100_500);
    let burst = (0..10).map(|i| (at, packet(i, 1500)));
    let out = simulate(&mut engine, burst, start + ms(200));
    let times: Vec<u128> = out.iter().map(|(t, _)| (*t - start).as_millis()).collect();
    assert_eq!(times, (101..=110).collect::<Vec<_>>());
}

fn shared_trace(name: &str) -> PathBuf {
    // The recorded traces stay outside the repository; TIDINGS_TRACE_DIR points elsewhere.
    let dir = std::env::var_os("TIDINGS_TRACE_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces"),
        PathBuf::from,
    );
    let path = dir.join(name);
    assert!(
        path.exists(),
        "trace {} not found; set TIDINGS_TRACE_DIR",
        path.display()
    );
    path
}

#[test]
fn recorded_trace_saturated_throughput() {
    let path = shared_trace("Verizon-LTE-short.down");
    let text = std::fs::read_to_string(&path).unwrap();
    let trace = Trace::load(&path).unwrap();
    let opportunities_in_10s = text
        .lines()
        .filter(|l| l.trim().parse::<u64>().is_ok_and(|t| t > 0 && t <= 10_000))
        .count();

    let start = Instant::now();
    let mut bottleneck = trace_bottleneck("1\n");
    bottleneck.service = Service::Trace {
        trace: Arc::new(trace),
        repeat: true,
    };
    let spec = DirectionSpec {
        bottleneck: Some(bottleneck),
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);

    // Keep the queue full from time zero so that no opportunity after it is wasted. The
    // opportunities at time zero meet a queue that is still being filled, so they are left
    // out of the count.
    let burst = (0..60_000).map(|i| (start, packet(i, 1500)));
    let out = simulate(&mut engine, burst, start + ms(10_000));
    let after_zero = out.iter().filter(|(at, _)| *at > start).count();
    assert_eq!(after_zero, opportunities_in_10s);
}

#[test]
fn duplication_rate() {
    let start = Instant::now();
    let spec = DirectionSpec {
        duplicate: 0.01,
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);
    let arrivals = (0..100_000).map(|i| (start + Duration::from_micros(i * 10), packet(i, 100)));
    let out = simulate(&mut engine, arrivals, start + ms(5000));
    let extra = out.len() - 100_000;
    assert!(
        (extra as f64 / 100_000.0 - 0.01).abs() < 0.001,
        "duplicates {extra}"
    );
    assert_eq!(engine.stats().duplicated, extra as u64);
}

#[test]
fn corruption_rate_and_validity() {
    let start = Instant::now();
    let spec = DirectionSpec {
        corrupt: 0.02,
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);
    let source = std::net::Ipv4Addr::new(10, 0, 0, 1);
    let destination = std::net::Ipv4Addr::new(10, 0, 0, 2);
    let payload = [0xabu8; 200];
    let original = crate::ipv4::tests::udp_packet(source, 1000, destination, 2000, &payload);
    let arrivals = (0..50_000u64).map(|i| {
        (
            start + Duration::from_micros(i * 10),
            Packet {
                bytes: original.clone(),
                flow: i,
            },
        )
    });
    let out = simulate(&mut engine, arrivals, start + ms(5000));
    let changed = out.iter().filter(|(_, p)| p.bytes != original).count();
    assert!(
        (changed as f64 / 50_000.0 - 0.02).abs() < 0.002,
        "corrupted {changed}"
    );
    for (_, p) in &out {
        let layout = crate::ipv4::transport_layout(&p.bytes).unwrap();
        assert!(crate::ipv4::checksums_valid(&p.bytes, &layout));
    }
}

#[test]
fn blackhole_drops_inside_windows_only() {
    let start = Instant::now();
    let blackhole = BlackholeConfig {
        pass_for: ms(5000),
        drop_for: ms(2000),
        repeat: true,
    };
    let spec = DirectionSpec {
        blackhole: Some(blackhole),
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);
    let arrivals = (0..1400u64).map(|i| (start + ms(i * 10), packet(i, 100)));
    let out = simulate(&mut engine, arrivals, start + ms(20_000));
    let delivered: Vec<u64> = out.iter().map(|(_, p)| index_of(p)).collect();
    let expected: Vec<u64> = (0..1400)
        .filter(|i| !(500..700).contains(i) && !(1200..1400).contains(i))
        .collect();
    assert_eq!(delivered, expected);
}

fn replay_spec() -> LinkSpec {
    let direction = DirectionConfig {
        loss: Some(LossConfig::Independent {
            rate: 0.05,
            max_consecutive: Some(2),
        }),
        delay: Some(DelayConfig {
            base: ms(20),
            jitter: ms(5),
            distribution: crate::config::JitterDistribution::Normal,
            reorder: true,
            pareto_shape: 3.0,
        }),
        duplicate: Some(ProbabilityConfig { rate: 0.02 }),
        corrupt: Some(ProbabilityConfig { rate: 0.02 }),
        rate: Some(RateConfig {
            mbit: Some(5.0),
            trace: None,
            repeat: true,
            queue_packets: Some(30),
            queue_bytes: None,
            aqm: Aqm::DropTail,
            codel_target: ms(5),
            codel_interval: ms(100),
        }),
        blackhole: None,
    };
    LinkSpec {
        uplink: DirectionSpec::resolve(&direction, "uplink", None).unwrap(),
        downlink: DirectionSpec::default(),
        nat: None,
    }
}

fn replay(seed: u64) -> Vec<(Duration, Packet)> {
    let start = Instant::now();
    let mut link = Link::new(
        &replay_spec(),
        PacketFormat::Datagram,
        seed,
        start,
        Vec::new(),
    );
    let mut out = Vec::new();
    for i in 0..5000u64 {
        let at = start + Duration::from_micros(i * 2500);
        while let Some(next) = link.next_event().filter(|next| *next <= at) {
            while let Some(p) = link.pop_due(Direction::Uplink, next) {
                out.push((next - start, p));
            }
        }
        link.push(Direction::Uplink, at, packet(i, 1200));
    }
    out
}

#[test]
fn same_seed_replays_packet_by_packet() {
    let first = replay(42);
    let second = replay(42);
    assert!(first.len() > 4000);
    assert_eq!(first, second);
    assert_ne!(first, replay(43));
}

#[test]
fn delay_then_rate_timing() {
    let start = Instant::now();
    let spec = DirectionSpec {
        delay: Some(DelayConfig {
            base: ms(15),
            jitter: Duration::ZERO,
            distribution: crate::config::JitterDistribution::Uniform,
            reorder: false,
            pareto_shape: 3.0,
        }),
        bottleneck: Some(fixed(10.0, Some(25), Aqm::DropTail)),
        ..DirectionSpec::default()
    };
    let mut engine = engine(spec, start);
    let out = simulate(&mut engine, [(start, packet(0, 1500))], start + ms(100));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0 - start, Duration::from_micros(16_200));
}
