// The server's API as the console calls it: same origin, the session cookie, and the header
// that marks the console's own unsafe requests (the server refuses cookie-authenticated
// POST/PUT/DELETE without it, so another site's form cannot act with an operator's cookie).

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** Listeners told when the server says the session is gone (401). */
const signedOut = new Set();
export function onSignedOut(fn) {
  signedOut.add(fn);
}

export async function api(method, path, body, { quiet401 = false, raw = false } = {}) {
  const headers = {};
  if (method !== "GET" && method !== "HEAD") headers["X-Patrol-Request"] = "1";
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", `The server cannot be reached (${e.message}).`);
  }
  if (response.status === 204) return null;
  if (raw && response.ok) return response;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => ({})) : await response.text();
  if (!response.ok) {
    if (response.status === 401 && !quiet401) for (const fn of signedOut) fn();
    const retry = Number(response.headers.get("retry-after")) || undefined;
    throw new ApiError(response.status, data?.error, data?.message, retry);
  }
  return data;
}

/** `/api/v1/sites/{site}` followed by `rest`. */
export function sitePath(site, rest = "") {
  return `/api/v1/sites/${encodeURIComponent(site)}${rest}`;
}

/** A query string of the non-empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}
