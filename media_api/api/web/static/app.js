// The gallery page: sign-in, resumable uploads (tus) with progress, the thumbnail grid (keyset
// pages through `next_cursor`), filters and galleries, kept up to date by the owner's live
// events (a poller stands in while the stream is down). Everything goes through the public /v1 API.

import { ApiError, ResumableUpload, api, credential, onUnauthorized } from "./api.js";
import { placeholder } from "./blurhash.js";
import { announce, el, imageLabel, plural, variantImage } from "./dom.js";
import { LiveEvents } from "./live.js";
import { openViewer, setupViewer } from "./viewer.js";

const PAGE_SIZE = 24;
const PARALLEL_UPLOADS = 3;
const POLL_MS = 1500;
const POLL_LIMIT_MS = 10 * 60 * 1000;
const CLOCK_SKEW_MS = 60 * 1000; // between this browser and the server
const STREAM_WAIT_MS = 3000; // at most this long for the stream before the first listing
const CREATED_WAIT_MS = 1500; // for an upload's image.created after its response

const $ = (id) => document.getElementById(id);

// The grid's order for this tab (sessionStorage, like the credential; gone on sign-out).
const SORT_KEY = "media.sort";
const SORTS = ["created_at", "taken_at"];
const sortChoice = {
  get: () => (SORTS.includes(sessionStorage.getItem(SORT_KEY)) ? sessionStorage.getItem(SORT_KEY)
    : "created_at"),
  set: (sort) => sessionStorage.setItem(SORT_KEY, sort),
  clear: () => sessionStorage.removeItem(SORT_KEY),
};

const view = {
  filters: { tag: "", gallery: "", sort: sortChoice.get() },
  listed: null, // the filters of the listing on show: its cursor is only good with them
  cursor: null,
  total: 0,
  loading: false,
  generation: 0, // bumps on every reload, so a stale page never lands in a new grid
  settled: true, // the grid shows the server's order since the last batch of uploads
  galleries: [],
  // One per signed-in session: aborting it cancels that session's uploads, and work that
  // finishes later sees it is no longer current and touches nothing.
  session: new AbortController(),
  account: null, // the signed-in account (a promise): scopes the uploads kept for resuming
  fromLink: false, // signed in from a `#key=` link: say as whom
};

// ---- sign-in -------------------------------------------------------------------------------

function showSignIn(message = "") {
  // Nothing of the last account stays on the page for the next one.
  view.session.abort();
  view.session = new AbortController();
  view.generation += 1;
  sortChoice.clear();
  Object.assign(view, {
    filters: { tag: "", gallery: "", sort: "created_at" },
    listed: null,
    cursor: null,
    total: 0,
    galleries: [],
  });
  queue.length = 0;
  watched.clear();
  tileSince.clear();
  live.up = false;
  live.created.clear();
  live.finished.clear();
  $("grid").replaceChildren();
  $("uploads").replaceChildren();
  $("filters").reset();
  $("gallery").replaceChildren(el("option", { value: "" }, "All images"));
  $("more").hidden = true;
  announce("");
  if ($("viewer").open) $("viewer").close();
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("count").textContent = "";
  $("account").textContent = "";
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("email").focus();
}

async function showApp({ focus = false } = {}) {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("signin-error").textContent = "";
  if (focus) $("main").focus(); // the form that had the focus is gone
  const session = view.session;
  view.account = api("/v1/auth/me");
  view.account.catch(() => {}); // reported below
  try {
    const account = await view.account;
    if (session !== view.session) return;
    // The stream first: what changes after the listing is read then comes as events.
    await startLive(session);
    if (session !== view.session) return;
    $("account").textContent = `Signed in as ${account.email}`;
    if (view.fromLink) announce(`Signed in with the key from the link as ${account.email}.`);
    view.fromLink = false;
    await loadGalleries();
    await reload();
  } catch (error) {
    // A refused credential has already sent us back to the sign-in form.
    if (!(error instanceof ApiError && error.status === 401)) {
      announce(`Could not load your images: ${explain(error)}`, { error: true });
    }
  }
}

async function signIn(email, password) {
  const token = await api("/v1/auth/token", {
    method: "POST",
    form: { username: email, password },
  });
  credential.set(token.access_token);
}

function explain(error) {
  return error.detail ? `${error.message}: ${error.detail}` : error.message;
}

