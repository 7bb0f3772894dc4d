// API tokens: for scripts and other systems. A new token is shown once, with a copy button.
import { api, query } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";
import { formatDateTime } from "../time.js";
import { copyText, errorMessage, field, notice, toast } from "../ui.js";

export function render(body) {
  const status = h("div");
  const created = h("div");
  const list = h("ul", { class: "card-list" });
  const showRevoked = h("input", { type: "checkbox" });
  const user = h("select", { required: true });
  const label = h("input", { type: "text", required: true, maxlength: "80" });
  const message = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "panel", novalidate: true },
    h("h2", { text: t("tokens.create_title") }),
    h("div", { class: "field-row" }, field(t("tokens.user"), user), field(t("tokens.label"), label, t("tokens.label_hint"))),
    message,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: t("tokens.create") })));
  body.append(form, created,
    h("div", { class: "page-head" }, h("h2", { text: t("tokens.list_title") }),
      h("label", { class: "check" }, showRevoked, t("tokens.show_revoked"))),
    status, list);
  let destroyed = false;
  let tokens = [];

  async function load() {
    try {
      const [{ users }, answer] = await Promise.all([api("/api/users"), api(`/api/tokens${query({})}`)]);
      if (destroyed) return;
      const chosen = user.value;
      user.replaceChildren(...users.map((u) => h("option", { value: u.name, text: u.name, selected: u.name === chosen })));
      tokens = answer.tokens;
      draw();
    } catch (error) {
      if (!destroyed) status.replaceChildren(notice("error", t("tokens.load_failed"), " ", errorMessage(error)));
    }
  }

  function draw() {
    const shown = tokens.filter((token) => showRevoked.checked || token.revoked_ms === null);
    status.replaceChildren(shown.length ? "" : notice("info", t("tokens.none")));
    list.replaceChildren(...shown.map((token) => {
      const item = h("li", { class: `card${token.revoked_ms ? " is-released" : ""}` },
        h("h3", { class: "card-title", text: token.label }),
        h("p", { text: t("tokens.meta", { id: token.id, user: token.user, created: formatDateTime(token.created_ms, false) }) }),
        h("p", { class: "hint", text: token.last_used_ms ? t("tokens.last_used", { time: formatDateTime(token.last_used_ms, false) }) : t("tokens.never_used") }),
        token.revoked_ms ? h("p", { class: "released-note", text: t("tokens.revoked", { time: formatDateTime(token.revoked_ms, false) }) }) : null);
      if (!token.revoked_ms) {
        item.append(h("div", { class: "actions" }, h("button", { type: "button", class: "danger", text: t("tokens.revoke"), onclick: async () => {
          if (!window.confirm(t("tokens.revoke_confirm", { label: token.label, user: token.user }))) return;
          try {
            await api(`/api/tokens/${encodeURIComponent(token.id)}`, { method: "DELETE" });
            toast(t("tokens.revoked_ok"));
            load();
          } catch (error) {
            status.replaceChildren(notice("error", t("tokens.revoke_failed"), " ", errorMessage(error)));
          }
        } })));
      }
      return item;
    }));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!user.value || !label.value.trim()) {
      message.replaceChildren(notice("error", t("tokens.need_label")));
      return;
    }
    try {
      const answer = await api(`/api/users/${encodeURIComponent(user.value)}/tokens`, { method: "POST", body: { label: label.value.trim() } });
      message.replaceChildren();
      label.value = "";
      created.replaceChildren(shownOnce(answer));
      load();
    } catch (error) {
      message.replaceChildren(notice("error", t("tokens.create_failed"), " ", errorMessage(error)));
    }
  });
  showRevoked.addEventListener("change", draw);
  load();
  return () => { destroyed = true; };
}

/** The secret, once: it is not stored readably on the box, so it cannot be shown again. */
function shownOnce(answer) {
  const secret = h("input", { type: "text", readOnly: true, value: answer.token, class: "secret", "aria-label": t("tokens.secret") });
  const copied = h("span", { class: "hint", "aria-live": "polite" });
  const box = h("div", { class: "notice notice-warning", role: "alert" },
    h("p", {}, h("strong", { text: t("tokens.once_title") })),
    h("p", { text: t("tokens.once_text", { label: answer.label, user: answer.user }) }),
    h("div", { class: "copy-row" }, secret,
      h("button", { type: "button", class: "primary", text: t("tokens.copy"), onclick: async () => {
        copied.textContent = (await copyText(answer.token, secret)) ? t("tokens.copied") : t("tokens.copy_by_hand");
      } })),
    copied,
    h("p", { class: "hint", text: t("tokens.how_to_use") }),
    h("button", { type: "button", class: "quiet", text: t("tokens.done"), onclick: () => box.remove() }));
  return box;
}
