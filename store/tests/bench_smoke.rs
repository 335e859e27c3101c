//! Runs each storage benchmark briefly, so the code behind `tidings bench store` works.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_send_bench_runs() {
    for senders in [1, 8] {
        let dir = tempfile::tempdir().unwrap();
        let report =
            tidings_store::bench::owner_send(dir.path(), senders, Duration::from_millis(300))
                .await
                .unwrap();
        assert_eq!(report.senders, senders);
        assert!(report.messages > 0, "{report:?}");
        assert!(report.messages_per_sec > 0.0);
        assert!(report.p50 <= report.p99 && report.p99 <= report.max);
        assert!(report.commits >= 1);
    }
}

#[tokio::test]
async fn redb_baseline_bench_runs() {
    let dir = tempfile::tempdir().unwrap();
    let report =
        tidings_store::bench::redb_commit_per_message(dir.path(), Duration::from_millis(300))
            .await
            .unwrap();
    assert!(report.messages > 0, "{report:?}");
    assert_eq!(report.commits, report.messages);
}