function setupSignIn() {
  const form = $("signin-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn($("email").value, $("password").value);
      form.reset();
      await showApp({ focus: true });
    } catch (error) {
      $("signin-error").textContent = explain(error);
    }
  });
  $("signup").addEventListener("click", async () => {
    if (!form.reportValidity()) return;
    const email = $("email").value;
    const password = $("password").value;
    try {
      await api("/v1/auth/signup", { method: "POST", json: { email, password } });
      await signIn(email, password);
      form.reset();
      await showApp({ focus: true });
      announce(`Account created for ${email}.`);
    } catch (error) {
      $("signin-error").textContent = explain(error);
    }
  });
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    credential.set($("api-key").value.trim());
    try {
      await api("/v1/images", { query: { limit: 1 } }); // is the key good?
      $("key-form").reset();
      await showApp({ focus: true });
    } catch (error) {
      credential.clear();
      $("signin-error").textContent = explain(error);
    }
  });
  $("sign-out").addEventListener("click", () => {
    credential.clear();
    showSignIn();
  });
  onUnauthorized(() => {
    credential.clear();
    showSignIn("You were signed out (the token expired or the key was revoked).");
  });
}

/** `make dev` prints /#key=...: a fragment never reaches the server or its logs. Only taken
 *  where the server allows it (MEDIA_WEB_KEY_LINKS): elsewhere a link could sign a visitor
 *  into somebody else's account without a word. */
function takeKeyFromFragment() {
  const key = new URLSearchParams(location.hash.slice(1)).get("key");
  if (!key) return "";
  history.replaceState(null, "", location.pathname + location.search); // out of sight
  if (!document.querySelector('meta[name="media-key-links"][content="on"]')) {
    return "Sign-in links are turned off on this server: sign in, or paste the key below.";
  }
  credential.set(key);
  view.fromLink = true;
  return "";
}

// ---- grid ----------------------------------------------------------------------------------

function showCount() {
  const { tag, gallery } = view.filters;
  let text = plural(view.total, "image");
  if (tag) text += ` tagged “${tag}”`;
  const named = view.galleries.find((g) => g.id === gallery);
  if (named) text += ` in ${named.name}`;
  $("count").textContent = text;
  $("empty").hidden = view.total > 0;
}

function tile(image) {
  const thumb = image.variants.find((v) => v.name === "thumb");
  const label = imageLabel(image);
  const button = el("button", {
    type: "button",
    class: "tile-button",
    "aria-label": image.status === "ready" ? label : `${label} (${image.status})`,
    onclick: (event) => openViewer(image.id, event.currentTarget),
  });
  const hash = placeholder(image.placeholder);
  if (hash) button.append(hash);
  if (thumb) {
    const img = variantImage(thumb);
    img.addEventListener("load", () => img.classList.add("loaded"));
    img.addEventListener("error", () => renewUrls(image.id), { once: true });
    button.append(img);
  } else {
    button.append(el("span", { class: "tile-name" }, label));
  }
  const item = el("li", {
    class: "tile",
    "data-id": image.id,
    "data-status": image.status,
    "data-variants": image.variants.length,
    "data-label": label,
  }, button);
  if (image.status !== "ready") {
    item.append(el("span", { class: `badge ${image.status}` }, image.status));
  }
  return item;
}

/** Signed URLs expire; a tile whose thumbnail fails to load asks for fresh ones once. */
async function renewUrls(id) {
  try {
    upsert(await api(`/v1/images/${id}`), { prepend: false, force: true });
  } catch {
    // gone or unreachable: leave the tile as it is
  }
}

function findTile(id) {
  return $("grid").querySelector(`li[data-id="${CSS.escape(id)}"]`);
}

/** Replace an image's tile in place, or add it (a new upload goes first: newest first). */
function upsert(image, { prepend, force = false }) {
  const existing = findTile(image.id);
  // Same state, variants and name: keep the tile (fresh URLs would make the browser fetch again).
  const unchanged = existing && existing.dataset.status === image.status
    && existing.dataset.variants === String(image.variants.length)
    && existing.dataset.label === imageLabel(image);
  if (unchanged && !force) return;
  if (existing) {
    const focused = existing.contains(document.activeElement);
    const fresh = tile(image);
    existing.replaceWith(fresh);
    if (focused) fresh.querySelector("button").focus();
  } else if (prepend && view.filters.sort !== "taken_at") {
    // By date taken a new image's place is not known here (likely the end): the next load has it.
    $("grid").prepend(tile(image));
    view.total += 1;
    showCount();
  }
}

