//! The STUN and TURN checks: a binding per STUN server, an allocation and relay echo per TURN one.
//!
//! With two or more STUN servers, [`nat_mapping`] also compares what one socket maps to.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::conn::{open_conn, resolve, turn_client, udp_socket_for};
use super::relay::{relay_echo, stream_relay_echo};
use super::report::{
    Failure, Row, TurnErrorClass, classify_turn_error, round_ms, turn_error_row, unreachable,
};
use super::{RELAY_ECHOES, Target};
use crate::ice::url::IceUrl;
use crate::ice::{IceServer, turn_rest_credentials};

/// Who the TURN REST credentials the probe makes from `--secret` name.
const REST_USER: &str = "rtcdev-probe";
/// How long the TURN REST credentials the probe makes from `--secret` stay valid.
const REST_CREDENTIAL_TTL: Duration = Duration::from_secs(3600);
/// The relay echo gets this many times the per-server timeout.
const RELAY_TIMEOUT_FACTOR: u32 = 2;

/// Resolves the server of `url`, connects over its transport and starts a STUN/TURN
/// client on that connection (with `credentials` for TURN); a failure is the report row.
async fn client_for(
    url: &IceUrl,
    timeout: Duration,
    ca_dir: Option<&Path>,
    credentials: Option<(&str, &str)>,
) -> Result<(std::net::SocketAddr, turn::client::Client), Box<Row>> {
    let server = resolve(url).await.map_err(Box::new)?;
    let conn = open_conn(url, server, timeout, ca_dir).await?;
    let (user, pass) = credentials.unzip();
    turn_client(conn, server, user, pass)
        .await
        .map(|client| (server, client))
        .map_err(|e| {
            Box::new(Row::fail(
                url,
                Failure::Local,
                format!("{e:#}"),
                "report this as a bug",
            ))
        })
}

/// Checks one STUN server: a binding request, the mapped address and its round trip.
pub(super) async fn stun(url: &IceUrl, timeout: Duration, ca_dir: Option<&Path>) -> Row {
    let (server, client) = match client_for(url, timeout, ca_dir, None).await {
        Ok(c) => c,
        Err(row) => return *row,
    };
    let started = Instant::now();
    let result =
        tokio::time::timeout(timeout, client.send_binding_request_to(&server.to_string())).await;
    let _ = client.close().await;
    match result {
        Ok(Ok(mapped)) => {
            let rtt = started.elapsed().as_secs_f64() * 1000.0;
            let mut row = Row::ok(url, format!("mapped address {mapped}, {rtt:.1} ms"));
            row.mapped = Some(mapped.to_string());
            row.rtt_ms = Some(round_ms(rtt));
            row
        }
        Ok(Err(e)) => turn_error_row(url, &e.to_string(), timeout),
        Err(_) => unreachable(url, timeout),
    }
}

