// BlurHash decoder (https://blurha.sh, the algorithm of woltapp/blurhash, MIT), small enough to
// keep here rather than vendor a package: it paints the placeholder a worker computed while the
// thumbnail itself loads.

const DIGITS =
  "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";

function decode83(text, start, end) {
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = DIGITS.indexOf(text[i]);
    if (digit < 0) throw new Error("invalid blurhash");
    value = value * 83 + digit;
  }
  return value;
}

function toLinear(value) {
  const v = value / 255;
  return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
}

function toSRGB(value) {
  const v = Math.max(0, Math.min(1, value));
  const s = v <= 0.0031308 ? v * 12.92 : 1.055 * Math.pow(v, 1 / 2.4) - 0.055;
  return Math.trunc(s * 255 + 0.5);
}

function signPow(value, exp) {
  return Math.sign(value) * Math.pow(Math.abs(value), exp);
}

/** RGBA pixels (width x height) of a BlurHash. */
export function decode(hash, width, height, punch = 1) {
  if (typeof hash !== "string" || hash.length < 6) throw new Error("invalid blurhash");
  const sizeFlag = decode83(hash, 0, 1);
  const ny = Math.floor(sizeFlag / 9) + 1;
  const nx = (sizeFlag % 9) + 1;
  if (hash.length !== 4 + 2 * nx * ny) throw new Error("invalid blurhash length");
  const maxAc = ((decode83(hash, 1, 2) + 1) / 166) * punch;
  const dc = decode83(hash, 2, 6);
  const colors = [[toLinear(dc >> 16), toLinear((dc >> 8) & 255), toLinear(dc & 255)]];
  for (let i = 1; i < nx * ny; i++) {
    const v = decode83(hash, 4 + i * 2, 6 + i * 2);
    const quantised = [Math.floor(v / 361), Math.floor(v / 19) % 19, v % 19];
    colors.push(quantised.map((q) => signPow((q - 9) / 9, 2) * maxAc));
  }
  const pixels = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let j = 0; j < ny; j++) {
        const by = Math.cos((Math.PI * y * j) / height);
        for (let i = 0; i < nx; i++) {
          const basis = Math.cos((Math.PI * x * i) / width) * by;
          const c = colors[i + j * nx];
          r += c[0] * basis;
          g += c[1] * basis;
          b += c[2] * basis;
        }
      }
      const o = 4 * (x + y * width);
      pixels[o] = toSRGB(r);
      pixels[o + 1] = toSRGB(g);
      pixels[o + 2] = toSRGB(b);
      pixels[o + 3] = 255;
    }
  }
  return pixels;
}

/** A small canvas painted with the hash (CSS stretches it); null when the hash is unusable. */
export function placeholder(hash, width = 32, height = 32) {
  if (!hash) return null;
  try {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    canvas.className = "placeholder";
    canvas.setAttribute("aria-hidden", "true");
    const ctx = canvas.getContext("2d");
    ctx.putImageData(new ImageData(decode(hash, width, height), width, height), 0, 0);
    return canvas;
  } catch {
    return null; // a placeholder is decoration: a bad hash must not break the grid
  }
}
