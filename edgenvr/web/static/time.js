// Times: the API speaks UTC epoch ms; people see the browser's local time on a 24-hour clock.
import { locale, t } from "./i18n.js";

export const SECOND = 1000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

const formats = new Map();
function format(options) {
  const key = `${locale()}|${JSON.stringify(options)}`;
  if (!formats.has(key)) formats.set(key, new Intl.DateTimeFormat(locale(), { hourCycle: "h23", ...options }));
  return formats.get(key);
}

export function formatTime(ms, seconds = true) {
  return format({ hour: "2-digit", minute: "2-digit", ...(seconds ? { second: "2-digit" } : {}) }).format(ms);
}

export function formatDate(ms) {
  return format({ weekday: "short", day: "numeric", month: "short", year: "numeric" }).format(ms);
}

export function formatLongDate(ms) {
  return format({ weekday: "long", day: "numeric", month: "long", year: "numeric" }).format(ms);
}

/** Date and time, short: the date is left out for today, so "since 02:14" stays short. */
export function formatWhen(ms, seconds = false) {
  const sameDay = dayStart(ms) === dayStart(Date.now());
  if (sameDay) return formatTime(ms, seconds);
  const sameYear = new Date(ms).getFullYear() === new Date().getFullYear();
  const date = format({ day: "numeric", month: "short", ...(sameYear ? {} : { year: "numeric" }) }).format(ms);
  return `${date} ${formatTime(ms, seconds)}`;
}

export function formatDateTime(ms, seconds = true) {
  return `${formatDate(ms)} ${formatTime(ms, seconds)}`;
}

/** A span of time in words, e.g. "1 j 5 m" / "1 h 5 min" / "12 s". */
export function formatDuration(ms) {
  const total = Math.max(0, Math.round(ms / SECOND));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  if (hours > 0) return t("duration.hours_minutes", { h: hours, m: minutes });
  if (minutes > 0) return t("duration.minutes_seconds", { m: minutes, s: seconds });
  return t("duration.seconds", { s: seconds });
}

/** Local midnight at or before `ms`. */
export function dayStart(ms) {
  const date = new Date(ms);
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

/** Local midnight `days` days after the local midnight at or before `ms` (exact across DST changes). */
export function addDays(ms, days) {
  const date = new Date(dayStart(ms));
  return new Date(date.getFullYear(), date.getMonth(), date.getDate() + days).getTime();
}

/** Local hour `hour` of the day of `ms`. */
export function atHour(ms, hour) {
  const date = new Date(dayStart(ms));
  return new Date(date.getFullYear(), date.getMonth(), date.getDate(), hour).getTime();
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** "YYYY-MM-DD" of the local day (the value of <input type=date>, and the URL's day). */
export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** Local midnight of "YYYY-MM-DD", or null. */
export function parseDayKey(text) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || "");
  if (!match) return null;
  const date = new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3]));
  return Number.isNaN(date.getTime()) ? null : date.getTime();
}

/** The value of <input type="datetime-local" step="1"> for `ms`, local time. */
export function toInputValue(ms) {
  const d = new Date(ms);
  return `${dayKey(ms)}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** ms of a datetime-local value (read as local time), or null. */
export function fromInputValue(text) {
  if (!text) return null;
  const ms = new Date(text).getTime();
  return Number.isNaN(ms) ? null : ms;
}