function remove(id) {
  const existing = findTile(id);
  if (existing) {
    existing.remove();
    view.total = Math.max(0, view.total - 1);
    showCount();
  }
}

async function fetchPage(cursor, filters) {
  const { tag, gallery, sort } = filters;
  return api("/v1/images", {
    query: {
      limit: PAGE_SIZE,
      cursor,
      sort: sort === "created_at" ? undefined : sort, // the API's default
      tag,
      gallery_id: gallery,
      include_total: cursor ? undefined : "true",
    },
  });
}

function setBusy(busy) {
  view.loading = busy;
  $("grid").setAttribute("aria-busy", String(busy));
}

function appendPage(page) {
  $("grid").append(...page.items.map(tile));
  view.cursor = page.next_cursor;
  $("more").hidden = !view.cursor;
  const processing = page.items.filter((image) => image.status === "processing");
  if (!live.up && processing.length) startPolling();
  // Finished while this page was on its way: the event came before the tile.
  for (const image of processing) if (live.finished.has(image.id)) refreshImage(image.id);
}

async function reload() {
  const generation = ++view.generation;
  const filters = { ...view.filters };
  setBusy(true);
  try {
    const page = await fetchPage(null, filters);
    if (generation !== view.generation) return;
    view.listed = filters;
    $("grid").replaceChildren();
    view.total = page.total ?? page.items.length;
    showCount();
    appendPage(page);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      announce(`Could not load images: ${explain(error)}`, { error: true });
    }
  } finally {
    if (generation === view.generation) setBusy(false);
  }
}

async function more() {
  if (!view.cursor || view.loading) return;
  const generation = view.generation;
  setBusy(true);
  try {
    const page = await fetchPage(view.cursor, view.listed);
    if (generation === view.generation) appendPage(page);
  } catch (error) {
    announce(`Could not load more images: ${explain(error)}`, { error: true });
  } finally {
    if (generation === view.generation) setBusy(false);
  }
}

function setupGrid() {
  $("more").addEventListener("click", more);
  // Infinite scroll; the button stays for keyboards and for browsers without the observer.
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) more();
  }, { rootMargin: "400px" }).observe($("sentinel"));
}

// ---- filters and galleries -----------------------------------------------------------------

async function loadGalleries() {
  const session = view.session;
  const items = [];
  let cursor = null;
  do {
    const page = await api("/v1/galleries", { query: { limit: 100, cursor } });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  if (session !== view.session) return; // signed out meanwhile
  view.galleries = items;
  const select = $("gallery");
  select.replaceChildren(
    el("option", { value: "" }, "All images"),
    ...items.map((g) => el("option", { value: g.id }, g.name)),
  );
  select.value = items.some((g) => g.id === view.filters.gallery) ? view.filters.gallery : "";
}

function applyFilters() {
  view.filters = { tag: $("tag").value.trim(), gallery: $("gallery").value, sort: $("sort").value };
  return reload();
}

function setupFilters() {
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });
  $("gallery").addEventListener("change", applyFilters);
  $("sort").value = view.filters.sort;
  $("sort").addEventListener("change", () => {
    sortChoice.set($("sort").value);
    applyFilters();
  });
  $("clear").addEventListener("click", () => {
    const sort = $("sort").value; // an order, not a filter: it stays
    $("filters").reset();
    $("sort").value = sort;
    applyFilters();
  });
  $("new-gallery").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("gallery-name").value.trim();
    if (!name) return;
    try {
      await api("/v1/galleries", { method: "POST", json: { name } });
      $("new-gallery").reset();
      await loadGalleries();
      announce(`Gallery ${name} created.`);
    } catch (error) {
      announce(`Could not create the gallery: ${explain(error)}`, { error: true });
    }
  });
}

// ---- uploads -------------------------------------------------------------------------------

const queue = [];
let running = 0;

