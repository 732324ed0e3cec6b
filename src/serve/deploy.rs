//! Running `rtcdev serve` for good: the nginx site that puts nginx's HTTPS in front of
//! it (`--print-nginx`) and the systemd unit that keeps it running (`--print-systemd`).

/// The nginx site that puts nginx's HTTPS in front of a running rtcdev (as one would
/// write it by hand).
///
/// With `upstreams` (hub processes sharing rooms through `--redis`), nginx balances
/// across them, pinning each client address to one process: socket.io's long-polling
/// transport keeps its session in the process that opened it.
pub fn nginx_site(
    port: u16,
    upstream_https: bool,
    cert: &std::path::Path,
    key: &std::path::Path,
    upstreams: &[String],
) -> String {
    let host = crate::cert::ca::hostname();
    let scheme = if upstream_https { "https" } else { "http" };
    let (block, target) = if upstreams.is_empty() {
        (String::new(), format!("{scheme}://127.0.0.1:{port}"))
    } else {
        let mut b = String::from(
            "\n# Hub processes sharing rooms through Redis (`rtcdev serve` or `rtcdev signal` with `--redis`).\n\
             # One client address sticks to one process: socket.io's polling transport\n\
             # keeps its session where it started. `consistent` moves few clients when\n\
             # a process is added or removed.\n\
             upstream rtcdev_hubs {\n    hash $remote_addr consistent;\n",
        );
        for u in upstreams {
            b.push_str(&format!("    server {u};\n"));
        }
        b.push_str("}\n");
        (b, format!("{scheme}://rtcdev_hubs"))
    };
    include_str!("../../templates/nginx.conf")
        .replace("{{UPSTREAM_BLOCK}}", &block)
        .replace("{{LISTEN_PORT}}", "443")
        .replace("{{SERVER_NAME}}", &format!("{host} {host}.local"))
        .replace("{{CERT_FILE}}", &cert.display().to_string())
        .replace("{{KEY_FILE}}", &key.display().to_string())
        .replace("{{UPSTREAM}}", &target)
}

/// A systemd unit that keeps `rtcdev serve` running (what a process manager would).
pub fn systemd_unit(args: &str, caroot: &std::path::Path) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/local/bin/rtcdev".into());
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    include_str!("../../templates/rtcdev.service")
        .replace("{{EXEC}}", &exe)
        .replace("{{ARGS}}", args)
        .replace("{{CAROOT}}", &caroot.display().to_string())
        .replace("{{USER}}", &user)
}
