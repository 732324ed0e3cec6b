//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A temporary directory that is also used as HOME, so nothing touches the real one.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.path().join("ca")
    }

    /// The built binary, run in the sandbox with a clean environment: HOME is the
    /// sandbox, no CAROOT, no RTCDEV_* variables.
    pub fn rtcdev(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("rtcdev").expect("binary");
        cmd.current_dir(self.path());
        scrub(&mut cmd, self.path());
        cmd
    }

    /// Starts the built binary in the sandbox (clean environment as [`Sandbox::rtcdev`]),
    /// stdout piped and read line by line, stderr discarded; killed on drop.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        self.spawn_env(args, &[])
    }

    /// [`Sandbox::spawn`] with these environment variables set (after the clean-up).
    pub fn spawn_env(&self, args: &[&str], env: &[(&str, &str)]) -> Spawned {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("rtcdev"));
        cmd.current_dir(self.path()).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("RTCDEV_")
                || k == "CAROOT"
                || k == "JAVA_HOME"
                || k.starts_with("MIMALLOC_")
                || k.starts_with("XDG_")
            {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .env("HOME", self.path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rtcdev");
        // Read on a thread of its own, so a test waits for a line with a deadline and
        // the server's later prints never hit a closed pipe.
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Spawned { child, lines }
    }

    /// `c.pem` and `k.pem` in the sandbox: a certificate for localhost from the
    /// sandbox's CA (`ca_dir`), as `rtcdev cert` writes them.
    pub fn localhost_cert_files(&self) {
        self.rtcdev()
            .arg("--ca-dir")
            .arg(self.ca_dir())
            .args([
                "cert",
                "--cert-file",
                "c.pem",
                "--key-file",
                "k.pem",
                "localhost",
            ])
            .assert()
            .success();
    }

    /// A plain std command (for tools such as mkcert, certutil, openssl) in the sandbox.
    pub fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.path());
        cmd.env("HOME", self.path()).env_remove("CAROOT");
        cmd
    }
}