function uploadRow(file) {
  const progress = el("progress", { max: 1, value: 0, "aria-label": `Uploading ${file.name}` });
  const status = el("span", { class: "status" }, "waiting");
  const actions = el("span", { class: "row actions", hidden: true });
  const row = el("li", { class: "upload", "data-state": "waiting" },
    el("span", { class: "name" }, file.name), progress, status, actions);
  $("uploads").prepend(row);
  const job = { file, row, progress, status, actions, previous: null };
  job.upload = new ResumableUpload(file, {
    scope: view.account.then((account) => account.id),
    galleryId: view.filters.gallery,
    signal: view.session.signal,
    onProgress: (fraction) => {
      job.progress.value = fraction;
    },
    onWaiting: (waiting) => {
      setState(job, "uploading", waiting ? "offline: waiting for the network" : "uploading");
    },
  });
  return job;
}

/** A file whose earlier upload did not finish (say, the page was reloaded) may go on from
 *  where the server stopped; the user says whether. */
async function offerResume(job) {
  const previous = await job.upload.previous();
  if (previous.length === 0) return enqueue(job);
  const when = new Date(previous[0].creationTime).toLocaleString();
  setState(job, "resumable", `unfinished upload from ${when}`);
  const choose = (resume) => async () => {
    job.actions.replaceChildren();
    job.actions.hidden = true;
    if (resume) job.previous = previous[0];
    else await job.upload.discard(previous);
    enqueue(job);
  };
  job.actions.replaceChildren(
    el("button", { type: "button", onclick: choose(true) }, "Resume"),
    el("button", { type: "button", class: "secondary", onclick: choose(false) }, "Start over"),
  );
  job.actions.hidden = false;
  job.actions.querySelector("button").focus();
  announce(`${job.file.name} was partly uploaded before: resume it, or start over.`);
}

function enqueue(job) {
  view.settled = false; // a reload is due once these are done
  setState(job, "waiting");
  queue.push(job);
  pump();
}

function setState(job, state, message = state) {
  job.row.dataset.state = state;
  job.status.textContent = message;
  if (state !== "uploading") job.progress.hidden = true;
}

// ---- processing: one poller for every image still being made ---------------------------------
// Uploads from this page and tiles still processing are all followed by one request a round
// (the owner's `status=processing` listing); an image's detail is fetched only once it has
// left that list. A batch of a hundred uploads costs what one does, well inside the rate limit.
// A finished upload gives only its image's id: the listing brings the rest, tile and all.

const watched = new Map(); // image id -> {job, since, fresh, started}: this page's uploads
let polling = false;
let wake = null; // cuts the poller's wait short

/** Follow the image an upload (begun at `started`) became: `fresh` until it is first seen. */
function follow(id, job, started) {
  const entry = { job, since: Date.now(), fresh: true, started };
  watched.set(id, entry);
  if (live.up) {
    followLive(id, entry);
    return;
  }
  startPolling();
  if (wake) wake(); // its tile is due now, not a round later
}

const tileSince = new Map(); // image id -> when its tile was first seen processing

/** Tiles to follow: processing, and not for longer than anyone waits (workers down). */
function processingTiles() {
  const now = Date.now();
  const ids = [...$("grid").querySelectorAll('li[data-status="processing"]')]
    .map((li) => li.dataset.id);
  for (const id of ids) if (!tileSince.has(id)) tileSince.set(id, now);
  return ids.filter((id) => now - tileSince.get(id) < POLL_LIMIT_MS);
}

/** A fresh upload's image seen for the first time: its row's state, and its tile first in the
 *  grid unless it was there before (the same bytes uploaded earlier). */
function arrived(image, entry) {
  entry.fresh = false;
  // One made before this upload began was a duplicate.
  const created = createdSince(image.id, entry.started) || (!findTile(image.id)
    && Date.parse(image.created_at) >= entry.started - CLOCK_SKEW_MS);
  setState(entry.job, image.status, created ? image.status : `${image.status} (already uploaded)`);
  if (!view.filters.tag) upsert(image, { prepend: created }); // no tags yet: cannot match
}

function settle(image) {
  const entry = watched.get(image.id);
  if (entry) {
    watched.delete(image.id);
    if (entry.fresh) arrived(image, entry);
    else setState(entry.job, image.status);
    if (image.status === "failed") {
      setState(entry.job, "failed", `failed: ${image.error_code}`);
      announce(`${imageLabel(image)} could not be processed: ${image.error_code}`);
    }
  }
  upsert(image, { prepend: false });
}

