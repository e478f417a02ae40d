// The console speaks only the public REST API (docs/api.md), with the same bearer token as any automation.
// The token is kept in sessionStorage: it survives a reload of the tab but not the closing of the browser.

const KEY = 'bulkhead.token';
const BASE = '/api/v1';

/** An API error: HTTP status, the API's error code, its message and `details` ([{path, message}]). */
export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

const listeners = new Set();
/** `fn()` is called when the API answers 401 (token missing, wrong or rotated away). */
export function onUnauthorized(fn) {
  listeners.add(fn);
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}

/**
 * One request. Returns {data, etag, status}. `etag` is sent as If-Match; `query` is an object of parameters
 * (empty values left out). Throws ApiError for any non-2xx answer and for network failures (status 0).
 */
export async function request(method, path, { body, etag, query, authToken } = {}) {
  let url = path.startsWith('/') && !path.startsWith(BASE) && path !== '/metrics' ? BASE + path : path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
    const s = q.toString();
    if (s) url += `?${s}`;
  }
  const headers = { Accept: 'application/json' };
  const t = authToken ?? token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (etag) headers['If-Match'] = etag;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach bulkhead-control (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    if (res.status === 401 && !authToken) listeners.forEach((fn) => fn());
    throw new ApiError(res.status, err.code || `http_${res.status}`,
      err.message || `${method} ${url}: HTTP ${res.status}`, err.details || []);
  }
  return { data, etag: res.headers.get('ETag'), status: res.status };
}

let rights = new Set();
/** The caller's rights (from GET /whoami): the console hides what the role cannot do; the API enforces it. */
export function setRights(list) {
  rights = new Set(list || []);
}
export function can(right) {
  return rights.has(right);
}

export const get = (path, query) => request('GET', path, { query }).then((r) => r.data);
