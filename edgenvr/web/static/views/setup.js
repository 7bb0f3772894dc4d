// The setup page of a box without an admin: the one-time setup code (from the box's screen, or the provisioning
// file) and the first admin's name and password. Until an admin exists the box serves nothing else.
import { api, errorText } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";
import { field, notice } from "../ui.js";

/**
 * status: the answer of GET /api/setup ({required, code: "console" | "provisioned" | null, command}).
 * onDone() runs once the admin exists (the caller shows sign-in). languageButton: the switch.
 */
export function render(main, { status, onDone, languageButton }) {
  const box = h("div", { class: "signin-box" });
  main.append(h("section", { class: "signin" },
    h("div", { class: "signin-top" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), languageButton),
    box));
  box.append(...(status.code ? form(status, onDone) : noCode(status)));
  box.querySelector("input")?.focus();
}

function noCode(status) {
  return [
    h("h1", { text: t("setup.title") }),
    notice("warning", t("setup.no_code")),
    h("pre", { class: "command" }, h("code", { text: status.command })),
    h("button", { type: "button", text: t("signin.check_again"), onclick: () => location.reload() }),
  ];
}

function form(status, onDone) {
  const code = h("input", { type: "text", autocomplete: "one-time-code", autocapitalize: "characters", spellcheck: "false", required: true, maxlength: "128" });
  const name = h("input", { type: "text", autocomplete: "username", autocapitalize: "none", spellcheck: "false", required: true, maxlength: "32", pattern: "[a-z0-9][a-z0-9._\\-]{0,31}" });
  const password = h("input", { type: "password", autocomplete: "new-password", required: true, minlength: "10" });
  const repeat = h("input", { type: "password", autocomplete: "new-password", required: true });
  const message = h("div", { "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "primary wide", text: t("setup.submit") });

  const send = async (event) => {
    event.preventDefault();
    if (!code.value.trim() || !name.value.trim() || !password.value) {
      message.replaceChildren(notice("error", t("setup.fill_in")));
      return;
    }
    if (password.value !== repeat.value) {
      message.replaceChildren(notice("error", t("users.passwords_differ")));
      repeat.focus();
      return;
    }
    submit.disabled = true;
    message.replaceChildren(h("p", { class: "loading", text: t("signin.checking") }));
    try {
      // fetch, not api(): a wrong code's 401 is not a session that ended
      const response = await fetch("/api/setup", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ code: code.value.trim(), name: name.value.trim().toLowerCase(), password: password.value }),
      });
      if (response.ok) {
        password.value = "";
        repeat.value = "";
        const answer = await response.json();
        message.replaceChildren(notice("success", t("setup.done", { name: answer.user.name })));
        submit.hidden = true;
        message.append(h("button", { type: "button", class: "primary wide", text: t("signin.submit"), onclick: onDone }));
        return;
      }
      // the box's own message says what happened (a name or password rule, what to do without a code)
      const lead = { 401: "setup.wrong_code", 409: "setup.conflict", 429: "setup.too_many" }[response.status];
      const text = await errorText(response);
      message.replaceChildren(notice("error", lead ? t(lead) : t("error.http", { status: response.status }),
        text ? h("br") : null, text ? h("span", { class: "detail", text }) : null));
      if (response.status === 401) {
        code.focus();
        code.select();
      }
    } catch {
      message.replaceChildren(notice("error", t("error.network")));
    } finally {
      submit.disabled = false;
    }
  };

  return [
    h("h1", { text: t("setup.title") }),
    h("p", { text: t(status.code === "provisioned" ? "setup.text_provisioned" : "setup.text_console") }),
    h("form", { class: "signin-form", onsubmit: send, novalidate: true },
      field(t("setup.code"), code, t("setup.code_hint")),
      field(t("setup.name"), name, t("setup.name_hint")),
      field(t("setup.password"), password, t("setup.password_hint")),
      field(t("users.password_repeat"), repeat),
      message,
      submit),
  ];
}

/** GET /api/setup, or null when the box cannot say (an older box, or no answer: sign-in shows what is wrong). */
export async function setupStatus() {
  try {
    return await api("/api/setup");
  } catch {
    return null;
  }
}
