// The audit trail: who did what to which footage, searched by time, person, action, camera and text.
import { api, query } from "../api.js";
import { h } from "../dom.js";
import { t, tEnum } from "../i18n.js";
import { DAY, formatDateTime, fromInputValue, toInputValue } from "../time.js";
import { field, latestSearch, notice } from "../ui.js";

const ACTIONS = ["export", "playback", "live_view", "hold_add", "hold_release", "reference_approve", "config_change",
  "login", "login_failed", "lockout", "logout", "user_add", "user_remove", "user_password", "user_role",
  "token_create", "token_revoke", "pull_request", "report"];
const LIMIT = 2000;

/** The box's cameras as the camera filter offers them: [{id, name}]. */
async function boxCameras() {
  const { cameras } = await api("/api/cameras");
  return cameras.map((c) => ({ id: c.id, name: c.name || c.id }));
}

/** `cameras`: where the camera filter's choices come from (the hub names its cameras box/camera). */
export function render(body, _params = {}, { cameras: listCameras = boxCameras } = {}) {
  const since = h("input", { type: "datetime-local", step: "1", value: toInputValue(Date.now() - DAY) });
  const until = h("input", { type: "datetime-local", step: "1" });
  const actor = h("input", { type: "text", autocapitalize: "none", spellcheck: "false" });
  const action = h("select", {}, h("option", { value: "", text: t("audit.any_action") }),
    ...ACTIONS.map((name) => h("option", { value: name, text: tEnum("action", name) })));
  const camera = h("select", {}, h("option", { value: "", text: t("audit.any_camera") }));
  const text = h("input", { type: "search" });
  const status = h("div", { "aria-live": "polite" });
  const results = h("div", { class: "table-wrap" });
  const form = h("form", { class: "panel audit-form", novalidate: true },
    h("div", { class: "field-row" }, field(t("audit.since"), since), field(t("audit.until"), until, t("audit.until_hint"))),
    h("div", { class: "field-row" }, field(t("audit.actor"), actor), field(t("audit.action"), action), field(t("audit.camera"), camera)),
    field(t("audit.text"), text, t("audit.text_hint")),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: t("audit.search") })));
  body.append(form, status, results);
  let destroyed = false;
  let names = new Map();

  listCameras().then((cameras) => {
    names = new Map(cameras.map((c) => [c.id, c.name]));
    camera.append(...cameras.map((c) => h("option", { value: c.id, text: c.name })));
  }).catch(() => { /* the camera filter stays "any"; the search still works */ });

  const run = latestSearch(status, results, () => destroyed);
  function search(event) {
    event?.preventDefault();
    return run(() => api(`/api/audit${query({
      since_ms: fromInputValue(since.value) ?? undefined, until_ms: fromInputValue(until.value) ?? undefined,
      actor: actor.value.trim(), action: action.value, camera: camera.value, text: text.value.trim(),
    })}`), ({ records }) => {
      status.replaceChildren(h("p", { class: "hint",
        text: records.length >= LIMIT ? t("audit.limited", { count: records.length }) : t("audit.count", { count: records.length }) }));
      results.replaceChildren(records.length ? table(records) : notice("info", t("audit.none")));
    }, t("audit.failed"));
  }

  function table(records) {
    const head = ["audit.col_time", "audit.col_actor", "audit.col_action", "audit.col_camera", "audit.col_range", "audit.col_reason", "audit.col_detail"];
    return h("table", { class: "audit-table" },
      h("thead", {}, h("tr", {}, ...head.map((key) => h("th", { scope: "col", text: t(key) })))),
      h("tbody", {}, ...records.map((r) => h("tr", {},
        h("td", { class: "nowrap", text: formatDateTime(r.time_ms) }),
        h("td", { text: r.actor }),
        h("td", { text: tEnum("action", r.action) }),
        h("td", { text: r.camera ? names.get(r.camera) || r.camera : "" }),
        h("td", { class: "nowrap", text: r.from_ms !== null && r.to_ms !== null ? `${formatDateTime(r.from_ms)} – ${formatDateTime(r.to_ms)}` : "" }),
        h("td", { text: r.reason || "" }),
        h("td", { class: "detail", text: r.detail || "" })))));
  }

  form.addEventListener("submit", search);
  search();
  return () => { destroyed = true; };
}
