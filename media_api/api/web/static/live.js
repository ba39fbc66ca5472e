// The owner's live events (GET /v1/events as Server-Sent Events). EventSource cannot send an
// Authorization header, so the stream is read with fetch(). It resumes after the last event it
// saw (Last-Event-ID), and says when it is up and when it is down, so the page can poll meanwhile.

import { authHeaders, refusedCredential } from "./api.js";

// Twice the server's heartbeat (MEDIA_SSE_HEARTBEAT_SECONDS, 15 s by default) without a byte:
// the connection is dead even if no error says so (a proxy, a sleeping laptop).
const HEARTBEAT_MS = 15_000;
const BACKOFF_MS = [1000, 2000, 5000, 10_000, 30_000];

/** An SSE parser: feed it decoded text as it comes; it calls `onMessage({event, id, data})` at
 *  each blank line and `onComment()` for `:` lines (heartbeats). Lines may end in CRLF, LF or
 *  CR, and a chunk may end anywhere, even between the CR and the LF. */
export function sseParser(onMessage, onComment = () => {}) {
  let buffer = "";
  let data = [];
  let event = "";
  let id = null;

  function line(text) {
    if (text === "") {
      if (data.length) onMessage({ event: event || "message", id, data: data.join("\n") });
      data = [];
      event = "";
      return;
    }
    if (text.startsWith(":")) {
      onComment();
      return;
    }
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id" && !value.includes("\0")) id = value;
  }

  return (chunk) => {
    buffer += chunk;
    // A trailing CR may be the first half of a CRLF: keep it until the next chunk.
    const end = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
    const lines = buffer.slice(0, end).split(/\r\n|\r|\n/);
    buffer = lines.pop() + buffer.slice(end);
    for (const text of lines) line(text);
  };
}

/** The stream, reconnected with a backoff until `signal` aborts (signed out).
 *  onEvent({type, timestamp, data, id}); onUp({resumed}) once a connection is answered with
 *  200 (`resumed`: it went on from an event seen before, so nothing was missed); onDown() once
 *  a connection failed or dropped. */
export class LiveEvents {
  constructor({ signal, onEvent, onUp, onDown }) {
    Object.assign(this, { signal, onEvent, onUp, onDown });
    this.lastId = null;
    this.failures = 0;
    this.up = false;
    this.timer = null; // the next attempt, while waiting for it
    this.connection = null; // aborts the connection in use
    // Offline: the connection is as good as gone (a sleeping laptop, a lost network); online
    // again: reconnect now rather than at the end of the backoff.
    const offline = () => this.connection?.abort();
    const online = () => {
      if (this.timer === null) return;
      clearTimeout(this.timer);
      this.timer = null;
      this.connect();
    };
    window.addEventListener("offline", offline);
    window.addEventListener("online", online);
    signal.addEventListener("abort", () => {
      clearTimeout(this.timer);
      window.removeEventListener("offline", offline);
      window.removeEventListener("online", online);
    }, { once: true });
  }

  /** Connect; settles once the first attempt is up or has failed. */
  start() {
    return this.connect();
  }

  async connect() {
    if (this.signal.aborted) return;
    const connection = new AbortController();
    this.connection = connection;
    const stop = () => connection.abort();
    this.signal.addEventListener("abort", stop, { once: true });
    const resumed = this.lastId !== null;
    try {
      const resp = await this.open(connection.signal);
      if (resp === null) return; // refused credential: the page signs out
      this.up = true;
      this.onUp({ resumed });
      // Not awaited: the caller learns the stream is up; reading goes on in the background.
      this.read(resp, connection).finally(() => {
        this.signal.removeEventListener("abort", stop);
        this.dropped();
      });
    } catch {
      this.signal.removeEventListener("abort", stop);
      this.dropped();
    }
  }

  /** The answered stream, or null on a 401; throws on anything but a 200 event stream. */
  async open(signal) {
    const headers = { ...authHeaders(), Accept: "text/event-stream" };
    if (this.lastId !== null) headers["Last-Event-ID"] = this.lastId;
    const resp = await fetch("/v1/events", { headers, signal, cache: "no-store" });
    const type = resp.headers.get("Content-Type") || "";
    if (resp.status === 200 && type.startsWith("text/event-stream")) return resp;
    resp.body?.cancel().catch(() => {});
    if (resp.status === 401) {
      refusedCredential();
      return null;
    }
    throw new Error(`the event stream answered ${resp.status}`);
  }

  async read(resp, connection) {
    let watchdog = null;
    const alive = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => connection.abort(), 2 * HEARTBEAT_MS);
    };
    const parse = sseParser((message) => this.message(message), () => {
      this.failures = 0; // a heartbeat: this connection works
    });
    alive();
    try {
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        alive();
        parse(value);
      }
    } catch {
      // cut, or given up by the watchdog: reconnect below
    } finally {
      clearTimeout(watchdog);
    }
  }

  message({ id, data }) {
    if (id !== null) this.lastId = id;
    this.failures = 0;
    let body;
    try {
      body = JSON.parse(data);
    } catch {
      return; // not one of ours
    }
    this.onEvent({ ...body, id });
  }

  dropped() {
    if (this.signal.aborted) return;
    if (this.up || this.failures === 0) this.onDown();
    this.up = false;
    const wait = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    // Jitter: a restarted server is not met by every page at the same instant.
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, wait * (0.75 + Math.random() / 2));
  }
}
