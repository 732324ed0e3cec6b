//! Static content: the calling page compiled into the binary from `web/`, or a folder
//! given with `--dir` (MIME types, index.html, ETag, no escape from the folder).

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use percent_encoding::percent_decode_str;
use tower::ServiceExt;

/// The calling page, compiled in.
#[derive(rust_embed::Embed)]
#[folder = "web/"]
pub struct WebAssets;

/// One bundled file, ready to send: its bytes (shared, never copied), its type, its
/// ETag, and for text its brotli and gzip forms, compressed once rather than for every
/// request (brotli on the fly cost a browser's request for app.js about 0.6 ms of CPU).
/// Brotli at 9, not 11: 9 % larger for app.js, and a tenth of the time and memory to
/// make (11 left 1.5 MB behind in the heap).
#[derive(Clone)]
struct Asset {
    data: axum::body::Bytes,
    mime: HeaderValue,
    etag: HeaderValue,
    packed: Packed,
}

/// A file's compressed forms, each kept only when smaller.
#[derive(Clone, Default)]
struct Packed {
    br: Option<axum::body::Bytes>,
    gzip: Option<axum::body::Bytes>,
}

impl Packed {
    fn of(data: &[u8], mime: &str) -> Packed {
        let text = mime.starts_with("text/")
            || ["javascript", "json", "svg", "xml"]
                .iter()
                .any(|t| mime.contains(t));
        if !text || data.len() < 256 {
            return Packed::default();
        }
        let smaller = |packed: Vec<u8>| {
            (packed.len() < data.len() - data.len() / 10).then(|| axum::body::Bytes::from(packed))
        };
        let mut br = Vec::new();
        // The window fits the file (the default, 4 MB, costs memory for nothing).
        let params = brotli::enc::BrotliEncoderParams {
            quality: 9,
            lgwin: (usize::BITS - data.len().leading_zeros()).clamp(16, 22) as i32,
            size_hint: data.len(),
            ..Default::default()
        };
        let br = brotli::BrotliCompress(&mut &data[..], &mut br, &params)
            .ok()
            .and_then(|_| smaller(br));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzip = std::io::Write::write_all(&mut gz, data)
            .and_then(|()| gz.finish())
            .ok()
            .and_then(smaller);
        Packed { br, gzip }
    }

    /// The form to send for the request's Accept-Encoding, and its name.
    fn pick(&self, headers: &HeaderMap) -> Option<(&axum::body::Bytes, &'static str)> {
        let accepted = headers.get(header::ACCEPT_ENCODING)?.to_str().ok()?;
        let takes = |name: &str| {
            accepted.split(',').any(|item| {
                let mut parts = item.split(';').map(str::trim);
                parts.next().is_some_and(|n| n.eq_ignore_ascii_case(name))
                    && parts.all(|p| {
                        p.strip_prefix("q=")
                            .is_none_or(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0))
                    })
            })
        };
        match (&self.br, &self.gzip) {
            (Some(br), _) if takes("br") => Some((br, "br")),
            (_, Some(gz)) if takes("gzip") => Some((gz, "gzip")),
            _ => None,
        }
    }
}

impl Asset {
    fn load(path: &str) -> Option<Asset> {
        let file = WebAssets::get(path)?;
        let hash = file.metadata.sha256_hash();
        let etag = format!("\"{}\"", hex(&hash[..12]));
        let mime = file.metadata.mimetype();
        Some(Asset {
            packed: packed(hash, &file.data, mime),
            data: match file.data {
                std::borrow::Cow::Borrowed(b) => axum::body::Bytes::from_static(b),
                std::borrow::Cow::Owned(v) => axum::body::Bytes::from(v),
            },
            mime: HeaderValue::from_str(mime)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            etag: HeaderValue::from_str(&etag).ok()?,
        })
    }

