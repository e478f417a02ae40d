//! The web console's static files, served from `[web] dir` at `/`. Only regular files under that directory are
//! served: a symlink leading out of it is answered 404 like a missing file (the directory is meant to be public,
//! what it links to is not). A redirect never points to `//host/...`, which browsers read as another host.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::services::ServeDir;

/// The files under `dir`, for the router's fallback.
pub(super) fn files(dir: &Path) -> Router {
    // Symlinks in the root's own path (e.g. /usr/share/bulkhead/web -> /opt/...) are the operator's choice.
    let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Router::new()
        .fallback_service(ServeDir::new(&root).append_index_html_on_directories(true))
        .layer(axum::middleware::from_fn_with_state(Arc::new(root), guard))
}

async fn guard(State(root): State<Arc<PathBuf>>, req: Request, next: Next) -> Response {
    if !served_from_root(&root, req.uri().path()).await {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut resp = next.run(req).await;
    if let Some(location) = resp.headers().get(header::LOCATION) {
        let location = location.to_str().unwrap_or_default();
        // `//js/` (from a request for `//js`) would send the browser to the host `js`.
        let local = format!("/{}", location.trim_start_matches(['/', '\\']));
        match HeaderValue::from_str(&local) {
            Ok(v) => {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Err(_) => return StatusCode::NOT_FOUND.into_response(),
        }
    }
    resp
}

/// Whether the file a request path names (decoded as the file service decodes it) lies under `root` once every
/// symlink is resolved, and is a regular file or a directory whose index file is. A path that names nothing passes:
/// the file service answers it 404 itself.
async fn served_from_root(root: &Path, path: &str) -> bool {
    let Ok(decoded) = percent_encoding::percent_decode_str(path).decode_utf8() else {
        return true;
    };
    let mut file = root.to_path_buf();
    for part in Path::new(decoded.trim_start_matches('/')).components() {
        match part {
            Component::Normal(p) => file.push(p),
            Component::CurDir => {}
            // The file service refuses these itself.
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    let Ok(real) = tokio::fs::canonicalize(&file).await else {
        return true;
    };
    let Ok(meta) = tokio::fs::metadata(&real).await else {
        return true;
    };
    if !real.starts_with(root) {
        return false;
    }
    if meta.is_dir() {
        return match tokio::fs::canonicalize(real.join("index.html")).await {
            Ok(index) => {
                index.starts_with(root)
                    && tokio::fs::metadata(&index).await.is_ok_and(|m| m.is_file())
            }
            Err(_) => true,
        };
    }
    meta.is_file()
}
