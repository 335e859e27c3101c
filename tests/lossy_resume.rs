//! A device whose link goes dark for 30 s while others send more than a page of messages
//! must end with every message exactly once and in seq order. The link is netsim's UDP
//! proxy with a blackhole schedule, between the device and a real `tidings serve`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tidings_clients::{Client, ClientConfig, Transport};
use tidings_netsim::config::Scenario;
use tidings_netsim::engine::LinkSpec;
use tidings_netsim::proxy::UdpProxy;

use support::ServeNode;

/// Passes traffic for 3 s, then drops everything for 30 s, in both directions.
const DARK_LINK: &str = r#"
name = "dark-30s-after-3s"
summary = "3 s of clean link, then 30 s of total loss"
probes = "Reconnect and sync after a long silent outage"
source = "test"

[uplink.delay]
base = "5ms"

[uplink.blackhole]
pass_for = "3s"
drop_for = "30s"

[downlink.delay]
base = "5ms"

[downlink.blackhole]
pass_for = "3s"
drop_for = "30s"
"#;

/// Messages sent while the device is cut off: more than one history page (200).
const SENT_IN_DARK: u64 = 250;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_device_gets_everything_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = ServeNode::start(dir.path())?;
    let scenario = Scenario::from_toml(DARK_LINK)?;
    let spec = LinkSpec::resolve(&scenario, None, None)?;
    let proxy = UdpProxy::start(&spec, "127.0.0.1:0".parse()?, node.quic, 7).await?;
    let link_up_at = tokio::time::Instant::now();

    let mut config = ClientConfig::new(
        proxy.local_addr().to_string(),
        support::token(dir.path(), "bob")?,
        "bob-phone",
        node.ca_path(),
    );
    config.transport = Transport::Quic;
    let bob = Client::connect(config)
        .await
        .context("bob failed to connect")?;
    let mut inbox = bob.deliveries().context("deliveries already taken")?;

    let alice_config = ClientConfig::new(
        node.quic.to_string(),
        support::token(dir.path(), "alice")?,
        "alice-phone",
        node.ca_path(),
    );
    let alice = Client::connect(alice_config).await?;
    let first = alice.send_direct("bob", "before the outage").await?;
    let got = tokio::time::timeout(Duration::from_secs(3), inbox.recv())
        .await
        .context("bob missed the message sent while the link was up")?
        .context("delivery stream ended")?;
    ensure!(got.seq == first.seq);

    // The outage starts on the scenario's schedule, 3 s after the proxy came up.
    tokio::time::sleep_until(link_up_at + Duration::from_millis(3_500)).await;
    for i in 0..SENT_IN_DARK {
        alice
            .send(first.conversation_id, format!("in the dark {i}"))
            .await?;
    }

    let expected: BTreeSet<u64> = (1..=SENT_IN_DARK + 1).collect();
    let mut seen = BTreeSet::from([got.seq]);
    let mut last = got.seq;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < expected.len() {
        let message = match tokio::time::timeout_at(deadline, inbox.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) => bail!("delivery stream ended after {} messages", seen.len()),
            Err(_) => bail!("bob has {} of {} messages", seen.len(), expected.len()),
        };
        ensure!(
            message.seq > last,
            "seq {} arrived after {last}",
            message.seq
        );
        ensure!(
            seen.insert(message.seq),
            "seq {} delivered twice",
            message.seq
        );
        last = message.seq;
    }
    assert_eq!(seen, expected);

    // Nothing more arrives: no duplicate is queued behind the last message.
    let extra = tokio::time::timeout(Duration::from_millis(500), inbox.recv()).await;
    assert!(extra.is_err(), "an extra delivery arrived: {extra:?}");
    Ok(())
}
