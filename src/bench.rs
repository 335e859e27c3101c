//! `tidings bench`: benchmarks that compare Tidings with its ceilings in the same run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use tidings_store::bench::{self, StoreBenchReport};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Durable acknowledged sends through the storage writer (group commit) with 1, 8 and
    /// 64 concurrent senders, against one redb commit per message.
    Store {
        /// Length of each run.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Folder for the benchmark databases (a fresh temporary folder by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Concurrent sender counts to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        senders: Vec<usize>,
    },
}

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.which {
        Which::Store {
            duration,
            dir,
            senders,
        } => store(duration, dir, &senders).await,
    }
}

async fn store(duration: Duration, dir: Option<PathBuf>, senders: &[usize]) -> Result<()> {
    let temp = tempfile::tempdir().context("failed to create a temporary folder")?;
    let base = dir.unwrap_or_else(|| temp.path().to_owned());

    println!("| run | senders | acked msg/s | p50 | p99 | p99.9 | commits | msgs/commit |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let baseline_dir = base.join("baseline");
    std::fs::create_dir_all(&baseline_dir)
        .with_context(|| format!("failed to create {}", baseline_dir.display()))?;
    let baseline = bench::redb_commit_per_message(&baseline_dir, duration).await?;
    print_row("redb, one commit per message", &baseline);
    for &count in senders {
        let report =
            bench::owner_send(&base.join(format!("owner-{count}")), count, duration).await?;
        print_row("owner group commit", &report);
        println!(
            "|   ratio to one commit per message | {count} | {:.1}x | | | | | |",
            report.messages_per_sec / baseline.messages_per_sec.max(f64::MIN_POSITIVE)
        );
    }
    Ok(())
}

fn print_row(name: &str, report: &StoreBenchReport) {
    let per_commit = report.messages as f64 / report.commits.max(1) as f64;
    println!(
        "| {name} | {} | {:.0} | {:.2?} | {:.2?} | {:.2?} | {} | {per_commit:.1} |",
        report.senders,
        report.messages_per_sec,
        report.p50,
        report.p99,
        report.p999,
        report.commits
    );
}
