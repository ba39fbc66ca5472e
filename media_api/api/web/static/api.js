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

/** Tell the page its credential was refused (a request outside `api()` got a 401). */
export function refusedCredential() {
  unauthorized();
}

export function authHeaders() {
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

// ---- uploads: tus 1.0.0 through tus-js-client (window.tus, /static/tus.min.js) --------------

const TUS_ENDPOINT = "/v1/uploads/tus";
// One S3 part per PATCH at the server's default part size (MEDIA_S3_MULTIPART_CHUNK_BYTES).
export const CHUNK_BYTES = 8 * 1024 * 1024;
// Answers after which the server keeps nothing to resume (a 401, 409 or 423 is not one).
const REFUSED_FOR_GOOD = new Set([400, 404, 410, 413, 415, 422]);

/** The problem+json a tus request was answered with, as an ApiError (status 0: no answer). */
function tusError(error) {
  const response = error.originalResponse;
  const status = response ? response.getStatus() : 0;
  if (!response || status === 0) {
    return new ApiError(0, { title: "Upload failed", detail: "the connection was lost" });
  }
  let problem;
  try {
    problem = JSON.parse(response.getBody());
  } catch {
    problem = {};
  }
  if (!problem.title) problem = { title: `HTTP ${status}` };
  return new ApiError(status, problem);
}

/** One file sent with tus: resumable after a network drop (by itself, once the browser is
 *  online again), after a failure (`run()` again) and after a reload (`previous()`, then
 *  `run(previous)` once the same file is picked again). `scope` keeps one account's
 *  unfinished uploads from being offered to another. */
export class ResumableUpload {
  constructor(file, { scope, galleryId, signal, onProgress, onWaiting }) {
    this.signal = signal;
    this.onWaiting = onWaiting; // (true) offline, waiting for the network; (false) going on
    this.finished = true;
    const metadata = { filename: file.name };
    if (galleryId) metadata.gallery_id = galleryId;
    this.upload = new tus.Upload(file, {
      endpoint: TUS_ENDPOINT,
      headers: authHeaders(),
      chunkSize: CHUNK_BYTES,
      retryDelays: [0, 1000, 3000, 5000],
      removeFingerprintOnSuccess: true,
      metadata,
      fingerprint: async (f) => ["media", await scope, f.name, f.type, f.size, f.lastModified]
        .join("-"),
      onProgress: (sent, total) => onProgress(total ? sent / total : 0),
      onSuccess: ({ lastResponse }) => this.succeeded(lastResponse),
      onError: (error) => this.failed(error),
    });
    this.resumeOnline = () => this.restart();
    signal.addEventListener("abort", () => this.cancel(), { once: true });
  }

  /** Unfinished uploads of this file stored by an earlier page (newest first). */
  async previous() {
    const found = await this.upload.findPreviousUploads();
    return found.sort((a, b) => Date.parse(b.creationTime) - Date.parse(a.creationTime));
  }

  /** Start, or go on (from `previous`, one of `previous()`, or after a failure) where the
   *  server says it stopped. Settles with the image id, or an ApiError (`retryable` when
   *  running it again may succeed). */
  run(previous = null) {
    const done = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.finished = false;
    if (previous) this.upload.resumeFromPreviousUpload(previous);
    this.upload.start();
    return done;
  }

  /** Forget unfinished uploads of this file and give their bytes back (the user starts over). */
  async discard(previous) {
    const options = { headers: authHeaders(), retryDelays: [] };
    for (const entry of previous) {
      await tus.Upload.terminate(entry.uploadUrl, options).catch(() => {}); // gone already
      await this.upload.options.urlStorage.removeUpload(entry.urlStorageKey);
    }
  }

  restart() {
    window.removeEventListener("online", this.resumeOnline);
    if (this.finished || this.signal.aborted) return;
    this.onWaiting(false);
    this.upload.start(); // HEAD, then on from the server's offset
  }

  cancel() {
    window.removeEventListener("online", this.resumeOnline);
    if (this.finished) return;
    this.finished = true;
    // Terminated on the server too: its bytes stop counting against the quota at once.
    this.upload.abort(true).catch(() => {});
    this.reject(new ApiError(0, { title: "Upload cancelled" }));
  }

  succeeded(response) {
    this.finished = true;
    const id = response && response.getHeader("Media-Image-Id");
    if (id) this.resolve(id);
    else this.reject(new ApiError(0, { title: "Upload failed", detail: "no image id came back" }));
  }

  async failed(error) {
    // tus-js-client does not retry while the browser is offline: wait for the network.
    if (!navigator.onLine && !this.finished) {
      window.addEventListener("online", this.resumeOnline);
      this.onWaiting(true);
      return;
    }
    this.finished = true;
    const problem = tusError(error);
    if (problem.status === 401) unauthorized();
    problem.retryable = !REFUSED_FOR_GOOD.has(problem.status);
    if (!problem.retryable) {
      // Nothing to resume later.
      for (const entry of await this.previous().catch(() => [])) {
        await this.upload.options.urlStorage.removeUpload(entry.urlStorageKey);
      }
    }
    this.reject(problem);
  }
}