    /// The file at `path`. A release build prepares every file once; a debug build
    /// reads `web/` anew each time, so an edit shows without a rebuild.
    fn get(path: &str) -> Option<Asset> {
        if cfg!(debug_assertions) {
            return Asset::load(path);
        }
        all().get(path).cloned()
    }
}

/// Every bundled file, prepared (release builds).
fn all() -> &'static std::collections::HashMap<String, Asset> {
    static ALL: std::sync::OnceLock<std::collections::HashMap<String, Asset>> =
        std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        WebAssets::iter()
            .filter_map(|p| Some((p.to_string(), Asset::load(&p)?)))
            .collect()
    })
}

/// The compressed forms of the file with this hash, made once per content (a debug
/// build reads the file for every request).
fn packed(hash: [u8; 32], data: &[u8], mime: &str) -> Packed {
    static MADE: std::sync::Mutex<Vec<([u8; 32], Packed)>> = std::sync::Mutex::new(Vec::new());
    if let Some((_, p)) = MADE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(h, _)| *h == hash)
    {
        return p.clone();
    }
    let p = Packed::of(data, mime);
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    // Edits in a debug build make new contents; the oldest are forgotten.
    if made.len() >= 256 {
        made.remove(0);
    }
    made.push((hash, p.clone()));
    p
}

/// Prepares the bundled files ahead of the first request (their compression takes a
/// moment), on a thread of its own.
pub fn warm() {
    if !cfg!(debug_assertions) {
        std::thread::spawn(|| {
            all();
            // The compressors' working memory goes back to the system.
            crate::server::heap::release();
        });
    }
}

/// 405 for a method other than GET and HEAD on a file.
pub fn method_not_allowed() -> Response {
    let mut r = (
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed: files here answer GET and HEAD.\n",
    )
        .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// Serves a file of the bundled page.
pub fn bundled(uri: &Uri, headers: &HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    let asset = if path.is_empty() {
        Asset::get("index.html")
    } else if path.ends_with('/') {
        Asset::get(&format!("{path}index.html"))
    } else {
        Asset::get(path)
    };
    let Some(asset) = asset else {
        return not_found();
    };
    let packed = asset.packed.pick(headers);
    // Each form is a representation of its own, with an ETag of its own: "HASH-br".
    let etag = match packed {
        Some((_, name)) => {
            let plain = asset.etag.to_str().unwrap_or("\"\"");
            let tagged = format!("{}-{name}\"", &plain[..plain.len() - 1]);
            HeaderValue::from_str(&tagged).unwrap_or(asset.etag)
        }
        None => asset.etag,
    };
    let mut r = if matches_etag(headers, etag.to_str().unwrap_or("")) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(
            packed.map_or_else(|| asset.data.clone(), |(b, _)| b.clone()),
        ));
        r.headers_mut().insert(header::CONTENT_TYPE, asset.mime);
        if let Some((_, name)) = packed {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
        }
        r
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if asset.packed.br.is_some() || asset.packed.gzip.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    r
}

/// Characters escaped in a path segment of a redirect.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Whether a path segment names a file `--dir` keeps to itself unless `--hidden`:
/// dotfiles and dot-folders (`.env`, `.git/`; `.well-known/` excepted) and key
/// material (`*.pem`, `*.key`, `*.p12`, `*.pfx`), as miniserve and Vite keep them.
pub fn is_hidden(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    (lower.starts_with('.') && lower != ".well-known")
        || [".pem", ".key", ".p12", ".pfx", ".crt"]
            .iter()
            .any(|ext| lower.ends_with(ext))
}

