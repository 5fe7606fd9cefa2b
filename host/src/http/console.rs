//! The web console: a few static files embedded in the binary and served at
//! `GET /` and `GET /console/{file}`. The page itself holds no data and
//! needs no token; it asks for one and calls the same API as everyone else.
//!
//! **Invariant:** the console loads nothing from elsewhere. Every asset is
//! in [`ASSETS`], and the Content-Security-Policy allows scripts, styles
//! and connections to this origin only (no inline script or style).

use std::sync::OnceLock;

use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use hyper::{HeaderMap, Response, StatusCode};

use super::Body;
use crate::error::{ErrorCode, Failure};

/// What every console response carries: only this origin's scripts, styles
/// and API; no frames, forms, plugins or base-URL changes.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file: its name under `/console/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// The console's files. `index.html` is also served at `/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../console/index.html"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../console/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../console/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../console/api.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../console/charts.js"),
    },
    Asset {
        name: "pages.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../console/pages.js"),
    },
    Asset {
        name: "admin.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../console/admin.js"),
    },
];

/// Each asset's strong ETag (a quoted SHA-256 prefix of its bytes), in
/// [`ASSETS`] order, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| ASSETS.iter().map(|a| format!("\"{}\"", &crate::digest::sha256_hex(a.bytes)[..32])).collect())
}

/// Whether `segments` name a console file (`/` or `/console/{file}`).
pub fn is_console_path(segments: &[&str]) -> bool {
    matches!(segments, [""] | ["console"] | ["console", _])
}

/// Answers `GET`/`HEAD` of `/`, `/console/` and `/console/{file}`: 304 when
/// `If-None-Match` holds the ETag, else the file. Browsers revalidate on
/// every load (`no-cache`), so a new binary's console is seen at once.
pub(super) fn serve(segments: &[&str], headers: &HeaderMap) -> Result<Response<Body>, Failure> {
    let name = match segments {
        [""] | ["console"] | ["console", ""] => "index.html",
        ["console", name] => name,
        _ => return Err(Failure::new(ErrorCode::NotFound, "no such console file")),
    };
    let index = ASSETS
        .iter()
        .position(|asset| asset.name == name)
        .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no console file {name:?}")))?;
    let (asset, etag) = (&ASSETS[index], &etags()[index]);
    let matches = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let mut response = if matches {
        let mut response = Response::new(Body::full(bytes::Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        // hyper sends no body in the answer to a HEAD.
        Response::new(Body::full(bytes::Bytes::from_static(asset.bytes)))
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(ETAG, HeaderValue::from_str(etag).expect("hex is a valid header value"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_etag_and_a_matching_etag_answers_304() {
        for (asset, etag) in ASSETS.iter().zip(etags()) {
            let response = serve(&["console", asset.name], &HeaderMap::new()).unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[ETAG], etag.as_str());
            assert!(response.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
            let mut conditional = HeaderMap::new();
            conditional.insert(IF_NONE_MATCH, HeaderValue::from_str(etag).unwrap());
            let again = serve(&["console", asset.name], &conditional).unwrap();
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        }
        let root = serve(&[""], &HeaderMap::new()).unwrap();
        assert_eq!(root.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(serve(&["console", "../Cargo.toml"], &HeaderMap::new()).is_err());
    }
}
