use clap::Parser;
use tidings_schema::frame::{
    ConversationInfo, ConversationKind, Member, Message, MessageKind, Role, SendAck,
};

use super::*;
use crate::config::TrustRoots;

fn parse(args: &[&str]) -> Result<ClientArgs, clap::Error> {
    ClientArgs::try_parse_from(std::iter::once("client").chain(args.iter().copied()))
}

#[test]
fn send_parses_global_options_after_subcommand() {
    let args = parse(&["send", "--to", "bob", "hi there", "--token", "t", "--json"]).unwrap();
    assert_eq!(args.server, DEFAULT_SERVER);
    assert_eq!(args.token.as_deref(), Some("t"));
    let Command::Send { target, text, json } = args.command else {
        panic!("expected send, parsed {:?}", args.command);
    };
    assert_eq!(target.to.as_deref(), Some("bob"));
    assert_eq!(target.conversation, None);
    assert_eq!(text, "hi there");
    assert!(json);
}

#[test]
fn send_requires_exactly_one_target() {
    assert!(parse(&["send", "hi"]).is_err());
    assert!(parse(&["send", "--to", "bob", "--conversation", "5", "hi"]).is_err());
    assert!(parse(&["send", "--conversation", "5", "hi"]).is_ok());
}

#[test]
fn conversation_ids_parse_full_u64_range() {
    let args = parse(&["history", "--conversation", "18446744073709551615"]).unwrap();
    let Command::History {
        conversation,
        before,
        limit,
        all,
        json,
    } = args.command
    else {
        panic!("expected history");
    };
    assert_eq!(conversation, u64::MAX);
    assert_eq!(before, None);
    assert_eq!(limit, 50);
    assert!(!all);
    assert!(!json);
}

#[test]
fn listen_parses_humantime_timeout() {
    let args = parse(&["listen", "--count", "3", "--timeout", "1m 30s"]).unwrap();
    let Command::Listen {
        conversation,
        count,
        timeout,
        resume,
    } = args.command
    else {
        panic!("expected listen");
    };
    assert!(!resume);
    assert_eq!(conversation, None);
    assert_eq!(count, Some(3));
    assert_eq!(timeout, Duration::from_secs(90));

    let default = parse(&["listen"]).unwrap();
    assert!(
        matches!(default.command, Command::Listen { timeout, .. } if timeout == Duration::from_secs(20))
    );
    assert!(parse(&["listen", "--timeout", "soon"]).is_err());
}

#[test]
fn group_members_split_on_commas() {
    let args = parse(&["group", "create", "--name", "team", "--members", "b,c"]).unwrap();
    let Command::Group(GroupCommand::Create { name, members }) = args.command else {
        panic!("expected group create");
    };
    assert_eq!(name, "team");
    assert_eq!(members, ["b", "c"]);

    let unnamed = parse(&["group", "create", "--members", "b,c"]).unwrap();
    let Command::Group(GroupCommand::Create { name, .. }) = unnamed.command else {
        panic!("expected group create");
    };
    assert_eq!(name, "");

    assert!(parse(&["group", "add", "--conversation", "9"]).is_err());
    assert!(parse(&["group", "leave", "--conversation", "9"]).is_ok());
}

#[test]
fn config_uses_data_dir_ca_by_default() {
    let args = parse(&[
        "conversations",
        "--token",
        "t",
        "--data-dir",
        "/srv/tidings",
    ])
    .unwrap();
    let config = args.client_config().unwrap();
    assert_eq!(
        config.trust,
        TrustRoots::CaPemFile(PathBuf::from("/srv/tidings/tls/ca.pem"))
    );
    assert!(config.device_id.starts_with("cli-"));

    let args = parse(&[
        "conversations",
        "--token",
        "t",
        "--cert",
        "ca.pem",
        "--device",
        "d1",
    ])
    .unwrap();
    let config = args.client_config().unwrap();
    assert_eq!(config.trust, TrustRoots::CaPemFile(PathBuf::from("ca.pem")));
    assert_eq!(config.device_id, "d1");
}

