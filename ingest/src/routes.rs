//! The one table of the API's routes: (method, path template). The router
//! builds each route's matcher from its entry ([`on`]), the metrics label a
//! request with its entry's template ([`index_of`]), and the OpenAPI test
//! compares the spec with [`ALL`]: a route cannot be served without being
//! listed here, so a new route without a spec entry fails that test.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::Method;

use crate::ApiError;

/// One route: an HTTP method on a path template whose `{name}` segments
/// match any one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub template: &'static str,
    /// The template's leading `/`s, skipped as the path's are.
    slashes: usize,
    /// Where the template's first `{name}` segment starts (its length when
    /// it has none): everything before it must equal the path's start.
    literal_end: usize,
}

const fn route(method: &'static str, template: &'static str) -> Route {
    let bytes = template.as_bytes();
    let mut slashes = 0;
    while slashes < bytes.len() && bytes[slashes] == b'/' {
        slashes += 1;
    }
    let mut literal_end = slashes;
    while literal_end < bytes.len() && bytes[literal_end] != b'{' {
        literal_end += 1;
    }
    Route {
        method,
        template,
        slashes,
        literal_end,
    }
}

pub const LIKE: Route = route("POST", "/v1/likes");
pub const UNLIKE_DELETE: Route = route("DELETE", "/v1/likes");
pub const UNLIKE: Route = route("POST", "/v1/unlikes");
pub const LIKE_BATCH: Route = route("POST", "/v1/likes:batch");
pub const COUNTS: Route = route("GET", "/v1/counts");
pub const COUNT: Route = route("GET", "/v1/items/{item_type}/{item_id}/count");
pub const LIKERS: Route = route("GET", "/v1/items/{item_type}/{item_id}/likers");
pub const USER_LIKES: Route = route("GET", "/v1/users/{user_id}/likes/{item_type}/{item_id}");
pub const USER_LIKED_ITEMS: Route = route("GET", "/v1/users/{user_id}/likes");
pub const HEALTHZ: Route = route("GET", "/healthz");
pub const READYZ: Route = route("GET", "/readyz");
pub const METRICS: Route = route("GET", "/metrics");

/// Every route served.
pub const ALL: [Route; 12] = [
    LIKE,
    UNLIKE_DELETE,
    UNLIKE,
    LIKE_BATCH,
    COUNTS,
    COUNT,
    LIKERS,
    USER_LIKES,
    USER_LIKED_ITEMS,
    HEALTHZ,
    READYZ,
    METRICS,
];

impl Route {
    /// The values of the template's `{name}` segments in `path`, in order, or
    /// `None` when `path` does not match the template.
    pub fn matches(&self, path: &str) -> Option<Vec<String>> {
        let mut params = Vec::new();
        self.walk(path, |segment| params.push(segment.to_string()))
            .then_some(params)
    }

    /// Whether `path` matches the template, extracting nothing: the metrics
    /// label every response with its route, and allocating the segments
    /// there would be waste.
    pub fn matches_path(&self, path: &str) -> bool {
        self.walk(path, |_| {})
    }

