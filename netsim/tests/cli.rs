//! The command line, driven through clap as `tidings netsim` would.

use std::process::ExitCode;

use clap::Parser;
use tidings_netsim::cli::{NetsimArgs, run};
use tidings_netsim::netns;

#[derive(Debug, Parser)]
struct Wrapper {
    #[command(flatten)]
    args: NetsimArgs,
}

fn parse(arguments: &[&str]) -> NetsimArgs {
    Wrapper::try_parse_from(std::iter::once("netsim").chain(arguments.iter().copied()))
        .unwrap()
        .args
}

#[tokio::test]
async fn list_and_show_embedded() {
    assert_eq!(run(parse(&["list"])).await.unwrap(), ExitCode::SUCCESS);
    assert_eq!(
        run(parse(&["show", "satellite-geo-600ms"])).await.unwrap(),
        ExitCode::SUCCESS
    );
}

#[tokio::test]
async fn show_unknown_scenario_fails() {
    let error = run(parse(&["show", "no-such-link"])).await.unwrap_err();
    assert!(error.to_string().contains("no-such-link"), "{error}");
}

#[tokio::test]
async fn invalid_user_file_names_field() {
    let directory = std::env::temp_dir().join(format!("netsim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\nsummary = \"s\"\nprobes = \"p\"\nsource = \"s\"\n\
         [uplink.duplicate]\nrate = 2.0\n",
    )
    .unwrap();
    let error = run(parse(&["show", path.to_str().unwrap()]))
        .await
        .unwrap_err();
    std::fs::remove_dir_all(&directory).unwrap();
    assert!(
        error.to_string().contains("uplink.duplicate.rate"),
        "{error}"
    );
}

#[test]
fn link_parses_trailing_command() {
    let args = parse(&[
        "link",
        "lte-trace",
        "--seed",
        "9",
        "--trace-up",
        "/a",
        "--trace-down",
        "/b",
        "--",
        "curl",
        "-s",
        "http://10.77.1.2/",
    ]);
    let tidings_netsim::cli::NetsimCommand::Link(link) = args.command else {
        panic!("not link")
    };
    assert_eq!(link.engine.seed, 9);
    assert_eq!(link.command, ["curl", "-s", "http://10.77.1.2/"]);
}

#[tokio::test]
async fn lte_trace_without_traces_fails_before_setup() {
    let error = run(parse(&["link", "lte-trace", "--", "true"]))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("--trace-up"), "{error:#}");
}

#[tokio::test]
async fn link_runs_command_in_client_namespace() {
    if netns::require_root().is_err() {
        if std::env::var("TIDINGS_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
            eprintln!("SKIPPED link_runs_command_in_client_namespace: needs root");
            return;
        }
        panic!(
            "link_runs_command_in_client_namespace needs root; set TIDINGS_SKIP_ROOT_TESTS=1 to skip"
        );
    }
    let marker = std::env::temp_dir().join(format!("netsim-server-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let server_cmd = format!("ip -o -4 addr show dev tnlink0 > {}", marker.display());
    // The client checks its own address and the environment, waits (bounded) for the server
    // command's output, and exits with 7 so the exit code is seen to pass through.
    let client_script = format!(
        "ip -o -4 addr show dev tnlink0 | grep -q 10.77.0.2 || exit 1; \
         [ \"$NETSIM_SERVER_ADDR\" = 10.77.1.2 ] || exit 2; \
         for i in $(seq 50); do [ -s {0} ] && break; sleep 0.1; done; \
         grep -q 10.77.1.2 {0} || exit 3; exit 7",
        marker.display()
    );
    let args = parse(&[
        "link",
        "baseline-30ms",
        "--server-cmd",
        &server_cmd,
        "--",
        "sh",
        "-c",
        &client_script,
    ]);
    let code = run(args).await.unwrap();
    let _ = std::fs::remove_file(&marker);
    assert_eq!(code, ExitCode::from(7));
}
