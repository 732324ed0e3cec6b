//! The relay echo: whether data really crosses a TURN server's relay, and how fast.
//!
//! Over UDP, [`relay_echo`] uses two relay-only webrtc-rs peer connections and a data
//! channel; over TCP and TLS, where webrtc-rs's ICE agent cannot allocate,
//! [`stream_relay_echo`] uses two `turn` crate clients directly.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use webrtc::api::APIBuilder;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;

use super::conn::{open_conn, turn_client};
use crate::ice::IceServer;
use crate::ice::url::IceUrl;

/// Largest message the stream relay check receives (it sends short ones).
const ECHO_BUFFER: usize = 2048;
/// Sends of one message across the stream relay before it counts as lost.
const ECHO_ATTEMPTS: usize = 10;
/// How long one send waits for its echo before sending again.
const ECHO_RESEND_AFTER: Duration = Duration::from_millis(300);
/// How often the local description is looked at for a relayed candidate.
const CANDIDATE_POLL: Duration = Duration::from_millis(5);

/// The relay check over TCP or TLS, where webrtc-rs's ICE agent cannot allocate: two
/// TURN clients, each over its own connection, allocate; B echoes what arrives on its
/// relayed address; A sends `n` messages to B's relayed address through its own. Every
/// message crosses the server's relay twice. Round trips in ms, sorted.
pub(super) async fn stream_relay_echo(
    url: &IceUrl,
    server: SocketAddr,
    username: &str,
    credential: &str,
    n: usize,
    timeout: Duration,
    ca_dir: Option<&Path>,
) -> Result<Vec<f64>> {
    use webrtc::util::Conn;
    let open = || async {
        let conn = open_conn(url, server, timeout, ca_dir)
            .await
            .map_err(|row| anyhow!("{}", row.details))?;
        let client = turn_client(conn, server, Some(username), Some(credential)).await?;
        let relay = client
            .allocate()
            .await
            .map_err(|e| anyhow!("second allocation: {e}"))?;
        anyhow::Ok((client, Arc::new(relay)))
    };
    let (client_a, relay_a) = open().await?;
    let (client_b, relay_b) = open().await?;
    let (addr_a, addr_b) = (relay_a.local_addr()?, relay_b.local_addr()?);
    // B's permission for A first, so A's first message is let through.
    relay_b.send_to(b"hello", addr_a).await?;
    let echo = {
        let relay_b = relay_b.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; ECHO_BUFFER];
            while let Ok((len, from)) = relay_b.recv_from(&mut buf).await {
                if relay_b.send_to(&buf[..len], from).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut rtts = Vec::with_capacity(n);
    let mut buf = vec![0u8; ECHO_BUFFER];
    let result = async {
        for i in 0..n {
            let msg = format!("rtcdev-probe {i}");
            let started = Instant::now();
            // A message lost before the permissions settle is sent again.
            'attempt: for _ in 0..ECHO_ATTEMPTS {
                relay_a.send_to(msg.as_bytes(), addr_b).await?;
                let wait = tokio::time::sleep(ECHO_RESEND_AFTER);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => continue 'attempt,
                        got = relay_a.recv_from(&mut buf) => {
                            let (len, _) = got?;
                            if &buf[..len] == msg.as_bytes() {
                                rtts.push(started.elapsed().as_secs_f64() * 1000.0);
                                break 'attempt;
                            }
                        }
                    }
                }
            }
            if rtts.len() != i + 1 {
                bail!("message {i} did not come back across the relay");
            }
        }
        anyhow::Ok(())
    }
    .await;
    echo.abort();
    let _ = relay_a.close().await;
    let _ = relay_b.close().await;
    let _ = client_a.close().await;
    let _ = client_b.close().await;
    result?;
    rtts.sort_by(f64::total_cmp);
    Ok(rtts)
}