    /// Walks `path` against the template, handing each `{name}` segment's
    /// value to `param`; whether the whole path matched.
    ///
    /// Every request is matched against routes until one fits (and once more
    /// for its metrics label), so most calls are mismatches: the template's
    /// literal start is compared as one slice first, which decides them, and
    /// only a path that passes it is split into segments.
    fn walk<'p>(&self, path: &'p str, mut param: impl FnMut(&'p str)) -> bool {
        let literal = &self.template[self.slashes..self.literal_end];
        let Some(rest) = path.trim_start_matches('/').strip_prefix(literal) else {
            return false;
        };
        let template_rest = &self.template[self.literal_end..];
        if template_rest.is_empty() {
            return rest.is_empty();
        }
        let mut wanted = template_rest.split('/');
        let mut given = rest.split('/');
        loop {
            match (wanted.next(), given.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => param(g),
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    }
}

/// The position in [`ALL`] of the first route whose template `path` matches,
/// whatever the method: the metrics label a request with that route's
/// template (a fixed, small set of values, never an id).
pub fn index_of(path: &str) -> Option<usize> {
    ALL.iter().position(|r| r.matches_path(path))
}

/// Matches `route`'s path and method and extracts its `{name}` segments.
/// Either mismatch is "not found", the rejection every other route gives
/// too, so a route that did match (a body too large, an invalid field) keeps
/// its own answer when the routes are combined; [`unserved`], last in the
/// chain, turns a known path with an unknown method into 405.
///
/// Not boxed: every request passes through the routes before its own, and a
/// boxed filter allocates its future on every pass.
pub fn on(route: Route) -> impl Filter<Extract = (Vec<String>,), Error = warp::Rejection> + Copy {
    warp::path::full().and(warp::method()).and_then(
        move |path: warp::path::FullPath, method: Method| {
            std::future::ready(match route.matches(path.as_str()) {
                Some(params) if method.as_str() == route.method => Ok(params),
                _ => Err(warp::reject::not_found()),
            })
        },
    )
}

/// The last route of the chain: a path some route serves, asked with a method
/// none serves it with, is 405; anything else stays "not found" (404, or the
/// answer of the route that did match).
pub fn unserved() -> BoxedFilter<(warp::reply::Response,)> {
    warp::path::full()
        .and(warp::method())
        .and_then(|path: warp::path::FullPath, method: Method| async move {
            let path = path.as_str();
            let known = ALL.iter().any(|r| r.matches_path(path));
            let served = ALL
                .iter()
                .any(|r| r.method == method.as_str() && r.matches_path(path));
            Err::<warp::reply::Response, _>(if known && !served {
                warp::reject::custom(ApiError::MethodNotAllowed)
            } else {
                warp::reject::not_found()
            })
        })
        .boxed()
}

/// [`on`] for a route without `{name}` segments.
pub fn at(route: Route) -> impl Filter<Extract = (), Error = warp::Rejection> + Copy {
    on(route).map(|_: Vec<String>| ()).untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_matches_whole_paths_and_names_its_segments() {
        assert_eq!(
            COUNT.matches("/v1/items/1/42/count"),
            Some(vec!["1".into(), "42".into()])
        );
        assert_eq!(COUNT.matches("/v1/items/1/42/count/x"), None);
        assert_eq!(COUNT.matches("/v1/items/1//count"), None);
        assert_eq!(LIKE.matches("/v1/likes"), Some(vec![]));
        assert_eq!(LIKE.matches("/v1/likes:batch"), None);
        assert_eq!(LIKE_BATCH.matches("/v1/likes:batch"), Some(vec![]));
        assert_eq!(HEALTHZ.matches("/healthz/"), None);
    }

    /// The segment-by-segment match, kept as the reference the literal-first
    /// [`Route::walk`] must agree with.
    fn by_segments(route: &Route, path: &str) -> Option<Vec<String>> {
        let mut wanted = route.template.trim_start_matches('/').split('/');
        let mut given = path.trim_start_matches('/').split('/');
        let mut params = Vec::new();
        loop {
            match (wanted.next(), given.next()) {
                (None, None) => return Some(params),
                (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => {
                    params.push(g.to_string())
                }
                (Some(w), Some(g)) if w == g => {}
                _ => return None,
            }
        }
    }

    #[test]
    fn the_literal_first_match_agrees_with_matching_segment_by_segment() {
        let segments = [
            "",
            "v1",
            "likes",
            "likes:batch",
            "unlikes",
            "items",
            "users",
            "1",
            "42",
            "count",
            "counts",
            "likers",
            "healthz",
            "metrics",
            "x",
        ];
        let mut paths = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|p| segments.iter().map(move |s| format!("{p}/{s}")))
                .collect();
            paths.extend(last.iter().cloned());
        }
        // Every route's own path (its `{name}`s filled), and near misses.
        for route in ALL {
            let filled = route.template.replace("{item_type}", "1");
            let filled = filled.replace("{item_id}", "42").replace("{user_id}", "7");
            paths.extend([
                filled.clone(),
                format!("/{filled}"),
                format!("{filled}/"),
                filled.trim_start_matches('/').to_string(),
                filled.replace("/42", "/"),
            ]);
        }
        let mut matched = [0; ALL.len()];
        for path in &paths {
            for (route, matched) in ALL.iter().zip(&mut matched) {
                let expected = by_segments(route, path);
                *matched += usize::from(expected.is_some());
                assert_eq!(route.matches(path), expected, "{route:?} on {path:?}");
                assert_eq!(route.matches_path(path), expected.is_some());
            }
        }
        // Every route matched some path, so the agreement is not only on misses.
        assert!(matched.iter().all(|&n| n > 0), "{matched:?}");
    }

    #[test]
    fn ids_never_become_label_values() {
        let route_of = |path: &str| index_of(path).map(|i| ALL[i]);
        assert_eq!(route_of("/v1/users/42/likes/1/7"), Some(USER_LIKES));
        assert_eq!(route_of("/v1/users/42/likes"), Some(USER_LIKED_ITEMS));
        assert_eq!(route_of("/v1/whatever/99"), None);
    }
}
