// The image view: a modal <dialog> (focus is trapped and Escape closes it, natively) with the
// large variant, facts, capture facts (EXIF), tags with confidences, job states, the download
// link, gallery actions and a strip of similar photos (near-duplicates).

import { api } from "./api.js";
import { placeholder } from "./blurhash.js";
import { announce, el, formatBytes, imageLabel, percent, variantImage } from "./dom.js";
import { altitude, camera, exposure, position, takenAt } from "./photo.js";

const PREFERRED = ["large", "medium", "thumb"];
const REFRESH_MS = 2000;

let ctx = null;
let current = null; // id of the image on show
let opener = null; // the element to give focus back to
let firstOpener = null; // what opened the dialog, when the image on show has no tile
let timer = null;

const dialog = () => document.getElementById("viewer");
const body = () => document.getElementById("viewer-body");

/** ctx: {galleries(), currentGallery(), filterByTag(name), changed(image), deleted(id),
 *        order() (ids of the grid, in order), more() (load the next page; false at the end)} */
export function setupViewer(context) {
  ctx = context;
  document.getElementById("viewer-close").addEventListener("click", () => dialog().close());
  document.getElementById("viewer-prev").addEventListener("click", () => step(-1));
  document.getElementById("viewer-next").addEventListener("click", () => step(1));
  // On the document: a button disabled under the focus leaves the focus on <body>.
  document.addEventListener("keydown", (event) => {
    if (!dialog().open || event.target.matches("input, select, textarea")) return;
    if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
  });
  dialog().addEventListener("close", () => {
    clearTimeout(timer);
    // The tile may have been redrawn meanwhile (fresh URLs, new status): find it again by id.
    const tile = document.querySelector(`li[data-id="${CSS.escape(current || "")}"] button`);
    current = null;
    body().replaceChildren(); // drop the large image and the forms with it
    const target = [opener, tile, firstOpener].find((node) => node && node.isConnected);
    if (target) target.focus();
  });
}

/** Show the image before or after this one in the grid (loading its next page if need be). */
async function step(delta) {
  if (!current) return;
  let ids = ctx.order();
  const at = ids.indexOf(current);
  if (at < 0) return; // opened from the similar strip: not a place in the grid
  const index = at + delta;
  if (index >= ids.length && (await ctx.more())) ids = ctx.order();
  if (index < 0 || index >= ids.length) return;
  // No opener: closing returns focus to the tile of the image on show by then.
  await openViewer(ids[index], null);
}

function updateSteps() {
  const ids = ctx.order();
  const index = ids.indexOf(current);
  const outside = index < 0; // opened from the similar strip, not shown in this grid
  const prev = document.getElementById("viewer-prev");
  const next = document.getElementById("viewer-next");
  const focused = document.activeElement;
  prev.disabled = index <= 0;
  next.disabled = outside || (index === ids.length - 1 && !ctx.hasMore());
  // A button disabled under the focus would drop it on <body>: hand it to its neighbour.
  if (focused === prev && prev.disabled) (next.disabled ? closeButton() : next).focus();
  if (focused === next && next.disabled) (prev.disabled ? closeButton() : prev).focus();
}

function closeButton() {
  return document.getElementById("viewer-close");
}

export async function openViewer(id, from) {
  current = id;
  opener = from || null;
  if (!dialog().open) firstOpener = from || document.activeElement;
  document.getElementById("viewer-title").textContent = "Loading…";
  body().replaceChildren(el("p", { class: "hint" }, "Loading…"));
  if (!dialog().open) dialog().showModal();
  await refresh(id);
}

async function refresh(id) {
  clearTimeout(timer);
  let image;
  let similar;
  try {
    image = await api(`/v1/images/${id}`);
    similar = await similarTo(image);
  } catch (error) {
    if (current === id) body().replaceChildren(el("p", { class: "error" }, error.message));
    return;
  }
  if (current !== id) return; // closed or switched while loading
  const typing = body().contains(document.activeElement)
    && document.activeElement.matches("input, select");
  if (typing) {
    // Redrawing would throw away what is being typed or chosen: look again later.
    timer = setTimeout(() => refresh(id), REFRESH_MS);
    return;
  }
  render(image, similar);
  ctx.changed(image);
  updateSteps();
  const pending = image.jobs.some((job) => job.state === "pending" || job.state === "running");
  if (pending) timer = setTimeout(() => refresh(id), REFRESH_MS);
}

/** The near-duplicates with their thumbnails (none asked for when the detail lists none). A
 *  failure leaves the strip out rather than the image. */
