//! `/ui/`: the status page. Three files embedded in the binary (no CDN, nothing to
//! install), served with a Content-Security-Policy that allows only this origin's own
//! script, style and status API — no inline script or style at all, so even a value
//! that slipped past the page's escaping could not run.
//!
//! The page reads `../v1/status/events` (relative, so it also works behind a proxy that
//! mounts the controller under a path prefix).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use detour_core::tables::fnv1a;
use std::sync::LazyLock;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Asset {
        Asset {
            body,
            content_type,
            etag: format!("\"{:016x}\"", fnv1a(body.as_bytes())),
        }
    }
}

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("ui/index.html"), "text/html; charset=utf-8"));
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("ui/app.js"), "text/javascript; charset=utf-8"));
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("ui/style.css"), "text/css; charset=utf-8"));

pub(super) async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

pub(super) async fn script(headers: HeaderMap) -> Response {
    serve(&SCRIPT, &headers)
}

pub(super) async fn style(headers: HeaderMap) -> Response {
    serve(&STYLE, &headers)
}

/// `/ui` and `/` lead to the page (relative URLs in it need the trailing slash).
pub(super) async fn to_page() -> Redirect {
    Redirect::permanent("/ui/")
}

/// The asset, or 304 when the client has this version (ETag, checked on every load:
/// a new controller binary brings a new page at once).
fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|tag| tag.trim() == asset.etag));
    let etag = HeaderValue::from_str(&asset.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let common = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}
