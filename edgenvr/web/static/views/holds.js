// Holds: ranges of video kept whatever their age. Listed with their reason; released with a reason.
import { api, query } from "../api.js";
import { h } from "../dom.js";
import { locale, t } from "../i18n.js";
import { dayKey, formatDateTime } from "../time.js";
import { errorMessage, field, notice, toast } from "../ui.js";

export function render(main) {
  const showReleased = h("input", { type: "checkbox" });
  const status = h("div");
  const list = h("ul", { class: "card-list" });
  main.append(h("section", { class: "holds" },
    h("div", { class: "page-head" }, h("h1", { text: t("holds.title") }),
      h("label", { class: "check" }, showReleased, t("holds.show_released"))),
    h("p", { class: "hint", text: t("holds.explained") }),
    status, list));

  let cameraNames = new Map();
  let destroyed = false;

  async function load() {
    status.replaceChildren(h("p", { class: "loading", text: t("common.loading") }));
    try {
      const [{ holds }, { cameras }] = await Promise.all([
        api(`/api/holds${query({ all: showReleased.checked ? "true" : undefined })}`),
        api("/api/cameras"),
      ]);
      if (destroyed) return;
      cameraNames = new Map(cameras.map((c) => [c.id, c.name || c.id]));
      status.replaceChildren(holds.length ? "" : notice("info", t("holds.none")));
      list.replaceChildren(...holds.sort((a, b) => b.created_ms - a.created_ms).map(card));
    } catch (error) {
      if (!destroyed) status.replaceChildren(notice("error", t("holds.load_failed"), " ", errorMessage(error)));
    }
  }

  function card(hold) {
    const size = new Intl.NumberFormat(locale(), { maximumFractionDigits: 1 }).format((hold.bytes || 0) / 1e6);
    const actions = h("div", { class: "actions" },
      h("a", { class: "button", href: `#/camera/${encodeURIComponent(hold.camera)}?day=${dayKey(hold.from_ms)}&t=${hold.from_ms}`,
        text: t("holds.watch") }));
    const item = h("li", { class: `card${hold.in_force ? "" : " is-released"}` },
      h("h2", { class: "card-title", text: cameraNames.get(hold.camera) || hold.camera }),
      h("p", { class: "card-range", text: t("holds.range", { from: formatDateTime(hold.from_ms), to: formatDateTime(hold.to_ms) }) }),
      h("p", {}, h("strong", { text: t("holds.reason") }), " ", hold.reason),
      h("p", { class: "hint", text: t("holds.meta", { created: formatDateTime(hold.created_ms, false), segments: hold.segments ?? 0, size }) }),
      hold.in_force
        ? h("span", { class: "badge badge-ok", text: t("holds.in_force") })
        : h("p", { class: "released-note", text: t("holds.released", { time: formatDateTime(hold.released_ms, false), reason: hold.release_reason || "" }) }),
      actions);
    if (hold.in_force) {
      const release = h("button", { type: "button", text: t("holds.release") });
      release.addEventListener("click", () => {
        release.hidden = true;
        actions.after(releaseForm(hold, () => { release.hidden = false; }));
      });
      actions.append(release);
    }
    return item;
  }

  function releaseForm(hold, onCancel) {
    const reason = h("input", { type: "text", maxlength: "500", required: true });
    const message = h("div", { "aria-live": "polite" });
    const form = h("form", { class: "inline-form", novalidate: true },
      field(t("holds.release_reason"), reason, t("holds.release_hint")),
      message,
      h("div", { class: "actions" },
        h("button", { type: "submit", class: "danger", text: t("holds.release_confirm") }),
        h("button", { type: "button", class: "quiet", text: t("common.cancel"), onclick: () => { form.remove(); onCancel(); } })));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!reason.value.trim()) {
        message.replaceChildren(notice("error", t("holds.need_reason")));
        reason.focus();
        return;
      }
      try {
        await api(`/api/holds/${encodeURIComponent(hold.id)}/release`, { method: "POST", body: { reason: reason.value.trim() } });
        toast(t("holds.released_ok"));
        load();
      } catch (error) {
        message.replaceChildren(notice("error", t("holds.release_failed"), " ", errorMessage(error)));
      }
    });
    setTimeout(() => reason.focus(), 0);
    return form;
  }

  showReleased.addEventListener("change", load);
  load();
  return () => { destroyed = true; };
}
