// Remote pulls: ask a box for a range of one camera (it exports and uploads it when its channel is open) and follow
// each request (queued, exporting, uploading with its progress, ready with a link to its clip, or the box's
// reason why not), refreshed while the screen is open.
import { api, query } from "../api.js";
import { h } from "../dom.js";
import { t, tEnum } from "../i18n.js";
import { MINUTE, formatDateTime, formatDuration, fromInputValue, toInputValue } from "../time.js";
import { errorMessage, field, notice, toast } from "../ui.js";

const REFRESH_MS = 3_000;
const STATE_LOOK = { queued: "off", exporting: "warn", uploading: "warn", ready: "ok", unavailable: "bad", failed: "bad" };

export function render(main, params) {
  const box = h("select", { required: true }, h("option", { value: "", text: t("pulls.choose_box") }));
  const cameraList = h("datalist", { id: "pull-cameras" });
  const camera = h("input", { type: "text", list: "pull-cameras", autocapitalize: "none", spellcheck: "false", required: true, maxlength: "32" });
  const now = Date.now();
  const from = h("input", { type: "datetime-local", step: "1", required: true, value: toInputValue(now - 10 * MINUTE) });
  const to = h("input", { type: "datetime-local", step: "1", required: true, value: toInputValue(now - 5 * MINUTE) });
  const reason = h("textarea", { required: true, maxlength: "500" });
  const message = h("div", { "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "primary", text: t("pulls.submit") });
  const form = h("form", { class: "panel", novalidate: true, "aria-label": t("pulls.form_label") },
    h("h2", { text: t("pulls.new") }),
    h("div", { class: "field-row" }, field(t("pulls.box"), box), field(t("pulls.camera"), camera, t("pulls.camera_hint"))),
    cameraList,
    h("div", { class: "field-row" }, field(t("pulls.from"), from), field(t("pulls.to"), to, t("pulls.to_hint"))),
    field(t("pulls.reason"), reason, t("pulls.reason_hint")),
    message,
    h("div", { class: "actions" }, submit));
  const status = h("div");
  const results = h("div", { class: "table-wrap" });
  main.append(h("div", { class: "page-head" }, h("h1", { text: t("pulls.title") })), form,
    h("h2", { text: t("pulls.list") }), status, results);
  let destroyed = false;
  let timer = null;
  let boxes = [];

  const fillCameras = () => {
    const chosen = boxes.find((b) => b.box === box.value);
    cameraList.replaceChildren(...Object.keys(chosen?.cameras || {}).map((id) => h("option", { value: id })));
  };
  box.addEventListener("change", fillCameras);
  api("/api/fleet").then((answer) => {
    if (destroyed) return;
    boxes = answer.boxes.filter((b) => !b.revoked);
    box.append(...boxes.map((b) => h("option", { value: b.box, text: `${b.box} (${b.site})`, selected: params.box === b.box })));
    fillCameras();
  }).catch((error) => message.replaceChildren(notice("error", t("fleet.failed"), " ", errorMessage(error))));

  async function send(event) {
    event.preventDefault();
    const startMs = fromInputValue(from.value);
    const endMs = fromInputValue(to.value);
    if (!box.value || !camera.value.trim() || !reason.value.trim() || startMs === null || endMs === null) {
      message.replaceChildren(notice("error", t("pulls.fill_in")));
      return;
    }
    if (endMs <= startMs) {
      message.replaceChildren(notice("error", t("pulls.reversed")));
      return;
    }
    submit.disabled = true;
    message.replaceChildren(h("p", { class: "loading", text: t("pulls.sending") }));
    try {
      await api("/api/pulls", { method: "POST", body: {
        box: box.value, camera: camera.value.trim(), start_ms: startMs, end_ms: endMs, reason: reason.value.trim() } });
      if (destroyed) return;
      message.replaceChildren();
      reason.value = "";
      toast(t("pulls.sent"));
      clearTimeout(timer);
      load();
    } catch (error) {
      if (!destroyed) message.replaceChildren(notice("error", t("pulls.refused"), " ", errorMessage(error)));
    } finally {
      submit.disabled = false;
    }
  }

  async function load() {
    try {
      const { pulls } = await api(`/api/pulls${query({ box: params.box })}`);
      if (destroyed) return;
      status.replaceChildren();
      results.replaceChildren(pulls.length ? table(pulls) : notice("info", t("pulls.none")));
    } catch (error) {
      if (!destroyed) status.replaceChildren(notice("error", t("pulls.failed"), " ", errorMessage(error)));
    } finally {
      if (!destroyed) timer = setTimeout(load, REFRESH_MS);
    }
  }

  form.addEventListener("submit", send);
  load();
  return () => {
    destroyed = true;
    clearTimeout(timer);
  };
}

function stateCell(pull) {
  const look = STATE_LOOK[pull.state] || "off";
  const badge = h("span", { class: `badge badge-${look}` }, h("span", { class: "badge-dot", "aria-hidden": "true" }), tEnum("pull_state", pull.state));
  const parts = [badge];
  if (pull.state === "uploading") {
    parts.push(h("span", { class: "pull-progress" },
      h("progress", { max: "100", value: String(pull.progress), "aria-label": t("pulls.progress_label") }),
      h("span", { text: `${pull.progress}%` })));
  }
  if (pull.state === "ready" && pull.clip_id) {
    parts.push(h("a", { href: `#/clips?clip=${encodeURIComponent(pull.clip_id)}&box=${encodeURIComponent(pull.box)}&from=${pull.start_ms - 60_000}`,
      class: "open-clip", text: t("pulls.open_clip") }));
  }
  if (pull.detail) parts.push(h("div", { class: "hint", text: pull.detail }));
  return h("td", {}, ...parts);
}

function table(pulls) {
  const head = ["pulls.col_asked", "pulls.col_box", "pulls.col_range", "pulls.col_reason", "pulls.col_state"];
  return h("table", { class: "audit-table hub-table" },
    h("thead", {}, h("tr", {}, ...head.map((key) => h("th", { scope: "col", text: t(key) })))),
    h("tbody", {}, ...pulls.map((pull) => h("tr", { dataset: { pull: pull.id, state: pull.state } },
      h("td", {}, h("div", { class: "nowrap", text: formatDateTime(pull.created_ms) }), h("div", { class: "hint", text: pull.requested_by })),
      h("td", {}, h("div", { class: "box-id", text: pull.box }), h("div", { text: pull.camera })),
      h("td", {}, h("div", { class: "nowrap", text: formatDateTime(pull.start_ms) }),
        h("div", { class: "hint", text: formatDuration(pull.end_ms - pull.start_ms) })),
      h("td", { text: pull.reason }),
      stateCell(pull)))));
}
