// Keeping evidence from playback: a range (default 30 s around the playhead), a reason, then either a
// signed evidence zip downloaded through fetch -> blob -> <a download>, or only a hold on the range.
import { api } from "../api.js";
import { h } from "../dom.js";
import { locale, t } from "../i18n.js";
import { may } from "../session.js";
import { HOUR, SECOND, formatDuration, fromInputValue, toInputValue } from "../time.js";
import { dispositionName, errorMessage, field, notice, saveBlob } from "../ui.js";

const AROUND_MS = 15 * SECOND;
const LONGEST_MS = 24 * HOUR;   // the box exports at most 24 h at once

/** createExportPanel(camera, currentMs) -> {element, open(ms), close()}; currentMs() gives the playhead. */
export function createExportPanel(camera, currentMs) {
  const startInput = h("input", { type: "datetime-local", step: "1", required: true });
  const endInput = h("input", { type: "datetime-local", step: "1", required: true });
  const reasonInput = h("textarea", { rows: "2", maxlength: "500", required: true });
  const holdBox = h("input", { type: "checkbox" });
  const lengthText = h("p", { class: "hint" });
  const status = h("div", { class: "export-status", "aria-live": "polite" });
  const canExport = may("export");
  const canHold = may("hold");

  const range = () => [fromInputValue(startInput.value), fromInputValue(endInput.value)];
  const showLength = () => {
    const [start, end] = range();
    lengthText.textContent = start !== null && end !== null && end > start
      ? t("export.length", { duration: formatDuration(end - start) }) : "";
  };
  startInput.addEventListener("input", showLength);
  endInput.addEventListener("input", showLength);

  const aroundPlayhead = () => {
    const at = currentMs() ?? Date.now() - AROUND_MS;
    startInput.value = toInputValue(at - AROUND_MS);
    endInput.value = toInputValue(Math.min(at + AROUND_MS, Date.now()));
    showLength();
  };

  /** The checked request body, or null after saying what is wrong. */
  const request = () => {
    const [start, end] = range();
    const reason = reasonInput.value.trim();
    let problem = "";
    if (start === null || end === null) problem = t("export.need_times");
    else if (end <= start) problem = t("export.end_before_start");
    else if (end - start > LONGEST_MS) problem = t("export.too_long");
    else if (start >= Date.now()) problem = t("export.future");
    else if (!reason) problem = t("export.need_reason");
    if (problem) {
      status.replaceChildren(notice("error", problem));
      (reason ? startInput : reasonInput).focus();
      return null;
    }
    return { camera, start_ms: Math.floor(start), end_ms: Math.min(Math.floor(end), Date.now()), reason };
  };

  let busy = false;
  const buttons = [];
  const setBusy = (value) => {
    busy = value;
    for (const button of buttons) button.disabled = value;
  };

  const download = async (event) => {
    event.preventDefault();
    if (busy) return;
    const body = request();
    if (!body) return;
    if (canHold && holdBox.checked) body.hold = true;
    setBusy(true);
    const started = performance.now();
    const progress = h("p", { text: t("export.preparing", { seconds: 0 }) });
    status.replaceChildren(notice("info", progress));
    // the box builds the whole folder before the first byte: count the seconds so nobody thinks it hangs
    const ticker = setInterval(() => {
      progress.textContent = t("export.preparing", { seconds: Math.round((performance.now() - started) / 1000) });
    }, 1000);
    try {
      const response = await api("/api/exports", { method: "POST", body, raw: true });
      clearInterval(ticker);
      const blob = await readWithProgress(response, (bytes) => {
        progress.textContent = t("export.downloading", { size: megabytes(bytes) });
      });
      const name = dispositionName(response.headers.get("Content-Disposition"), `${camera}.zip`);
      saveBlob(blob, name);
      status.replaceChildren(notice("success",
        h("p", { text: t("export.done", { name, size: megabytes(blob.size) }) }),
        body.hold ? h("p", { text: t("export.also_held") }) : null,
        h("p", { text: t("export.verify_hint") })));
    } catch (error) {
      clearInterval(ticker);
      status.replaceChildren(notice("error", t("export.failed"), " ", errorMessage(error)));
    } finally {
      setBusy(false);
    }
  };

  const holdOnly = async () => {
    if (busy) return;
    const body = request();
    if (!body) return;
    setBusy(true);
    status.replaceChildren(notice("info", t("hold.adding")));
    try {
      await api("/api/holds", { method: "POST", body });
      status.replaceChildren(notice("success", t("hold.added")));
    } catch (error) {
      status.replaceChildren(notice("error", t("hold.add_failed"), " ", errorMessage(error)));
    } finally {
      setBusy(false);
    }
  };

  const downloadButton = h("button", { type: "submit", class: "primary", text: t("export.download") });
  const holdButton = canHold ? h("button", { type: "button", text: t("hold.only"), onclick: holdOnly }) : null;
  const closeButton = h("button", { type: "button", class: "quiet", text: t("common.close"), onclick: () => close() });
  buttons.push(downloadButton, ...(holdButton ? [holdButton] : []));
  if (!canExport) downloadButton.hidden = true;

  const form = h("form", { class: "export-form", onsubmit: download, novalidate: true },
    h("div", { class: "field-row" },
      field(t("export.start"), startInput),
      field(t("export.end"), endInput)),
    lengthText,
    h("button", { type: "button", class: "quiet", text: t("export.around_playhead"), onclick: aroundPlayhead }),
    field(t("export.reason"), reasonInput, t("export.reason_hint")),
    canHold && canExport ? h("label", { class: "check" }, holdBox, t("export.also_hold")) : null,
    h("div", { class: "actions" }, downloadButton, holdButton, closeButton),
    status,
    canExport ? h("p", { class: "hint", text: t("export.zip_explained") }) : null);

  const element = h("section", { class: "panel export-panel", hidden: true, "aria-labelledby": "export-title" },
    h("h2", { id: "export-title", text: canExport ? t("export.title") : t("hold.title") }), form);

  function open(ms) {
    element.hidden = false;
    if (ms !== undefined && ms !== null) {
      startInput.value = toInputValue(ms - AROUND_MS);
      endInput.value = toInputValue(Math.min(ms + AROUND_MS, Date.now()));
      showLength();
    } else {
      aroundPlayhead();
    }
    status.replaceChildren();
    element.scrollIntoView({ behavior: "smooth", block: "nearest" });
    reasonInput.focus({ preventScroll: true });
  }

  function close() {
    element.hidden = true;
  }

  return { element, open, close };
}

async function readWithProgress(response, onBytes) {
  if (!response.body) return response.blob();
  const reader = response.body.getReader();
  const parts = [];
  let bytes = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    bytes += value.byteLength;
    onBytes(bytes);
  }
  return new Blob(parts, { type: response.headers.get("Content-Type") || "application/zip" });
}

function megabytes(bytes) {
  return new Intl.NumberFormat(locale(), { minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(bytes / 1e6);
}
