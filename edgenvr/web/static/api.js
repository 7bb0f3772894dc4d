// The one way the UI talks to the box: JSON in and out, the session's CSRF token on every request that
// changes something, and a 401 anywhere sends the user back to sign-in.

let csrfToken = null;

export function setCsrfToken(token) {
  csrfToken = token || null;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Raised on window when the box says the session is gone; app.js shows sign-in. */
export const SIGNED_OUT_EVENT = "edgenvr:signed-out";

/**
 * api("/api/cameras") -> parsed JSON. Options: method, body (sent as JSON), signal, raw (return the
 * Response itself, for downloads and headers). Errors become ApiError(status, the server's `error` text).
 */
export async function api(path, { method = "GET", body, signal, raw = false, headers = {} } = {}) {
  const sent = { Accept: "application/json", ...headers };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) sent["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method, signal, headers: sent, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "");   // no answer at all: the box or the network is down
  }
  if (!response.ok) {
    const message = await errorText(response);
    if (response.status === 401 && path !== "/api/login") {
      window.dispatchEvent(new CustomEvent(SIGNED_OUT_EVENT, { detail: message }));
    }
    throw new ApiError(response.status, message);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/** The `error` of a JSON error answer; "" when there is none (a HEAD answer has no body). */
export async function errorText(response) {
  try {
    const data = await response.json();
    return typeof data?.error === "string" ? data.error : "";
  } catch {
    return "";
  }
}

export const cameraPath = (camera) => `/api/cameras/${encodeURIComponent(camera)}`;

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
