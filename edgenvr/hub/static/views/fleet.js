// The fleet: every enrolled box's last report, troubled ones first (silent, a camera offline, tamper), refreshed
// while the screen is open.
import { api } from "../api.js";
import { h } from "../dom.js";
import { t, tEnum } from "../i18n.js";
import { formatDuration, formatWhen } from "../time.js";
import { errorMessage, notice } from "../ui.js";

const REFRESH_MS = 15_000;

export function render(main) {
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  const status = h("div");
  const results = h("div", { class: "table-wrap" });
  main.append(h("div", { class: "page-head" }, h("h1", { text: t("fleet.title") })), summary, status, results);
  let timer = null;
  let destroyed = false;

  async function load() {
    try {
      const { boxes, now_ms: nowMs } = await api("/api/fleet");
      if (destroyed) return;
      status.replaceChildren();
      const trouble = boxes.filter((box) => box.silent || box.cameras_offline.length || box.tamper.length).length;
      summary.textContent = t("fleet.summary", { total: boxes.length, trouble });
      results.replaceChildren(boxes.length ? table(boxes, nowMs) : notice("info", t("fleet.none")));
    } catch (error) {
      if (!destroyed) status.replaceChildren(notice("error", t("fleet.failed"), " ", errorMessage(error)));
    } finally {
      if (!destroyed) timer = setTimeout(load, REFRESH_MS);
    }
  }

  load();
  return () => {
    destroyed = true;
    clearTimeout(timer);
  };
}

function badge(look, text, title) {
  return h("span", { class: `badge badge-${look}`, title }, h("span", { class: "badge-dot", "aria-hidden": "true" }), text);
}

function table(boxes, nowMs) {
  const head = ["fleet.col_box", "fleet.col_report", "fleet.col_cameras", "fleet.col_tamper", "fleet.col_backlog",
    "fleet.col_disk"];
  return h("table", { class: "audit-table hub-table" },
    h("thead", {}, h("tr", {}, ...head.map((key) => h("th", { scope: "col", text: t(key) })))),
    h("tbody", {}, ...boxes.map((box) => row(box, nowMs))));
}

function row(box, nowMs) {
  const cameras = Object.keys(box.cameras);
  const trouble = box.silent || box.cameras_offline.length > 0 || box.tamper.length > 0;
  const report = box.last_report_ms === null
    ? t("fleet.never")
    : t("fleet.ago", { time: formatWhen(box.last_report_ms), age: formatDuration(nowMs - box.last_report_ms) });
  return h("tr", { class: trouble ? "is-trouble" : undefined, dataset: { box: box.box } },
    h("td", {},
      h("div", { class: "box-id", text: box.box }),
      h("div", { class: "hint", text: box.site }),
      box.revoked ? h("div", { class: "badges" }, badge("off", t("fleet.revoked"))) : null),
    h("td", {},
      h("div", { text: report }),
      h("div", { class: "badges" },
        box.silent ? badge("bad", t("fleet.silent")) : badge("ok", t("fleet.reporting")),
        box.clock_synchronised === false ? badge("warn", t("fleet.clock_unsynchronised")) : null)),
    h("td", {},
      h("div", { text: t("fleet.cameras_count", { count: cameras.length, offline: box.cameras_offline.length }) }),
      h("div", { class: "badges" }, ...box.cameras_offline.map((camera) =>
        badge("bad", t("fleet.camera_state", { camera, state: tEnum("state", box.cameras[camera]) }))))),
    h("td", {}, box.tamper.length
      ? h("div", { class: "badges" }, ...box.tamper.map((event) =>
        h("span", { class: "badge badge-tamper" }, h("span", { class: "badge-icon", "aria-hidden": "true", text: "⚠" }),
          t("fleet.tamper_item", { camera: event.camera, kind: tEnum("tamper", event.subkind) }))))
      : h("span", { class: "hint", text: t("fleet.no_tamper") })),
    h("td", {},
      h("div", { text: String(box.backlog) }),
      box.backlog_oldest_ms ? h("div", { class: "hint", text: t("fleet.backlog_oldest", { age: formatDuration(nowMs - box.backlog_oldest_ms) }) }) : null,
      box.sync_problem ? h("div", { class: "hint", text: box.sync_problem }) : null),
    h("td", { class: "nowrap", text: box.disk_free_percent === null ? "–" : t("fleet.disk_free", { percent: box.disk_free_percent }) }));
}
