//! `--ice-servers`: reading an `iceServers` list from a file or an http(s):// URL.
//!
//! The list is the one a browser takes, `[...]` or `{"iceServers": [...]}` (what
//! `rtcdev serve`'s /config.json hands out); each of its URLs becomes a [`Target`].
//! Fetching over HTTP is a small HTTP/1.1 GET (`Connection: close`), every step and the
//! whole of it under a timeout.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{add_local_ca, client_config};
use super::{DEFAULT_TIMEOUT, Target};
use crate::ice::url::IceUrl;

/// Time each step of an `--ice-servers` fetch gets: the TCP connect, the TLS handshake,
/// reading the response.
const STEP_TIMEOUT: Duration = DEFAULT_TIMEOUT;
/// Time the whole `--ice-servers` fetch gets, every step included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// The text of `--ice-servers`: a file, or an http(s):// URL (over https trusting
/// rtcdev's local CA, as `rtcdev serve`'s /config.json needs). A fetch that takes longer
/// than 15 s in all fails.
pub async fn fetch_ice_servers(source: &str, ca_dir: Option<&Path>) -> Result<String> {
    if !source.starts_with("https://") && !source.starts_with("http://") {
        return std::fs::read_to_string(source)
            .with_context(|| format!("cannot read --ice-servers {source}"));
    }
    tokio::time::timeout(FETCH_TIMEOUT, fetch_http(source, ca_dir))
        .await
        .map_err(|_| anyhow!("{source}: no whole answer within {FETCH_TIMEOUT:?}"))?
}

/// GETs `source` (an http:// or https:// URL) and returns the body of a 200 answer.
async fn fetch_http(source: &str, ca_dir: Option<&Path>) -> Result<String> {
    let uri: http::Uri = source
        .parse()
        .with_context(|| format!("--ice-servers {source:?} is not a URL"))?;
    let host = uri
        .host()
        .context("the URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let tcp = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| anyhow!("{source}: no answer within {STEP_TIMEOUT:?}"))?
    .with_context(|| format!("cannot connect to {source}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    if https {
        let location = crate::cert::CaLocation::resolve(ca_dir)?;
        let mut roots = rustls::RootCertStore::empty();
        add_local_ca(&mut roots, &location.dir);
        let config = client_config(roots)?;
        let name = rustls_pki_types::ServerName::try_from(host.clone())?;
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        let mut tls = tokio::time::timeout(STEP_TIMEOUT, handshake)
            .await
            .map_err(|_| anyhow!("{source}: no TLS handshake within {STEP_TIMEOUT:?}"))?
            .with_context(|| format!("{source}: TLS failed (is the server's CA rtcdev's local CA? see rtcdev cert --caroot)"))?;
        tls.write_all(request.as_bytes()).await?;
        tokio::time::timeout(STEP_TIMEOUT, tls.read_to_end(&mut raw))
            .await
            .map_err(|_| anyhow!("{source}: timed out"))??;
    } else {
        let mut tcp = tcp;
        tcp.write_all(request.as_bytes()).await?;
        tokio::time::timeout(STEP_TIMEOUT, tcp.read_to_end(&mut raw))
            .await
            .map_err(|_| anyhow!("{source}: timed out"))??;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{source}: not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{source}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// Reads an `iceServers` list as a browser gets it: `[...]` or `{"iceServers": [...]}`.
/// Every URL of every entry becomes a target with that entry's username and credential;
/// `source` names the list in errors.
pub fn parse_ice_servers(text: &str, source: &str) -> Result<Vec<Target>> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("{source} is not JSON: {e}"))?;
    let list = match &v {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) => o
            .get("iceServers")
            .and_then(|l| l.as_array())
            .cloned()
            .ok_or_else(|| anyhow!("{source} has no \"iceServers\" list"))?,
        _ => bail!("{source}: expected an iceServers list"),
    };
    let mut targets = Vec::new();
    for entry in list {
        let urls: Vec<String> = match &entry["urls"] {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|u| u.as_str().map(String::from))
                .collect(),
            _ => bail!("{source}: an entry has no \"urls\""),
        };
        for u in urls {
            targets.push(Target {
                url: IceUrl::parse(&u)?,
                username: entry["username"].as_str().map(String::from),
                credential: entry["credential"].as_str().map(String::from),
            });
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_browser_ice_server_lists() {
        let t = parse_ice_servers(r#"{"iceServers":[{"urls":"stun:a:1"},{"urls":["turn:b:2"],"username":"u","credential":"p"}]}"#, "x").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].username.as_deref(), Some("u"));
        assert!(
            parse_ice_servers("not json", "f.json")
                .unwrap_err()
                .to_string()
                .contains("f.json is not JSON")
        );
    }

    #[test]
    fn reads_a_bare_list_and_refuses_others() {
        let t = parse_ice_servers(r#"[{"urls":["stun:a:1","turn:b:2"]}]"#, "x").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].url.host, "b");
        assert_eq!(t[1].username, None);
        for (bad, needle) in [
            (r#"{"servers":[]}"#, "has no \"iceServers\" list"),
            ("3", "expected an iceServers list"),
            (r#"[{"url":"stun:a"}]"#, "an entry has no \"urls\""),
            (r#"[{"urls":"http://a"}]"#, "scheme must be"),
        ] {
            let err = parse_ice_servers(bad, "x").unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{bad}: {err:#}");
        }
    }

    #[tokio::test]
    async fn reads_a_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ice.json");
        std::fs::write(&path, "[]").unwrap();
        let source = path.to_string_lossy();
        let text = fetch_ice_servers(&source, None).await.unwrap();
        assert_eq!(text, "[]");
        let missing = dir.path().join("missing.json");
        let missing = missing.to_string_lossy();
        let err = fetch_ice_servers(&missing, None).await.unwrap_err();
        assert!(
            err.to_string().contains("cannot read --ice-servers"),
            "{err:#}"
        );
    }
}
