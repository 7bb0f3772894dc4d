// Sign-in. Until the box has an admin there is nothing to sign in to: explain how to make one instead.
import { api, errorText } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";
import { errorMessage, field, notice } from "../ui.js";

const FIRST_ADMIN = "edgenvr user add --config /etc/edgenvr/edgenvr.toml --name NAME --role admin --password-stdin";

/**
 * onSignedIn(answer of POST /api/login) runs after a successful sign-in. languageButton: the switch.
 * firstAdmin: the command that makes the first admin (the city hub shows its own).
 */
export function render(main, { onSignedIn, languageButton, firstAdmin = FIRST_ADMIN }) {
  const box = h("div", { class: "signin-box" });
  main.append(h("section", { class: "signin" },
    h("div", { class: "signin-top" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), languageButton),
    box));
  box.append(h("p", { class: "loading", text: t("common.loading") }));

  api("/api/login").then(({ admin_exists: adminExists }) => {
    box.replaceChildren(...(adminExists ? form(onSignedIn) : noAdmin(firstAdmin)));
    box.querySelector("input")?.focus();
  }).catch((error) => {
    box.replaceChildren(notice("error", t("signin.unreachable"), " ", errorMessage(error)),
      h("button", { type: "button", text: t("common.retry"), onclick: () => location.reload() }));
  });
}

function noAdmin(firstAdmin) {
  return [
    h("h1", { text: t("signin.no_admin_title") }),
    h("p", { text: t("signin.no_admin_text") }),
    h("pre", { class: "command" }, h("code", { text: firstAdmin })),
    h("p", { text: t("signin.no_admin_after") }),
    h("button", { type: "button", text: t("signin.check_again"), onclick: () => location.reload() }),
  ];
}

function form(onSignedIn) {
  const name = h("input", { type: "text", autocomplete: "username", autocapitalize: "none", spellcheck: "false", required: true, maxlength: "64" });
  const password = h("input", { type: "password", autocomplete: "current-password", required: true });
  const message = h("div", { "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "primary wide", text: t("signin.submit") });

  const signIn = async (event) => {
    event.preventDefault();
    if (!name.value.trim() || !password.value) {
      message.replaceChildren(notice("error", t("signin.fill_in")));
      return;
    }
    submit.disabled = true;
    message.replaceChildren(h("p", { class: "loading", text: t("signin.checking") }));
    try {
      const response = await fetch("/api/login", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ name: name.value.trim(), password: password.value }),
      });
      if (response.ok) {
        password.value = "";
        onSignedIn(await response.json());
        return;
      }
      // the box's own message says what happened (and until when an account is locked)
      const lead = { 401: "signin.wrong", 423: "signin.locked", 429: "signin.too_many", 409: "signin.no_admin_title" }[response.status];
      const text = await errorText(response);
      message.replaceChildren(notice("error", lead ? t(lead) : t("error.http", { status: response.status }),
        text ? h("br") : null, text ? h("span", { class: "detail", text }) : null));
      if (response.status === 401) {
        password.value = "";
        password.focus();
      }
    } catch {
      message.replaceChildren(notice("error", t("error.network")));
    } finally {
      submit.disabled = false;
    }
  };

  return [
    h("h1", { text: t("signin.title") }),
    h("form", { class: "signin-form", onsubmit: signIn, novalidate: true },
      field(t("signin.name"), name),
      field(t("signin.password"), password),
      message,
      submit),
    h("p", { class: "hint", text: t("signin.forgot") }),
  ];
}
