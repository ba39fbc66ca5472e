// Tiny DOM helpers: text is always set as text (never innerHTML), so file names and titles from
// users cannot inject markup.

/** el("button", {type: "button", class: "x", onclick: fn}, "text", child, ...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const UNITS = ["bytes", "KB", "MB", "GB"];

/** A variant as a lazily loaded, decorative <img> (its button or tile carries the name). */
export function variantImage(variant) {
  return el("img", {
    src: variant.url,
    alt: "",
    width: variant.width,
    height: variant.height,
    loading: "lazy",
    decoding: "async",
  });
}

export function formatBytes(size) {
  let value = size;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(value < 10 ? 1 : 0)} ${UNITS[unit]}`;
}

export function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

export function percent(confidence) {
  return `${Math.round(confidence * 100)}%`;
}

export function imageLabel(image) {
  return image.title || image.filename || "Untitled image";
}

const notice = () => document.getElementById("notice");

/** A short message in the page's live region (read out by screen readers). */
export function announce(message, { error = false } = {}) {
  const node = notice();
  node.textContent = message;
  node.classList.toggle("error", error);
}