/// Two relay-only peer connections in this process, a data channel between them, `n`
/// messages echoed: the round trips in ms, sorted. Unbounded in time: callers put it
/// under a timeout.
pub async fn relay_echo(server: &IceServer, n: usize) -> Result<Vec<f64>> {
    let mut setting = SettingEngine::default();
    setting.set_include_loopback_candidate(true);
    // Relay pairs are the only ones here: nominate at once instead of waiting the
    // default 2 s for better pairs that will not come.
    setting.set_relay_acceptance_min_wait(Some(Duration::ZERO));
    let api = APIBuilder::new().with_setting_engine(setting).build();
    let config = RTCConfiguration {
        ice_servers: vec![RTCIceServer {
            urls: server.urls.clone(),
            username: server.username.clone().unwrap_or_default(),
            credential: server.credential.clone().unwrap_or_default(),
        }],
        ice_transport_policy: RTCIceTransportPolicy::Relay,
        ..Default::default()
    };
    let a = Arc::new(api.new_peer_connection(config.clone()).await?);
    let b = Arc::new(api.new_peer_connection(config).await?);
    let result = async {
        // b echoes everything it receives.
        b.on_data_channel(Box::new(|dc| {
            Box::pin(async move {
                let echo = dc.clone();
                dc.on_message(Box::new(move |msg: DataChannelMessage| {
                    let echo = echo.clone();
                    Box::pin(async move {
                        let _ = echo.send(&msg.data).await;
                    })
                }));
            })
        }));
        let dc = a.create_data_channel("probe", None).await?;
        let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
        dc.on_open(Box::new(move || {
            Box::pin(async move {
                let _ = open_tx.send(()).await;
            })
        }));
        let (msg_tx, mut msg_rx) = tokio::sync::mpsc::channel::<Instant>(n.max(1));
        dc.on_message(Box::new(move |_msg| {
            let tx = msg_tx.clone();
            Box::pin(async move {
                let _ = tx.send(Instant::now()).await;
            })
        }));
        // Non-trickle: gather everything, then exchange whole descriptions.
        let t0 = Instant::now();
        let offer = a.create_offer(None).await?;
        let mut gathered = a.gathering_complete_promise().await;
        a.set_local_description(offer).await?;
        let _ = gathered.recv().await;
        let offer = with_relay_candidate(&a).await?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "offer gathered");
        b.set_remote_description(offer).await?;
        let answer = b.create_answer(None).await?;
        let mut gathered = b.gathering_complete_promise().await;
        b.set_local_description(answer).await?;
        let _ = gathered.recv().await;
        let answer = with_relay_candidate(&b).await?;
        a.set_remote_description(answer).await?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "answer set");
        open_rx
            .recv()
            .await
            .context("the data channel did not open")?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "channel open");
        let mut rtts = Vec::with_capacity(n);
        for i in 0..n {
            let sent = Instant::now();
            dc.send_text(format!("rtcdev probe {i}")).await?;
            let got = msg_rx.recv().await.context("echo lost")?;
            rtts.push(got.duration_since(sent).as_secs_f64() * 1000.0);
        }
        rtts.sort_by(|x, y| x.total_cmp(y));
        Ok::<_, anyhow::Error>(rtts)
    }
    .await;
    let t1 = Instant::now();
    let _ = a.close().await;
    let _ = b.close().await;
    tracing::debug!(ms = t1.elapsed().as_millis() as u64, "closed");
    result
}

/// The local description once it carries a relayed candidate: webrtc-rs may report
/// gathering complete before the TURN allocation has added it.
async fn with_relay_candidate(
    pc: &webrtc::peer_connection::RTCPeerConnection,
) -> Result<webrtc::peer_connection::sdp::session_description::RTCSessionDescription> {
    loop {
        let desc = pc
            .local_description()
            .await
            .context("no local description")?;
        if desc.sdp.contains("typ relay") {
            return Ok(desc);
        }
        // Bounded by the caller's timeout.
        tokio::time::sleep(CANDIDATE_POLL).await;
    }
}