async function similarTo(image) {
  if (!image.near_duplicates || image.near_duplicates.length === 0) return [];
  try {
    return (await api(`/v1/images/${image.id}/similar`)).items;
  } catch {
    return [];
  }
}

function bestVariant(image) {
  for (const name of PREFERRED) {
    const variant = image.variants.find((v) => v.name === name);
    if (variant) return variant;
  }
  return null;
}

function picture(image) {
  const variant = bestVariant(image);
  const frame = el("div", { class: "picture" });
  frame.style.aspectRatio = `${image.width} / ${image.height}`;
  frame.style.maxWidth = `${image.width}px`; // a small image is not blown up
  const hash = placeholder(image.placeholder);
  if (hash) frame.append(hash);
  if (variant) {
    const img = el("img", {
      src: variant.url,
      alt: imageLabel(image),
      width: variant.width,
      height: variant.height,
      "data-variant": variant.name,
    });
    img.addEventListener("load", () => img.classList.add("loaded"));
    frame.append(img);
  } else {
    frame.append(el("p", { class: "hint overlay" }, `Still ${image.status}…`));
  }
  return frame;
}

function facts(image) {
  const rows = [
    ["Dimensions", `${image.width} × ${image.height} px`],
    ["Size", formatBytes(image.size)],
    ["Type", image.content_type],
    ["Status", image.error_code ? `${image.status} (${image.error_code})` : image.status],
    ["Uploaded", new Date(image.created_at).toLocaleString()],
  ];
  if (image.nsfw !== null) rows.push(["NSFW score", percent(image.nsfw)]);
  if (image.flagged) rows.push(["Moderation", "flagged"]);
  const list = el("dl", { class: "facts" });
  for (const [name, value] of rows) list.append(el("dt", {}, name), el("dd", {}, value));
  return list;
}

/** What the camera recorded; untrusted text from the file, so only ever set as text. Facts the
 *  file did not hold are left out, and so is the section when it held none. */
function capture(image) {
  const meta = image.metadata;
  if (!meta) return null;
  const rows = [];
  if (meta.taken_at) {
    rows.push(["Taken", el("time", { datetime: meta.taken_at }, takenAt(meta.taken_at))]);
  }
  rows.push(
    ["Camera", camera(meta.camera)],
    ["Lens", meta.lens],
    ["Exposure", exposure(meta.exposure)],
    ["Colour profile", meta.colour_profile],
    ["Location", position(meta.location)],
    ["Altitude", altitude(meta.location)],
  );
  const shown = rows.filter(([, value]) => value);
  if (shown.length === 0) return null;
  const list = el("dl", { class: "facts" });
  for (const [name, value] of shown) {
    list.append(el("dt", {}, name), el("dd", { "data-fact": name }, value));
  }
  return el(
    "section",
    { class: "capture", "aria-labelledby": "capture-title" },
    el("h3", { id: "capture-title" }, "Capture"),
    list,
  );
}

/** Thumbnails of the near-duplicates, nearest first; each opens in this view. */
function similarStrip(items) {
  if (items.length === 0) return null;
  const list = el("ul", { class: "similar" });
  for (const { id, image } of items) {
    const thumb = image.variants.find((v) => v.name === "thumb");
    const label = imageLabel(image);
    const button = el("button", {
      type: "button",
      class: "similar-button",
      "aria-label": label,
      "data-id": id,
      onclick: () => openViewer(id, null),
    });
    if (thumb) {
      const img = variantImage(thumb);
      button.append(img);
    } else {
      button.append(el("span", { class: "tile-name" }, label));
    }
    list.append(el("li", {}, button));
  }
  return el(
    "section",
    { class: "similar-photos", "aria-labelledby": "similar-title" },
    el("h3", { id: "similar-title" }, "Similar photos"),
    list,
  );
}

function tags(image) {
  const section = el("section", { "aria-labelledby": "tags-title" });
  section.append(el("h3", { id: "tags-title" }, "Tags"));
  if (image.tags.length === 0) {
    section.append(el("p", { class: "hint" }, "No tags yet."));
    return section;
  }
  const list = el("ul", { class: "tags" });
  for (const tag of image.tags) {
    list.append(
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: `tag ${tag.kind}`,
            title: `${tag.model} ${tag.model_version}; show images tagged ${tag.name}`,
            "data-tag": tag.name,
            onclick: () => {
              dialog().close();
              ctx.filterByTag(tag.name);
            },
          },
          tag.name,
          " ",
          el("span", { class: "confidence" }, percent(tag.confidence)),
        ),
      ),
    );
  }
  section.append(list);
  return section;
}

