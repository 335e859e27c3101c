//! Storage benchmarks: the owner's send path under concurrent senders, and a baseline of
//! one durable redb commit per message.
//!
//! Both write into a caller-chosen directory and measure wall-clock time, so results
//! depend on the disk's fsync cost; compare the two in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, TableDefinition};
use tidings_schema::Rejection;
use tidings_schema::ids;
use tidings_schema::mesh::{OwnerRequest, SendRequest};

use crate::owner::{OpenError, Owner, OwnerConfig};

/// Body size of benchmark messages in bytes.
pub const BENCH_BODY_BYTES: usize = 200;

const BASELINE_TABLE: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("baseline");

/// Results of one benchmark run.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreBenchReport {
    /// Number of concurrent senders.
    pub senders: usize,
    /// Messages acknowledged after a durable commit.
    pub messages: u64,
    pub elapsed: Duration,
    pub messages_per_sec: f64,
    /// Acknowledgement latency percentiles.
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    /// Durable commits made during the run.
    pub commits: u64,
}

/// Error of a benchmark run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("failed to open the owner: {0}")]
    Open(#[from] OpenError),
    #[error("owner rejected a benchmark send: {0}")]
    Rejected(#[from] Rejection),
    #[error("redb baseline failed: {0}")]
    Redb(#[from] redb::Error),
    #[error("benchmark task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Drives `Owner::call(Send)` from `senders` concurrent tasks for `duration`, each sender
/// in its own direct conversation, with one send in flight per sender. Must run inside a
/// tokio runtime; `dir` should be empty.
pub async fn owner_send(
    dir: &Path,
    senders: usize,
    duration: Duration,
) -> Result<StoreBenchReport, BenchError> {
    let owner = Owner::open(OwnerConfig::new(dir.to_path_buf()))?;
    let start = Instant::now();
    let deadline = start + duration;

    let tasks: Vec<_> = (0..senders.max(1))
        .map(|index| tokio::spawn(send_loop(Arc::clone(&owner), index, deadline)))
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();
    let commits = owner.commit_count();

    let report = summarize(senders.max(1), latencies, elapsed, commits);
    // Stopping the writers blocks until their last batch is committed.
    tokio::task::spawn_blocking(move || owner.shutdown()).await?;
    Ok(report)
}

async fn send_loop(
    owner: Arc<Owner>,
    index: usize,
    deadline: Instant,
) -> Result<Vec<Duration>, Rejection> {
    let sender = format!("bench-sender-{index}");
    let peer = format!("bench-peer-{index}");
    let conversation_id = ids::direct_conversation_id(&sender, &peer);
    let body = "x".repeat(BENCH_BODY_BYTES);
    let mut latencies = Vec::new();

    for count in 0u64.. {
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        let request = SendRequest {
            sender: sender.clone(),
            device_id: "bench".into(),
            conversation_id,
            client_msg_id: format!("m{count}"),
            body: body.clone(),
            direct_peer: Some(peer.clone()),
            message_id: count + 1,
            hlc: count + 1,
            server_time_ms: unix_ms(),
        };
        owner.call(OwnerRequest::Send(request)).await?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// Writes one 200-byte row per durable redb commit, from one thread, for `duration`:
/// the cost of storing messages without group commit.
pub async fn redb_commit_per_message(
    dir: &Path,
    duration: Duration,
) -> Result<StoreBenchReport, BenchError> {
    let path = dir.join("baseline.redb");
    let run = move || -> Result<StoreBenchReport, BenchError> {
        let db = Database::create(&path).map_err(redb::Error::from)?;
        let body = vec![b'x'; BENCH_BODY_BYTES];
        let start = Instant::now();
        let deadline = start + duration;
        let mut latencies = Vec::new();

        for key in 0u64.. {
            let started = Instant::now();
            if started >= deadline {
                break;
            }
            let mut txn = db.begin_write().map_err(redb::Error::from)?;
            txn.set_durability(Durability::Immediate)
                .map_err(redb::Error::from)?;
            {
                let mut table = txn.open_table(BASELINE_TABLE).map_err(redb::Error::from)?;
                table
                    .insert(key, body.as_slice())
                    .map_err(redb::Error::from)?;
            }
            txn.commit().map_err(redb::Error::from)?;
            latencies.push(started.elapsed());
        }
        let commits = latencies.len() as u64;
        Ok(summarize(1, latencies, start.elapsed(), commits))
    };
    tokio::task::spawn_blocking(run).await?
}

fn summarize(
    senders: usize,
    mut latencies: Vec<Duration>,
    elapsed: Duration,
    commits: u64,
) -> StoreBenchReport {
    latencies.sort_unstable();
    let messages = latencies.len() as u64;
    StoreBenchReport {
        senders,
        messages,
        elapsed,
        messages_per_sec: messages as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        p999: percentile(&latencies, 0.999),
        max: latencies.last().copied().unwrap_or_default(),
        commits,
    }
}

/// Returns the nearest-rank percentile of sorted samples; zero when there are none.
fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 0.999), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
