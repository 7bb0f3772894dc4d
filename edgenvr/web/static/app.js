// The UI's entry point: language, who is signed in, the header, and the hash router that shows one screen
// at a time (each view returns a function that stops its timers, sockets and players).
import { SIGNED_OUT_EVENT, api, setCsrfToken } from "./api.js";
import { h } from "./dom.js";
import { initLanguage, language, setLanguage, t, tEnum } from "./i18n.js";
import { may, session, signedIn, signedOut } from "./session.js";
import { errorMessage, notice } from "./ui.js";
import * as admin from "./views/admin.js";
import * as cameras from "./views/cameras.js";
import * as holds from "./views/holds.js";
import * as login from "./views/login.js";
import * as playback from "./views/playback.js";
import * as setup from "./views/setup.js";

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
let cleanup = null;
let showingSignIn = false;
let setupShown = null;   // GET /api/setup's answer while the setup page is shown (a box without an admin)

/** "#/camera/gate?day=2024-06-01" -> {path: ["camera", "gate"], params: {day: "2024-06-01"}} */
function parseHash() {
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const params = Object.fromEntries(new URLSearchParams(search || ""));
  return { path: path.split("/").filter(Boolean).map(decodeURIComponent), params };
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
  const { path, params } = parseHash();
  const [page, arg] = path;
  let section = "cameras";
  document.title = session.box?.name ? `${session.box.name} · edgenvr` : "edgenvr";
  if (page === "camera" && arg && may("view")) {
    cleanup = playback.render(main, { ...params, camera: arg });
  } else if (page === "holds" && may("hold")) {
    section = "holds";
    cleanup = holds.render(main, params);
  } else if (page === "admin" && admin.allowedTabs().length) {
    section = "admin";
    cleanup = admin.render(main, { ...params, tab: arg });
  } else {
    cleanup = cameras.render(main, params);
  }
  renderHeader(section);
}

function languageButton() {
  const other = language() === "id" ? "en" : "id";
  return h("button", {
    type: "button", class: "lang-button", lang: other, "aria-label": t("language.switch_label"),
    onclick: async () => {
      await setLanguage(other);
      if (setupShown) showSetup(setupShown);
      else if (showingSignIn) showSignIn(true);
      else route();
    },
  }, h("span", { class: "long-label", text: t("language.other") }), h("span", { class: "short-label", text: t("language.short") }));
}

function renderHeader(section) {
  const link = (id, href, key) => h("a", { href, class: "nav-link", text: t(key), "aria-current": section === id ? "page" : undefined });
  const signOut = h("button", { type: "button", class: "quiet", text: t("header.sign_out"), onclick: async () => {
    try { await api("/api/logout", { method: "POST" }); } catch { /* signed out on the box or not: leave anyway */ }
    setCsrfToken(null);
    signedOut();
    showSignIn(true);
  } });
  topbar.hidden = false;
  topbar.replaceChildren(
    h("div", { class: "brand-block" },
      h("a", { class: "brand", href: "#/cameras" },
        h("span", { class: "brand-mark", "aria-hidden": "true" }),
        h("span", { class: "brand-name", text: session.box?.name || "edgenvr" })),
      h("span", { class: "user-name" }, h("span", { class: "visually-hidden", text: t("header.signed_in_as") }), " ",
        session.user.name, " ", h("span", { class: "hint", text: `(${tEnum("role", session.user.role)})` }))),
    h("nav", { class: "nav", "aria-label": t("header.navigation") },
      link("cameras", "#/cameras", "nav.cameras"),
      may("hold") ? link("holds", "#/holds", "nav.holds") : null,
      admin.allowedTabs().length ? link("admin", `#/admin/${admin.allowedTabs()[0].id}`, "nav.admin") : null),
    h("div", { class: "user-area" },
      languageButton(),
      signOut));
}

function showSignIn(force = false) {
  if (showingSignIn && !force) return;
  showingSignIn = true;
  signedOut();
  stopView();
  topbar.hidden = true;
  document.title = "edgenvr";
  login.render(main, { onSignedIn: afterSignIn, languageButton: languageButton() });
}

function showSetup(status) {
  setupShown = status;
  stopView();
  topbar.hidden = true;
  document.title = "edgenvr";
  setup.render(main, { status, languageButton: languageButton(), onDone: () => {
    setupShown = null;
    showSignIn(true);
  } });
}

async function afterSignIn(answer) {
  setCsrfToken(answer.csrf_token);
  signedIn(answer.user);
  showingSignIn = false;
  try {
    const me = await api("/api/me");   // the box's name (and the same token again)
    setCsrfToken(me.csrf_token);
    signedIn(me.user, me.box);
  } catch { /* the header then shows "edgenvr"; everything else works */ }
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
  const setupStatus = await setup.setupStatus();   // a box without an admin serves its setup page only
  if (setupStatus?.required) {
    showSetup(setupStatus);
    return;
  }
  try {
    const me = await api("/api/me");
    setCsrfToken(me.csrf_token);
    signedIn(me.user, me.box);
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
