// The REST API client. Rules: every call goes to /api/v1 on this origin with the JWT from
// sessionStorage; a failed call throws ApiError carrying the API's {error, code, message}; a
// 401 on an authenticated call logs the user out (the token expired or was revoked).

const TOKEN = "oba.token";
const DN = "oba.dn";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  token: () => sessionStorage.getItem(TOKEN),
  dn: () => sessionStorage.getItem(DN),
  save(token, dn) {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(DN, dn);
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(DN);
  },
};

export const enc = encodeURIComponent;

export function query(params) {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => `${enc(k)}=${enc(v)}`);
  return parts.length ? `?${parts.join("&")}` : "";
}

async function send(method, path, body) {
  const headers = {};
  const token = session.token();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    return await fetch(`/api/v1${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "network_error", `cannot reach the server (${err.message})`);
  }
}

async function fail(res, path) {
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  const message = data && typeof data.message === "string"
    ? data.message : `the server answered HTTP ${res.status}`;
  if (res.status === 401 && session.token() && path !== "/auth/bind") {
    session.clear();
    window.dispatchEvent(new Event("oba:logout"));
  }
  return new ApiError(res.status, (data && (data.error || data.code)) || "http_error", message);
}

/** JSON call; resolves to the parsed body (null for 204). */
export async function api(method, path, body) {
  const res = await send(method, path, body);
  if (!res.ok) throw await fail(res, path);
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/** Raw text call (exports). */
export async function apiText(path) {
  const res = await send("GET", path);
  if (!res.ok) throw await fail(res, path);
  return res.text();
}

export const get = (path) => api("GET", path);

let publicConfig = null;

export async function baseDN() {
  if (!publicConfig) publicConfig = await api("GET", "/config/public");
  return publicConfig.baseDN || "";
}

export function entryPath(dn) {
  return `/entries/${enc(dn)}`;
}

export async function search(base, scope, filter, attributes, limit = 1000, offset = 0) {
  return api("GET", `/search${query({ baseDN: base, scope, filter, attributes, limit, offset })}`);
}