/// Checks one TURN server: an allocation with the target's credentials (or TURN REST
/// ones made from `secret`), then [`RELAY_ECHOES`] messages echoed across the relay.
pub(super) async fn turn(
    target: &Target,
    timeout: Duration,
    secret: Option<&str>,
    ca_dir: Option<&Path>,
) -> Row {
    let url = &target.url;
    let (username, credential) = match (&target.username, &target.credential, secret) {
        (Some(u), Some(c), _) => (u.clone(), c.clone()),
        (_, _, Some(s)) => {
            turn_rest_credentials(s, REST_USER, REST_CREDENTIAL_TTL, SystemTime::now())
        }
        _ => {
            return Row::fail(
                url,
                Failure::Usage,
                "no credentials for this TURN server".into(),
                "pass --username and --credential, or --secret for TURN REST",
            );
        }
    };
    let (server, client) =
        match client_for(url, timeout, ca_dir, Some((&username, &credential))).await {
            Ok(c) => c,
            Err(row) => return *row,
        };
    let started = Instant::now();
    let allocated = tokio::time::timeout(timeout, client.allocate()).await;
    let rtt = started.elapsed().as_secs_f64() * 1000.0;
    let relayed = match allocated {
        Ok(Ok(conn)) => {
            use webrtc::util::Conn;
            let addr = conn.local_addr();
            let _ = conn.close().await;
            addr
        }
        Ok(Err(e)) => {
            let _ = client.close().await;
            return turn_error_row(url, &e.to_string(), timeout);
        }
        Err(_) => {
            let _ = client.close().await;
            return unreachable(url, timeout);
        }
    };
    let _ = client.close().await;
    let relayed = match relayed {
        Ok(a) => a,
        Err(e) => {
            return Row::fail(
                url,
                Failure::Error,
                format!("allocation without an address: {e}"),
                "run with -v",
            );
        }
    };
    let (username_for_echo, credential_for_echo) = (username.clone(), credential.clone());
    let ice = IceServer {
        urls: vec![url.raw.clone()],
        username: Some(username),
        credential: Some(credential),
    };
    let echo_timeout = timeout * RELAY_TIMEOUT_FACTOR;
    let echoed = if url.transport == "udp" {
        tokio::time::timeout(echo_timeout, relay_echo(&ice, RELAY_ECHOES)).await
    } else {
        let check = stream_relay_echo(
            url,
            server,
            &username_for_echo,
            &credential_for_echo,
            RELAY_ECHOES,
            timeout,
            ca_dir,
        );
        tokio::time::timeout(echo_timeout, check).await
    };
    match echoed {
        Ok(Ok(rtts)) => {
            let median = rtts[rtts.len() / 2];
            let mut row = Row::ok(
                url,
                format!(
                    "relayed address {relayed}; {} messages crossed the relay, median RTT {median:.1} ms",
                    rtts.len()
                ),
            );
            row.relayed = Some(relayed.to_string());
            row.rtt_ms = Some(round_ms(rtt));
            row.relay_echoes = Some(rtts.len());
            row.relay_rtt_ms = Some(round_ms(median));
            row
        }
        Ok(Err(e)) if classify_turn_error(&format!("{e:#}")) == TurnErrorClass::Forbidden => {
            // The second allocation or a permission was refused: quota (486) or policy (403).
            let mut row = turn_error_row(url, &format!("{e:#}"), timeout);
            row.relayed = Some(relayed.to_string());
            row
        }
        Ok(Err(e)) => {
            let mut row = Row::fail(
                url,
                Failure::NoRelayData,
                format!("allocation ok ({relayed}) but no data crossed the relay: {e:#}"),
                "the server allocates but does not relay: check its relay port range is open and peers are allowed (coturn: no-loopback-peers, denied-peer-ip)",
            );
            row.relayed = Some(relayed.to_string());
            row
        }
        Err(_) => {
            let mut row = Row::fail(
                url,
                Failure::NoRelayData,
                format!(
                    "allocation ok ({relayed}) but no data crossed the relay within the timeout"
                ),
                "check the server's relay ports are reachable and peers are allowed",
            );
            row.relayed = Some(relayed.to_string());
            row
        }
    }
}

/// Compares the mapped addresses one socket gets from several STUN servers: the same
/// everywhere is endpoint-independent mapping, different ones a symmetric NAT. `None`
/// when a server does not answer.
pub(super) async fn nat_mapping(urls: &[&IceUrl], timeout: Duration) -> Option<String> {
    let mut servers = Vec::new();
    for u in urls {
        servers.push(resolve(u).await.ok()?);
    }
    let socket = udp_socket_for(*servers.first()?).await.ok()?;
    let client = turn_client(Arc::new(socket), servers[0], None, None)
        .await
        .ok()?;
    let mut mapped = Vec::new();
    for s in &servers {
        let m = tokio::time::timeout(timeout, client.send_binding_request_to(&s.to_string()))
            .await
            .ok()?
            .ok()?;
        mapped.push(m);
    }
    let _ = client.close().await;
    Some(if mapped.windows(2).all(|w| w[0] == w[1]) {
        format!(
            "one socket maps to {} at every server: endpoint-independent mapping, direct connections can work (STUN is enough)",
            mapped[0]
        )
    } else {
        let list: Vec<String> = mapped.iter().map(ToString::to_string).collect();
        format!(
            "one socket maps to different addresses per server ({}): a symmetric NAT, peers behind it need TURN",
            list.join(", ")
        )
    })
}