async function pollOnce() {
  for (const [id, entry] of watched) {
    // Signed out (the row is gone) or given up on: stop following it.
    if (!entry.job.row.isConnected || Date.now() - entry.since > POLL_LIMIT_MS) watched.delete(id);
  }
  const ids = new Set([...watched.keys(), ...processingTiles()]);
  if (ids.size === 0) return false;
  const page = await api("/v1/images", { query: { status: "processing", limit: 100 } });
  const still = new Map(page.items.map((item) => [item.id, item]));
  for (const [id, image] of still) {
    const entry = watched.get(id);
    if (entry && entry.fresh) arrived(image, entry);
  }
  // Over a hundred processing: one missing from the page may still be processing, so ask
  // about a few at a time rather than about all of them.
  let budget = page.next_cursor === null ? Infinity : 10;
  for (const id of ids) {
    if (still.has(id)) continue;
    if (budget-- <= 0) break;
    try {
      const image = await api(`/v1/images/${id}`);
      if (image.status !== "processing") settle(image);
      else if (watched.get(id)?.fresh) arrived(image, watched.get(id));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        watched.delete(id); // deleted meanwhile
        remove(id);
      }
    }
  }
  return true;
}

async function startPolling() {
  if (polling) return;
  polling = true;
  try {
    let busy = true;
    while (busy && !$("app").hidden && !live.up) {
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, POLL_MS);
      });
      wake = null;
      if (live.up) break; // the stream is back: it brings the changes from here on
      try {
        busy = await pollOnce();
      } catch {
        busy = true; // the API is away for a moment: the next round tries again
      }
      if (watched.size === 0) settled();
    }
  } finally {
    polling = false;
  }
}

// ---- live updates: the owner's event stream --------------------------------------------------
// While the stream is up, images are followed by their events: image.created puts an upload's
// tile in, image.ready and image.failed fetch the image's detail once. When the stream is down
// (not answered, cut, silent past two heartbeats) the poller above takes over until it is back.

const live = {
  up: false,
  created: new Map(), // image id -> when its image.created came (this browser's clock)
  finished: new Set(), // ids announced ready or failed (a listing on its way may be older)
};

/** Connect the session's stream; settles once it is up or has failed (or after a while). */
function startLive(session) {
  const stream = new LiveEvents({
    signal: session.signal,
    onEvent: (event) => {
      if (session === view.session) onLiveEvent(event);
    },
    onUp: ({ resumed }) => {
      live.up = true;
      // Started afresh: what happened while nothing listened is caught up by one round.
      if (!resumed) pollOnce().catch(() => {});
    },
    onDown: () => {
      live.up = false;
      if (session === view.session) startPolling();
    },
  });
  const waited = new Promise((resolve) => setTimeout(resolve, STREAM_WAIT_MS));
  return Promise.race([stream.start(), waited]);
}

function onLiveEvent({ type, data, timestamp }) {
  const id = data && data.image_id;
  if (!id) return;
  if (type === "image.created") liveCreated(id, data, timestamp);
  else if (type === "image.ready" || type === "image.failed") liveFinished(id, data.status);
  else if (type === "image.tagged") liveTagged(id, data);
  else if (type === "image.deleted") {
    watched.delete(id);
    remove(id);
    if (watched.size === 0) settled();
  }
}

/** A new image: its tile from the event itself (no variants yet), first in the grid. */
function liveCreated(id, data, timestamp) {
  live.created.set(id, Date.now());
  if (findTile(id)) return;
  const entry = watched.get(id);
  const mine = entry || running > 0; // this page's uploads go to the gallery on show
  // An event older than the page (a replay) is in the listing already, or was deleted.
  const recent = Date.parse(timestamp) >= pageStarted - CLOCK_SKEW_MS;
  const shown = !view.filters.tag && (!view.filters.gallery || mine);
  if (shown && recent) {
    upsert({ ...data, id, variants: [], placeholder: null, created_at: timestamp }, {
      prepend: true,
    });
  }
  if (entry && entry.fresh) {
    entry.fresh = false;
    setState(entry.job, data.status);
  }
}

function liveFinished(id, status) {
  live.finished.add(id);
  const existing = findTile(id);
  // Already shown so (a replay, or the poller got there first): nothing to fetch.
  if (!watched.has(id) && (!existing || existing.dataset.status === status)) return;
  refreshImage(id);
}

/** Tiles show no tags; under a tag filter, an image that now has the tag joins the grid. */
function liveTagged(id, data) {
  const wanted = view.filters.tag.toLowerCase();
  if (!wanted || findTile(id)) return;
  if ((data.tags || []).some((tag) => tag.name.toLowerCase() === wanted)) {
    api(`/v1/images/${id}`).then((image) => upsert(image, { prepend: true }), () => {});
  }
}