function jobs(image) {
  const table = el("table", { class: "jobs" });
  table.append(
    el("caption", {}, "Processing"),
    el(
      "thead",
      {},
      el("tr", {}, el("th", { scope: "col" }, "Job"), el("th", { scope: "col" }, "State"),
        el("th", { scope: "col" }, "Attempts")),
    ),
  );
  const rows = el("tbody");
  for (const job of image.jobs) {
    const state = job.error_code ? `${job.state} (${job.error_code})` : job.state;
    rows.append(
      el("tr", { "data-job": job.kind }, el("th", { scope: "row" }, job.kind),
        el("td", {}, state), el("td", {}, job.attempts)),
    );
  }
  table.append(rows);
  return table;
}

function titleForm(image) {
  const input = el("input", { id: "image-title", name: "title", maxlength: 300,
    value: image.title || "", placeholder: image.filename || "" });
  return el(
    "form",
    {
      class: "inline",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const changed = await api(`/v1/images/${image.id}`, {
            method: "PATCH",
            json: { title: input.value },
          });
          document.getElementById("viewer-title").textContent = imageLabel(changed);
          ctx.changed(changed);
          announce("Title saved.");
        } catch (error) {
          announce(`Could not save the title: ${error.message}`, { error: true });
        }
      },
    },
    el("label", { for: "image-title" }, "Title"),
    input,
    el("button", { type: "submit" }, "Save title"),
  );
}

function actions(image) {
  const box = el("div", { class: "actions" });
  box.append(titleForm(image));
  box.append(el("a", { class: "button", href: image.download.url, rel: "noopener" },
    "Download original"));

  const galleries = ctx.galleries();
  if (galleries.length > 0) {
    const select = el("select", { id: "add-to-gallery" },
      ...galleries.map((g) => el("option", { value: g.id }, g.name)));
    const form = el(
      "form",
      {
        class: "inline",
        onsubmit: async (event) => {
          event.preventDefault();
          const gallery = galleries.find((g) => g.id === select.value);
          try {
            await api(`/v1/galleries/${select.value}/images/${image.id}`, { method: "PUT" });
            announce(`Added to ${gallery.name}.`);
          } catch (error) {
            announce(`Could not add to ${gallery.name}: ${error.message}`, { error: true });
          }
        },
      },
      el("label", { for: "add-to-gallery" }, "Gallery"),
      select,
      el("button", { type: "submit" }, "Add to gallery"),
    );
    box.append(form);
  }

  const inGallery = ctx.currentGallery();
  if (inGallery) {
    box.append(el("button", {
      type: "button",
      class: "secondary",
      onclick: () => dropFromGrid(
        image,
        () => api(`/v1/galleries/${inGallery}/images/${image.id}`, { method: "DELETE" }),
        "Removed from the gallery.",
        "Could not remove it from the gallery",
      ),
    }, "Remove from this gallery"));
  }

  box.append(el("button", {
    type: "button",
    class: "danger",
    onclick: () => {
      if (!window.confirm(`Delete ${imageLabel(image)} and all its variants?`)) return;
      dropFromGrid(
        image,
        () => api(`/v1/images/${image.id}`, { method: "DELETE" }),
        "Image deleted.",
        "Could not delete it",
      );
    },
  }, "Delete image"));
  return box;
}

/** Run `request`; on success take the image off the grid, close the view and put the focus on
 *  the tile that took its place (or the main region); on failure say why and stay. */
async function dropFromGrid(image, request, done, failed) {
  try {
    await request();
  } catch (error) {
    announce(`${failed}: ${error.message}`, { error: true });
    return;
  }
  const ids = ctx.order();
  const index = ids.indexOf(image.id);
  const neighbour = ids[index + 1] || ids[index - 1];
  ctx.deleted(image.id);
  const tile = neighbour && document.querySelector(`li[data-id="${CSS.escape(neighbour)}"] button`);
  opener = tile || document.getElementById("main");
  dialog().close();
  announce(done);
}

function render(image, similar) {
  document.getElementById("viewer-title").textContent = imageLabel(image);
  body().replaceChildren(
    picture(image),
    el("div", { class: "details" }, facts(image), capture(image), tags(image), jobs(image),
      actions(image)),
  );
  const strip = similarStrip(similar);
  if (strip) body().append(strip);
}
