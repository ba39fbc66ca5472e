// The /v1 API as the page uses it. The credential (a JWT from sign-in, or an API key; both are
// bearer tokens) lives in sessionStorage: it is gone when the tab closes and is never a cookie,
// so no request can carry it without this script asking.

const CREDENTIAL = "media.credential";

export const credential = {
  get: () => sessionStorage.getItem(CREDENTIAL),
  set: (token) => sessionStorage.setItem(CREDENTIAL, token),
  clear: () => sessionStorage.removeItem(CREDENTIAL),
};

/** A failed request, carrying the problem+json body (title, detail, code). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || null;
    this.detail = problem.detail && problem.detail !== problem.title ? problem.detail : "";
    // A validation problem lists its fields: say which one, in the field's own words.
    const fields = (problem.errors || []).map((e) => `${e.loc[e.loc.length - 1]}: ${e.msg}`);
    if (fields.length) this.detail = fields.join("; ");
  }
}

let unauthorized = () => {};

/** Called when the server stops accepting the credential (expired token, revoked key). */
export function onUnauthorized(callback) {
  unauthorized = callback;
}

function authHeaders() {
  const token = credential.get();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function problemOf(resp) {
  try {
    return await resp.json();
  } catch {
    return { title: resp.statusText || `HTTP ${resp.status}` };
  }
}

/** JSON request; `form` sends application/x-www-form-urlencoded (the OAuth2 token route). */
export async function api(path, { method = "GET", json, form, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = new URLSearchParams(form);
  }
  const resp = await fetch(url, { method, headers, body });
  if (resp.status === 401 && headers.Authorization) unauthorized();
  if (!resp.ok) throw new ApiError(resp.status, await problemOf(resp));
  return resp.status === 204 ? null : resp.json();
}

/** Multipart upload with progress: fetch() cannot report upload progress, XHR can.
 *  `signal` (an AbortSignal) cancels it, e.g. on sign-out. */
export function uploadFile(file, { galleryId, onProgress, signal }) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.addEventListener("abort", () => {
      reject(new ApiError(0, { title: "Upload cancelled" }));
    });
    xhr.open("POST", "/v1/images");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      const body = xhr.response || {};
      if (xhr.status === 200 || xhr.status === 201) {
        resolve({ image: body, created: xhr.status === 201 });
        return;
      }
      if (xhr.status === 401) unauthorized();
      reject(new ApiError(xhr.status, body.title ? body : { title: `HTTP ${xhr.status}` }));
    });
    xhr.addEventListener("error", () => {
      // The server may close the connection as soon as it knows the answer (a body over the
      // size limit), before the browser could read the response.
      reject(new ApiError(0, { title: "Upload failed", detail: "the connection was closed" }));
    });
    const data = new FormData();
    data.append("file", file, file.name);
    if (galleryId) data.append("gallery_id", galleryId);
    xhr.send(data);
  });
}