/// Serves a file below `root` (canonical). `..`, encoded separators and symlinks that
/// lead outside `root` are refused, and so are hidden and key files ([`is_hidden`]),
/// named or led to, unless `hidden`.
pub async fn from_dir(
    root: &Path,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    hidden: bool,
) -> Response {
    let raw = uri.path();
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return (
            StatusCode::BAD_REQUEST,
            "encoded separators are not allowed in paths\n",
        )
            .into_response();
    }
    let Ok(decoded) = percent_decode_str(raw).decode_utf8() else {
        return (StatusCode::BAD_REQUEST, "the path is not UTF-8\n").into_response();
    };
    if decoded.contains('\\') || decoded.contains('\0') {
        return (StatusCode::BAD_REQUEST, "bad characters in the path\n").into_response();
    }
    let mut rel = PathBuf::new();
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => return not_found(),
            s => {
                // `name:stream` reads an NTFS alternate data stream of `name`.
                if cfg!(windows) && s.contains(':') {
                    return not_found();
                }
                if !hidden && is_hidden(s) {
                    tracing::debug!(path = ?decoded, "refused: a hidden or key file under --dir (--hidden serves it)");
                    return not_found();
                }
                rel.push(s);
                segments.push(s);
            }
        }
    }
    let mut path = root.join(rel);
    if tokio::fs::metadata(&path)
        .await
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        if !raw.ends_with('/') {
            // Built from the normalised path: `//host` must not become a redirect to
            // another site (a protocol-relative URL).
            let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            let mut location = String::from("/");
            for s in &segments {
                location
                    .push_str(&percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string());
                location.push('/');
            }
            return Redirect::permanent(&format!("{location}{query}")).into_response();
        }
        path = path.join("index.html");
    }
    let Ok(canonical) = tokio::fs::canonicalize(&path).await else {
        return not_found();
    };
    if !canonical.starts_with(root) {
        tracing::warn!(path = ?decoded, "refused: leads outside --dir");
        return not_found();
    }
    // What the path leads to, not only what it says: a symlink with a plain name, or
    // another name for the same file (Windows' short `GIT~1`), reaches hidden files too.
    if !hidden
        && canonical
            .strip_prefix(root)
            .is_ok_and(|rel| rel.iter().any(|c| is_hidden(&c.to_string_lossy())))
    {
        tracing::debug!(path = ?decoded, "refused: leads to a hidden or key file under --dir (--hidden serves it)");
        return not_found();
    }
    let Ok(meta) = tokio::fs::metadata(&canonical).await else {
        return not_found();
    };
    if !meta.is_file() {
        return not_found();
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    // Weak: the compression layer may send the file gzipped.
    let etag = format!("W/\"{:x}-{:x}\"", meta.len(), mtime);
    if matches_etag(headers, &etag) {
        return not_modified(&etag);
    }
    // Streamed, not read whole: a video or a build's source maps can be large, and
    // several requests at once would hold them all. Byte ranges (206, 416) are what
    // Safari asks a <video> or <audio> for, and needs to play it at all.
    let mut file_req = axum::http::Request::new(Body::empty());
    *file_req.method_mut() = method.clone();
    *file_req.uri_mut() = uri.clone();
    *file_req.headers_mut() = headers.clone();
    // A range "if the file is still the one I have" (If-Range) gets the whole file: the
    // file server would send the range whatever the condition, and a resumed download
    // would splice two versions together.
    if file_req.headers_mut().remove(header::IF_RANGE).is_some() {
        file_req.headers_mut().remove(header::RANGE);
    }
    let Ok(res) = tower_http::services::ServeFile::new(&canonical)
        .oneshot(file_req)
        .await;
    let mut res = res.map(Body::new);
    if res.status() == StatusCode::NOT_FOUND {
        // It was there a moment ago: it cannot be read (permissions), or went away.
        tracing::warn!(path = %canonical.display(), "cannot read");
        return (StatusCode::FORBIDDEN, "cannot read that file\n").into_response();
    }
    let h = res.headers_mut();
    // One validator for every answer about this file, rtcdev's (the file server has its
    // own, strong one).
    h.remove(header::ETAG);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // A dev server: always revalidate, so an edit shows on the next load.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn not_modified(etag: &str) -> Response {
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
