// Small pieces several screens share: camera badges, notices, a toast, error texts, downloads.
import { h } from "./dom.js";
import { t, tEnum } from "./i18n.js";
import { formatWhen } from "./time.js";

/** A sentence for a failed request: the box's own message when it gave one. */
export function errorMessage(error) {
  if (error?.name === "AbortError") return "";
  if (error?.status === 0) return t("error.network");
  if (error?.message) return error.message;
  if (error?.status) return t("error.http", { status: error.status });
  return t("error.unknown");
}

/** A block of text with a role: "error" (announced at once), "info", "warning", "success". */
export function notice(kind, ...content) {
  return h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, ...content);
}

let toastTimer = null;
export function toast(text) {
  const area = document.getElementById("toast-area");
  if (!area) return;
  area.replaceChildren(h("div", { class: "toast", text }));
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => area.replaceChildren(), 5000);
}

// Badge colours are a second signal: each badge also says its state in words.
const STATE_LOOK = {
  recording: "ok", connecting: "warn", reconnecting: "warn", offline: "bad", disabled: "off",
  stopped: "off", unknown: "off",
};

export function stateBadge(camera) {
  const look = STATE_LOOK[camera.state] || "off";
  let text = tEnum("state", camera.state);
  if (camera.state === "offline" && camera.state_since_ms) {
    text = t("state.offline_since", { time: formatWhen(camera.state_since_ms) });
  }
  return h("span", { class: `badge badge-${look}`, title: camera.state_reason || undefined },
    h("span", { class: "badge-dot", "aria-hidden": "true" }), text);
}

export function cameraBadges(camera) {
  const badges = [stateBadge(camera)];
  for (const kind of camera.tamper || []) {
    badges.push(h("span", { class: "badge badge-tamper" },
      h("span", { class: "badge-icon", "aria-hidden": "true", text: "⚠" }), t("tamper.badge", { kind: tEnum("tamper", kind) })));
  }
  if (camera.reference?.provisional) {
    badges.push(h("span", { class: "badge badge-note", text: t("reference.not_approved") }));
  }
  return badges;
}

/** Save a blob under `filename` through a temporary object URL. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);   // the download has started by then
}

/** The file name of a Content-Disposition header, or `fallback`. */
export function dispositionName(header, fallback) {
  const match = /filename="?([^";]+)"?/i.exec(header || "");
  return match ? match[1] : fallback;
}

/** A labelled form field: label above the control, an optional hint below. */
export function field(labelText, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const hintElement = hint ? h("small", { class: "hint", id: `${id}-hint`, text: hint }) : null;
  if (hintElement) control.setAttribute("aria-describedby", hintElement.id);
  return h("div", { class: "field" }, h("label", { for: id, text: labelText }), control, hintElement);
}

/** Copy text; navigator.clipboard needs https, so over plain http fall back to selecting it. */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (input) {
      input.focus();
      input.select();
      try { return document.execCommand("copy"); } catch { return false; }
    }
    return false;
  }
}

/**
 * A search form's requests, whose answers replace `results`. While one runs, the results on screen answer the
 * previous question: they are marked busy (dimmed) and a failure clears them. Only the newest search's answer
 * is shown: an earlier one that answers late is dropped, so the rows always match the form.
 * Returns run(ask, show, failedText): ask() fetches, show(answer) fills status and results.
 */
export function latestSearch(status, results, isDestroyed) {
  let generation = 0;
  return async (ask, show, failedText) => {
    const mine = ++generation;
    const current = () => !isDestroyed() && mine === generation;
    status.replaceChildren(h("p", { class: "loading", text: t("common.loading") }));
    results.setAttribute("aria-busy", "true");
    try {
      const answer = await ask();
      if (current()) show(answer);
    } catch (error) {
      if (!current()) return;
      results.replaceChildren();
      status.replaceChildren(notice("error", failedText, " ", errorMessage(error)));
    } finally {
      if (current()) results.removeAttribute("aria-busy");
    }
  };
}
