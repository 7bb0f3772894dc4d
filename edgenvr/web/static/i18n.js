// Every visible string comes from a catalogue (i18n/<lang>.json); code names only keys.
// Indonesian is the default; the user's choice is kept in localStorage.

const STORAGE_KEY = "edgenvr.language";
export const LANGUAGES = ["id", "en"];
const LOCALES = { id: "id-ID", en: "en-GB" };

let current = "id";
let messages = {};
let fallback = {};   // Indonesian, for a key missing from the English catalogue

async function fetchCatalogue(lang) {
  const response = await fetch(`/static/i18n/${lang}.json`, { cache: "no-cache" });
  if (!response.ok) throw new Error(`catalogue ${lang}: HTTP ${response.status}`);
  return response.json();
}

export async function initLanguage() {
  let wanted = "id";
  try {
    const stored = localStorage.getItem(STORAGE_KEY);
    if (LANGUAGES.includes(stored)) wanted = stored;
  } catch { /* storage blocked: stay with the default */ }
  await setLanguage(wanted, false);
}

export async function setLanguage(lang, remember = true) {
  if (!LANGUAGES.includes(lang)) lang = "id";
  const loaded = await fetchCatalogue(lang);
  if (lang !== "id" && Object.keys(fallback).length === 0) fallback = await fetchCatalogue("id");
  if (lang === "id") fallback = loaded;
  messages = loaded;
  current = lang;
  document.documentElement.lang = lang;
  if (remember) {
    try { localStorage.setItem(STORAGE_KEY, lang); } catch { /* not remembered; still switched */ }
  }
}

export function language() {
  return current;
}

export function locale() {
  return LOCALES[current];
}

export function has(key) {
  return key in messages || key in fallback;
}

/** The message for `key`, with {name} placeholders filled from `vars`. */
export function t(key, vars) {
  let text = messages[key] ?? fallback[key];
  if (text === undefined) {
    console.warn("missing message", key);
    text = key;
  }
  if (vars) text = text.replace(/\{(\w+)\}/g, (all, name) => (name in vars ? String(vars[name]) : all));
  return text;
}

/** t(prefix + value) when the catalogue has it, else the raw value (a state or kind newer than this UI). */
export function tEnum(prefix, value) {
  const key = `${prefix}.${value}`;
  return has(key) ? t(key) : String(value);
}