/// A running rtcdev, killed on drop; its stdout lines as they come.
pub struct Spawned {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

/// How long a spawned rtcdev gets to print the next line a test waits for.
pub const LINE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

impl Spawned {
    /// The next stdout line; panics when the process has exited or printed nothing for
    /// [`LINE_WAIT`].
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(LINE_WAIT) {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("rtcdev printed nothing for {LINE_WAIT:?}")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("rtcdev exited before printing that")
            }
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        assert!(
            Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits (bounded) for the exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // It may have exited already; either way it is reaped.
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn scrub(cmd: &mut assert_cmd::Command, home: &Path) {
    for (k, _) in std::env::vars() {
        if k.starts_with("RTCDEV_") || k == "CAROOT" || k == "JAVA_HOME" || k.starts_with("XDG_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home).env("RUST_LOG", "warn");
}

/// Whether the tests run as root (network namespaces need it; CI runs as root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Fails with a clear message when a tool the README's test command installs is missing.
pub fn require(program: &str, package: &str) {
    assert!(
        have(program),
        "{program} is missing: run the README's test command (./test.sh), which installs {package}"
    );
}

/// A hub served in-process on 127.0.0.1:0, shut down on drop.
pub struct TestHub {
    pub addr: std::net::SocketAddr,
    pub hub: rtcdev::hub::Hub,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestHub {
    pub async fn start(config: rtcdev::hub::HubConfig) -> Self {
        let listener = rtcdev::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = rtcdev::hub::Hub::start(config.clone()).await.expect("hub");
        let config = rtcdev::signal::SignalConfig {
            addr,
            tls: None,
            allow_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            hub: config,
            json: false,
            banner: false,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = hub.clone();
        let task = tokio::spawn(async move {
            rtcdev::signal::run_on(listener, served, &config, async move {
                let _ = stopped.await;
            })
            .await
        });
        TestHub {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (up to 10 s) until the hub holds no peer, then asserts it holds no peer and
    /// no room: every connection that went away was cleaned up.
    pub async fn assert_emptied(&self) {
        self.assert_emptied_within(std::time::Duration::from_secs(10))
            .await
    }

    /// [`TestHub::assert_emptied`], waiting up to `limit`.
    pub async fn assert_emptied_within(&self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.hub.stats().peers > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let stats = self.hub.stats();
        assert_eq!((stats.peers, stats.rooms), (0, 0));
    }

    /// Waits (up to 10 s) until the hub holds `n` peers, then asserts it.
    pub async fn assert_emptied_but(&self, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.hub.stats().peers > n && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(self.hub.stats().peers, n);
    }

    /// Stops the server and waits for it: it must end within 10 s, and cleanly.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the server already ended; the task says how, below.
            stop.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), task)
                .await
                .expect("the hub's server ends within 10 s of its shutdown")
                .expect("the hub's server task did not panic")
                .expect("the hub's server ended without an error");
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// How long a test waits for something that should come at once.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A native-protocol client.
pub struct NativeClient {
    pub ws: Ws,
    pub id: String,
    pub welcome: serde_json::Value,
}

impl NativeClient {
    /// Connects and reads `welcome`.
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let mut c = NativeClient {
            ws,
            id: String::new(),
            welcome: serde_json::Value::Null,
        };
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c.id = welcome["id"].as_str().unwrap().to_string();
        c.welcome = welcome;
        c
    }

    pub async fn send(&mut self, v: serde_json::Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("send");
    }

    /// The next JSON frame (WebSocket pings skipped); panics after [`WAIT`].
    pub async fn recv(&mut self) -> serde_json::Value {
        self.recv_within(WAIT).await
    }

    /// [`NativeClient::recv`], panicking after `limit`: for frames that are certain to
    /// come but may take long on a loaded machine (the tail of a long flood).
    pub async fn recv_within(&mut self, limit: std::time::Duration) -> serde_json::Value {
        match self.try_recv(limit).await {
            Some(v) => v,
            None => panic!("no frame within {limit:?}"),
        }
    }

    /// The next JSON frame, or `None` if none came within `limit` (for a caller that
    /// says what was missing); panics if the connection closed.
    pub async fn try_recv(&mut self, limit: std::time::Duration) -> Option<serde_json::Value> {
        match tokio::time::timeout(limit, self.next_frame()).await {
            Ok(Some(v)) => Some(v),
            Ok(None) => panic!("connection closed while waiting for a frame"),
            Err(_) => None,
        }
    }

    async fn next_frame(&mut self) -> Option<serde_json::Value> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("JSON frame")),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Receives until a frame of `kind`, returning it (others are dropped).
    pub async fn recv_type(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Joins a room and returns `joined`.
    pub async fn join(&mut self, room: &str) -> serde_json::Value {
        self.send(serde_json::json!({"type": "join", "room": room}))
            .await;
        let v = self.recv().await;
        assert_eq!(v["type"], "joined", "{v}");
        v
    }

    /// Waits for the close frame and returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("no close within {WAIT:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// The official socket.io JavaScript client, run by node.
pub struct SioClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    pub id: String,
    pub transport: String,
}

/// tests/js with its node_modules, installed by ./test.sh.
pub fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "tests/js/node_modules is missing: run ./test.sh (it runs npm ci there)"
    );
    dir
}

impl SioClient {
    /// Connects with `transport` ("websocket" or "polling") and `version` ("v4" or "v2").
    pub async fn connect(url: &str, transport: &str, version: &str) -> Self {
        use tokio::io::AsyncBufReadExt;
        let dir = js_dir();
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("sio_client.mjs"))
            .args([url, transport, version])
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let stdin = child.stdin.take().unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut c = SioClient {
            child,
            stdin,
            lines,
            id: String::new(),
            transport: String::new(),
        };
        let hello = c.recv_event("connect").await;
        c.id = hello["id"].as_str().unwrap().to_string();
        c.transport = hello["transport"].as_str().unwrap_or_default().to_string();
        c
    }

    pub async fn emit(&mut self, event: &str, data: serde_json::Value) {
        self.emit_cmd(serde_json::json!({"emit": event, "data": data}))
            .await;
    }

    /// Emits `data` with its field `field` (an array of byte values) sent as a binary
    /// attachment.
    pub async fn emit_binary(&mut self, event: &str, data: serde_json::Value, field: &str) {
        self.emit_cmd(serde_json::json!({"emit": event, "data": data, "binary": field}))
            .await;
    }

    async fn emit_cmd(&mut self, cmd: serde_json::Value) {
        use tokio::io::AsyncWriteExt;
        let line = cmd.to_string() + "\n";
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next event line; panics after [`WAIT`].
    pub async fn recv(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("no socket.io event in time")
            .unwrap()
            .expect("node client exited");
        serde_json::from_str(&line).unwrap()
    }

    /// Receives until `event`, returning the whole line.
    pub async fn recv_event(&mut self, event: &str) -> serde_json::Value {
        loop {
            let v = self.recv().await;
            if v["event"] == event {
                return v;
            }
            assert!(v["event"] != "connect_error", "{v}");
        }
    }

    /// Asks the client to disconnect and waits for its process to end, cleanly.
    pub async fn close(mut self) {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(b"{\"close\":true}\n")
            .await
            .expect("the socket.io client is still running");
        // The client exits once its disconnect is sent (over long-polling, a request of
        // its own), or after its own 5 s fallback: wait past that fallback.
        let status = tokio::time::timeout(WAIT * 2, self.child.wait())
            .await
            .expect("the socket.io client ends after close")
            .unwrap();
        assert!(
            status.success(),
            "the socket.io client exited with {status}"
        );
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn parse(raw: &[u8]) -> Self {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a full response head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let chunked = find("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        // 1xx, 204 and 304 carry no body whatever their headers say.
        let bodyless = status < 200 || status == 204 || status == 304;
        if let (false, false, Some(len)) = (bodyless, chunked, find("content-length")) {
            let len: usize = len.parse().expect("a numeric Content-Length");
            assert!(
                body.len() >= len,
                "the body ended after {} of its {len} bytes",
                body.len()
            );
            body.truncate(len);
        }
        if chunked {
            let mut out = Vec::new();
            let mut rest = &body[..];
            loop {
                let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                        .unwrap();
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
                rest = &rest[nl + 2 + size + 2..];
            }
            body = out;
        }
        HttpResponse {
            status,
            headers,
            body,
        }
    }
}

/// A plain-HTTP request over TCP with `Connection: close`.
pub async fn http_request(addr: std::net::SocketAddr, request_head: &str) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request_head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    HttpResponse::parse(&raw)
}

/// Sends `request_head` and returns the response head (status line and headers) as
/// text, without waiting for the connection to end (an upgrade keeps it open).
pub async fn http_request_head(addr: std::net::SocketAddr, request_head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request_head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("response in time")
            .unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// A TLS client config that trusts only `ca_der`.
pub fn client_config(ca_der: &[u8]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca_der.to_vec()))
        .unwrap();
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(rtcdev::cert::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connection to `addr`, verifying the certificate for `server_name` against
/// `ca_der`.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    server_name: &str,
    ca_der: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(client_config(ca_der));
    connector
        .connect(
            rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap(),
            tokio::net::TcpStream::connect(addr).await.unwrap(),
        )
        .await
        .expect("TLS handshake")
}

/// An HTTPS request to `addr`, verifying the certificate for `server_name` against `ca_der`.
pub async fn https_request(
    addr: std::net::SocketAddr,
    server_name: &str,
    ca_der: &[u8],
    request_head: &str,
) -> std::io::Result<HttpResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(client_config(ca_der));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(request_head.as_bytes()).await?;
    let mut raw = Vec::new();
    match tokio::time::timeout(WAIT, tls.read_to_end(&mut raw))
        .await
        .expect("response in time")
    {
        // A server may close without close_notify; the parser checks the body is whole.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    Ok(HttpResponse::parse(&raw))
}

/// `GET path` with `Connection: close`.
pub fn get_head(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// `nginx -t` on the site, with the certificate paths made absolute and a free port.
pub fn nginx_t(sb: &Sandbox, site: &str) {
    let site = site
        .replace(
            "ssl_certificate     c.pem",
            &format!("ssl_certificate     {}/c.pem", sb.path().display()),
        )
        .replace(
            "ssl_certificate_key k.pem",
            &format!("ssl_certificate_key {}/k.pem", sb.path().display()),
        )
        .replace("listen 443 ssl", "listen 127.0.0.1:18443 ssl");
    std::fs::write(sb.path().join("site.conf"), site).unwrap();
    let conf = format!(
        "pid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{}}\nhttp {{\n access_log off;\n include {0}/site.conf;\n}}\n",
        sb.path().display()
    );
    std::fs::write(sb.path().join("nginx.conf"), conf).unwrap();
    let t = std::process::Command::new("nginx")
        .args(["-t", "-p"])
        .arg(sb.path())
        .arg("-c")
        .arg(sb.path().join("nginx.conf"))
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
}

/// A webrtc-rs TURN client on its own UDP socket, listening, for `server` with
/// `user`/`pass` (the long-term credentials).
pub async fn turn_client(
    server: std::net::SocketAddr,
    user: &str,
    pass: &str,
) -> turn::client::Client {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let c = turn::client::Client::new(turn::client::ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: user.into(),
        password: pass.into(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn: std::sync::Arc::new(socket),
        vnet: None,
    })
    .await
    .unwrap();
    c.listen().await.unwrap();
    c
}

/// A hub whose rate limits a test that sends fast does not meet.
pub async fn unlimited_hub() -> TestHub {
    TestHub::start(rtcdev::hub::HubConfig {
        rate_per_sec: 100_000,
        rate_burst: 100_000,
        ..rtcdev::hub::HubConfig::default()
    })
    .await
}

/// Two native peers in `room`, the first told the second arrived.
pub async fn native_pair(hub: &TestHub, room: &str) -> (NativeClient, NativeClient) {
    let mut a = NativeClient::connect(&hub.ws_url()).await;
    let mut b = NativeClient::connect(&hub.ws_url()).await;
    a.join(room).await;
    b.join(room).await;
    a.recv_type("peer-joined").await;
    (a, b)
}
