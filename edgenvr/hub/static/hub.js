// The city hub's UI: language, who is signed in, the header, and a hash router showing one screen at a time
// (each view returns a function that stops its timers and players). The box UI's modules (api, dom, i18n,
// session, time, ui, the sign-in view, app.css) are served from the box's static dir: one look, one copy.
import { SIGNED_OUT_EVENT, api, setCsrfToken } from "./api.js";
import { h } from "./dom.js";
import { initLanguage, language, setLanguage, t, tEnum } from "./i18n.js";
import { may, session, signedIn, signedOut } from "./session.js";
import { errorMessage, notice } from "./ui.js";
import * as audit from "./views/admin_audit.js";
import * as clips from "./views/clips.js";
import * as fleet from "./views/fleet.js";
import * as login from "./views/login.js";
import * as pulls from "./views/pulls.js";

const FIRST_ADMIN = "edgenvr hub user add --config /etc/edgenvr/hub.toml --name NAME --role admin --password-stdin";
const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
let cleanup = null;
let showingSignIn = false;

/** "#/clips?clip=ab12" -> {page: "clips", params: {clip: "ab12"}} */
function parseHash() {
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  return { page: path.split("/").filter(Boolean)[0] || "", params: Object.fromEntries(new URLSearchParams(search || "")) };
}

function stopView() {
  if (typeof cleanup === "function") {
    try { cleanup(); } catch (error) { console.error(error); }
  }
  cleanup = null;
  main.replaceChildren();
}

function route() {
  if (!session.user) return;
  stopView();
  const { page, params } = parseHash();
  let section = "fleet";
  document.title = `${t("hub.title")} · edgenvr`;
  if (!may("view")) {
    main.append(notice("info", t("hub.nothing")));
  } else if (page === "clips") {
    section = "clips";
    cleanup = clips.render(main, params);
  } else if (page === "pulls" && may("export")) {
    section = "pulls";
    cleanup = pulls.render(main, params);
  } else if (page === "audit" && may("read_audit")) {
    section = "audit";
    const body = h("section", { class: "panel" }, h("h1", { text: t("hub.audit_title") }));
    main.append(body);
    cleanup = audit.render(body, params, { cameras: fleetCameras });
  } else {
    cleanup = fleet.render(main, params);
  }
  renderHeader(section);
}

/** Every camera the boxes last reported, as the hub's audit trail names them: box/camera. */
async function fleetCameras() {
  const { boxes } = await api("/api/fleet");
  return boxes.flatMap((box) => Object.keys(box.cameras).map((camera) => ({ id: `${box.box}/${camera}`, name: `${box.box}/${camera}` })));
}

function languageButton() {
  const other = language() === "id" ? "en" : "id";
  return h("button", {
    type: "button", class: "lang-button", lang: other, "aria-label": t("language.switch_label"),
    onclick: async () => {
      await setLanguage(other);
      if (showingSignIn) showSignIn(true);
      else route();
    },
  }, h("span", { class: "long-label", text: t("language.other") }), h("span", { class: "short-label", text: t("language.short") }));
}

function renderHeader(section) {
  const link = (id, key) => h("a", { href: `#/${id}`, class: "nav-link", text: t(key), "aria-current": section === id ? "page" : undefined });
  const signOut = h("button", { type: "button", class: "quiet", text: t("header.sign_out"), onclick: async () => {
    try { await api("/api/logout", { method: "POST" }); } catch { /* signed out at the hub or not: leave anyway */ }
    setCsrfToken(null);
    signedOut();
    showSignIn(true);
  } });
  topbar.hidden = false;
  topbar.replaceChildren(
    h("div", { class: "brand-block" },
      h("a", { class: "brand", href: "#/fleet" },
        h("span", { class: "brand-mark", "aria-hidden": "true" }),
        h("span", { class: "brand-name", text: t("hub.title") })),
      h("span", { class: "user-name" }, h("span", { class: "visually-hidden", text: t("header.signed_in_as") }), " ",
        session.user.name, " ", h("span", { class: "hint", text: `(${tEnum("role", session.user.role)})` }))),
    h("nav", { class: "nav", "aria-label": t("header.navigation") },
      may("view") ? link("fleet", "nav.fleet") : null,
      may("view") ? link("clips", "nav.clips") : null,
      may("export") ? link("pulls", "nav.pulls") : null,
      may("read_audit") ? link("audit", "nav.audit") : null),
    h("div", { class: "user-area" }, languageButton(), signOut));
}

function showSignIn(force = false) {
  if (showingSignIn && !force) return;
  showingSignIn = true;
  signedOut();
  stopView();
  topbar.hidden = true;
  document.title = `${t("hub.title")} · edgenvr`;
  login.render(main, { onSignedIn: afterSignIn, languageButton: languageButton(), firstAdmin: FIRST_ADMIN });
}

async function afterSignIn(answer) {
  setCsrfToken(answer.csrf_token);
  signedIn(answer.user);
  showingSignIn = false;
  route();
  main.focus({ preventScroll: true });
}

async function boot() {
  try {
    await initLanguage();
  } catch (error) {
    main.replaceChildren(h("p", { class: "boot-message", text: `${error}` }));
    return;
  }
  window.addEventListener(SIGNED_OUT_EVENT, () => showSignIn());
  window.addEventListener("hashchange", route);
  document.getElementById("skip-link").textContent = t("header.skip");
  try {
    const me = await api("/api/me");
    setCsrfToken(me.csrf_token);
    signedIn(me.user);
    route();
  } catch (error) {
    if (error.status === 401) {
      showSignIn();
      return;
    }
    main.replaceChildren(notice("error", t("boot.failed"), " ", errorMessage(error)),
      h("button", { type: "button", text: t("common.retry"), onclick: () => location.reload() }));
  }
}

boot();