#[test]
fn transport_options_reach_config() {
    let args = parse(&["conversations", "--token", "t"]).unwrap();
    let config = args.client_config().unwrap();
    assert_eq!(config.transport, crate::Transport::Auto);
    assert_eq!(config.ws_url, None);

    let args = parse(&[
        "conversations",
        "--token",
        "t",
        "--transport",
        "ws",
        "--ws-url",
        "ws://127.0.0.1:9000/v1/ws",
    ])
    .unwrap();
    let config = args.client_config().unwrap();
    assert_eq!(config.transport, crate::Transport::WebSocket);
    assert_eq!(config.websocket_url(), "ws://127.0.0.1:9000/v1/ws");

    assert!(parse(&["conversations", "--transport", "udp"]).is_err());
}

#[test]
fn config_rejects_missing_token() {
    let mut args = parse(&["conversations"]).unwrap();
    // The variable may be set in the environment of the test run.
    args.token = None;
    let error = args.client_config().unwrap_err();
    assert!(error.contains("TIDINGS_TOKEN"), "{error}");
}

fn sample_message() -> Message {
    Message {
        conversation_id: u64::MAX,
        seq: 42,
        message_id: 9_007_199_254_740_993,
        sender: "alice".to_owned(),
        body: "hello \"world\"".to_owned(),
        hlc: 0xFFFF_0000_0000_0001,
        server_time_ms: 1_767_225_600_000 + 3_723_000,
        kind: MessageKind::User,
    }
}

#[test]
fn message_json_has_ids_as_strings() {
    let value = message_json(&sample_message());
    assert_eq!(value["conversation"], "18446744073709551615");
    assert_eq!(value["message_id"], "9007199254740993");
    assert_eq!(value["hlc"], "18446462598732840961");
    assert_eq!(value["seq"], 42);
    assert_eq!(value["sender"], "alice");
    assert_eq!(value["body"], "hello \"world\"");
    assert_eq!(value["kind"], "user");
    assert_eq!(value["server_time_ms"], 1_767_229_323_000u64);

    let line = value.to_string();
    assert!(!line.contains('\n'));
    let reparsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reparsed, value);
}

#[test]
fn ack_json_has_ids_as_strings() {
    let ack = SendAck {
        conversation_id: 7,
        client_msg_id: "k1".to_owned(),
        message_id: u64::MAX - 1,
        seq: 3,
        hlc: 5,
        server_time_ms: 10,
    };
    let value = ack_json(&ack);
    assert_eq!(value["conversation"], "7");
    assert_eq!(value["message_id"], "18446744073709551614");
    assert_eq!(value["client_msg_id"], "k1");
    assert_eq!(value["seq"], 3);
    assert_eq!(value["hlc"], "5");
}

#[test]
fn conversation_json_lists_members() {
    let info = ConversationInfo {
        conversation_id: 1 << 60,
        kind: ConversationKind::Group,
        name: "team".to_owned(),
        members: vec![Member {
            user_id: "alice".to_owned(),
            role: Role::Admin,
            joined_seq: 1,
        }],
        created_ms: 5,
        last_seq: 8,
    };
    let value = conversation_json(&info);
    assert_eq!(value["conversation"], "1152921504606846976");
    assert_eq!(value["kind"], "group");
    assert_eq!(value["members"][0]["user"], "alice");
    assert_eq!(value["members"][0]["role"], "admin");
    assert_eq!(value["last_seq"], 8);
}

#[test]
fn message_line_shows_utc_clock_seq_and_sender() {
    // 3,723 s after midnight UTC is 01:02:03.
    assert_eq!(
        message_line(&sample_message()),
        "[01:02:03] #42 alice: hello \"world\""
    );
}

#[test]
fn receipt_commands_parse() {
    let args = parse(&[
        "read",
        "--conversation",
        "18446744073709551615",
        "--seq",
        "7",
    ])
    .unwrap();
    assert!(matches!(
        args.command,
        Command::Read {
            conversation: u64::MAX,
            seq: 7
        }
    ));
    let args = parse(&["receipts", "--conversation", "5"]).unwrap();
    assert!(matches!(
        args.command,
        Command::Receipts { conversation: 5 }
    ));
    let args = parse(&["unread", "--conversation", "5"]).unwrap();
    assert!(matches!(args.command, Command::Unread { conversation: 5 }));
    let args = parse(&["listen", "--resume"]).unwrap();
    assert!(matches!(args.command, Command::Listen { resume: true, .. }));
    assert!(
        parse(&["read", "--conversation", "5"]).is_err(),
        "--seq is required"
    );
}