/** An upload's image while the stream is up: its image.created is usually in before the
 *  upload's response; a duplicate of an earlier image has none, so its detail is fetched. */
function followLive(id, entry) {
  const existing = findTile(id);
  const status = existing ? existing.dataset.status : null;
  const created = createdSince(id, entry.started);
  if (status === "processing" || status === "ready") {
    entry.fresh = false;
    setState(entry.job, status, created ? status : `${status} (already uploaded)`);
    if (status === "ready") watched.delete(id);
  } else if (status === "failed") {
    refreshImage(id); // for its error code
  } else if (created) {
    entry.fresh = false; // new, but not for this grid (a tag filter): its events settle it
    setState(entry.job, "processing");
  } else {
    setTimeout(() => {
      if (watched.get(id) === entry && entry.fresh && !findTile(id)) refreshImage(id);
    }, CREATED_WAIT_MS);
  }
  if (watched.size === 0) settled();
}

/** Did an upload begun at `started` create this image? A duplicate's upload creates none. */
function createdSince(id, started) {
  return (live.created.get(id) ?? -Infinity) >= started;
}

/** One image's detail, settling its upload row and tile. */
async function refreshImage(id) {
  try {
    const image = await api(`/v1/images/${id}`);
    if (image.status !== "processing") settle(image);
    else if (watched.get(id)?.fresh) arrived(image, watched.get(id));
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) return;
    watched.delete(id); // deleted meanwhile
    remove(id);
  }
  if (watched.size === 0) settled();
}

/** Nothing uploading or processing any more: show the server's order (and any new tags). */
function settled() {
  if (running === 0 && queue.length === 0 && watched.size === 0 && !view.settled) {
    view.settled = true;
    reload();
  }
}

async function runUpload(job) {
  const session = view.session;
  const started = Date.now();
  setState(job, "uploading", "uploading");
  job.progress.hidden = false;
  try {
    const id = await job.upload.run(job.previous);
    job.previous = null;
    if (session !== view.session) return; // signed out meanwhile: not this account's page
    setState(job, "uploaded", "uploaded");
    follow(id, job, started);
  } catch (error) {
    if (session !== view.session) return;
    const message = error instanceof ApiError ? explain(error) : String(error);
    setState(job, "failed", message);
    announce(`${job.file.name} was not uploaded: ${message}`, { error: true });
    if (error.retryable) offerRetry(job);
  }
}

/** A failure that may pass (no answer, a server error): going on is the user's call. */
function offerRetry(job) {
  const retry = () => {
    job.actions.replaceChildren();
    job.actions.hidden = true;
    enqueue(job);
  };
  job.actions.replaceChildren(el("button", { type: "button", onclick: retry }, "Retry"));
  job.actions.hidden = false;
}

function pump() {
  while (running < PARALLEL_UPLOADS && queue.length > 0) {
    const job = queue.shift();
    running += 1;
    runUpload(job).finally(() => {
      running -= 1;
      pump();
      // Tiles went in as responses came back; once all is done, show the server's order.
      if (!polling) settled();
    });
  }
}

function addFiles(files) {
  for (const file of files) {
    const job = uploadRow(file);
    offerResume(job).catch((error) => {
      setState(job, "failed", explain(error));
    });
  }
}

function setupUploads() {
  const drop = $("drop");
  const input = $("files");
  $("pick").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles([...event.dataTransfer.files]);
  });
  // A file dropped next to the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

// ---- start ---------------------------------------------------------------------------------

setupSignIn();
setupGrid();
setupFilters();
setupUploads();
setupViewer({
  galleries: () => view.galleries,
  currentGallery: () => view.filters.gallery,
  filterByTag: (name) => {
    $("tag").value = name;
    $("tag").focus();
    applyFilters();
  },
  changed: (image) => upsert(image, { prepend: false }),
  deleted: remove,
  order: () => [...$("grid").querySelectorAll("li[data-id]")].map((li) => li.dataset.id),
  hasMore: () => Boolean(view.cursor),
  more: async () => {
    if (!view.cursor) return false;
    await more();
    return true;
  },
});
const pageStarted = Date.now();
const refused = takeKeyFromFragment();
if (credential.get()) showApp();
else showSignIn(refused);
