// Capture facts as photographers write them (ISO 100, f/7.1, 1/160 s, 135 mm). Pure functions
// returning plain strings: the callers put them in the page as text, never as markup.

const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:\d{2})?$/;

/** A number with at most one decimal, and none when it is whole (7.1, 8, 135). */
function short(value) {
  return String(Number(value.toFixed(1)));
}

/** When the photo was taken, in the wall-clock time the camera recorded: a time without an
 *  offset is not moved into this browser's zone, and one with an offset keeps it (shown). */
export function takenAt(iso) {
  const parts = ISO_TIME.exec(iso);
  if (!parts) return iso;
  const [year, month, day, hour, minute, second] = parts.slice(1, 7).map(Number);
  const moment = new Date(0);
  moment.setUTCFullYear(year, month - 1, day); // years below 100 too, unlike Date.UTC
  moment.setUTCHours(hour, minute, second);
  // Formatted in UTC: the digits come out as recorded, in the reader's own date style.
  const text = new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium",
    timeStyle: "medium",
    timeZone: "UTC",
  }).format(moment);
  const offset = parts[7];
  if (!offset) return text;
  return `${text} (UTC${offset === "Z" || offset === "+00:00" ? "" : offset})`;
}

/** Make and model, without the make twice ("Canon" + "Canon EOS 40D"). */
export function camera(camera) {
  if (!camera) return null;
  const make = (camera.make || "").trim();
  const model = (camera.model || "").trim();
  if (!make || !model) return make || model || null;
  return model.toLowerCase().startsWith(make.toLowerCase()) ? model : `${make} ${model}`;
}

/** 1/160 s for short exposures, 0.4 s or 2 s for long ones. */
export function shutter(seconds) {
  if (!(seconds > 0)) return null;
  if (seconds >= 1) return `${short(seconds)} s`;
  const denominator = 1 / seconds;
  const whole = Math.round(denominator);
  if (seconds < 0.25 || Math.abs(denominator - whole) / denominator < 0.03) return `1/${whole} s`;
  return `${short(seconds)} s`;
}

/** "ISO 100, f/7.1, 1/160 s, 135 mm", leaving out what the file did not say. */
export function exposure(exposure) {
  if (!exposure) return null;
  const { iso, f_number: fNumber, exposure_time: time, focal_length: focal } = exposure;
  const parts = [
    iso ? `ISO ${iso}` : null,
    fNumber ? `f/${short(fNumber)}` : null,
    time ? shutter(time) : null,
    focal ? `${short(focal)} mm` : null,
  ].filter(Boolean);
  return parts.length ? parts.join(", ") : null;
}

/** "52.37022, 4.89517": five decimals are about a metre. */
export function position(location) {
  if (!location) return null;
  return `${location.latitude.toFixed(5)}, ${location.longitude.toFixed(5)}`;
}

export function altitude(location) {
  if (!location || location.altitude === null || location.altitude === undefined) return null;
  return `${short(location.altitude)} m`;
}
