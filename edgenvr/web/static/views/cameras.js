// Home: every camera the user may see, its state at a glance and its live picture; a tap opens playback.
import { api } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";
import { CameraPicture, VisibilityWatch } from "../picture.js";
import { cameraBadges, errorMessage, notice } from "../ui.js";

const REFRESH_MS = 5000;

export function render(main) {
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  const status = h("div");
  const grid = h("ul", { class: "camera-grid", "aria-label": t("cameras.title") });
  main.append(h("section", { class: "cameras" },
    h("div", { class: "page-head" }, h("h1", { text: t("cameras.title") }), summary),
    status, grid));

  const tiles = new Map();   // camera id -> {item, picture, badges, name}
  const watch = new VisibilityWatch();
  let timer = null;
  let destroyed = false;

  function tile(camera) {
    const picture = new CameraPicture(camera);
    const name = h("span", { class: "tile-name" });
    const badges = h("span", { class: "badges" });
    const link = h("a", { class: "tile-link", href: `#/camera/${encodeURIComponent(camera.id)}` },
      picture.element, h("span", { class: "tile-caption" }, name, badges),
      h("span", { class: "tile-action", text: t("cameras.open_playback") }));
    const item = h("li", { class: "tile" }, link);
    watch.watch(picture.element, picture);
    return { item, picture, badges, name };
  }

  function show(cameras) {
    const seen = new Set();
    cameras.forEach((camera, index) => {
      seen.add(camera.id);
      let entry = tiles.get(camera.id);
      if (!entry) {
        entry = tile(camera);
        tiles.set(camera.id, entry);
      }
      if (grid.children[index] !== entry.item) grid.insertBefore(entry.item, grid.children[index] || null);
      entry.name.textContent = camera.name || camera.id;
      entry.badges.replaceChildren(...cameraBadges(camera));
      entry.item.classList.toggle("is-alert", camera.state === "offline" || camera.tamper?.length > 0);
      entry.picture.update(camera);
    });
    for (const [id, entry] of tiles) {
      if (seen.has(id)) continue;
      watch.unwatch(entry.picture.element);
      entry.picture.destroy();
      entry.item.remove();
      tiles.delete(id);
    }
    const counts = { recording: 0, trouble: 0 };
    for (const camera of cameras) {
      if (camera.state === "recording") counts.recording++;
      else if (camera.state !== "disabled") counts.trouble++;
    }
    summary.textContent = cameras.length
      ? t("cameras.summary", { total: cameras.length, recording: counts.recording, trouble: counts.trouble })
      : "";
    status.replaceChildren(cameras.length ? "" : notice("info", t("cameras.none")));
  }

  async function load() {
    try {
      const { cameras } = await api("/api/cameras");
      if (destroyed) return;
      show(cameras);
    } catch (error) {
      if (destroyed) return;
      status.replaceChildren(notice("error", t("cameras.load_failed"), " ", errorMessage(error)));
    }
    if (!destroyed) timer = setTimeout(load, REFRESH_MS);
  }
  load();

  return () => {
    destroyed = true;
    clearTimeout(timer);
    watch.disconnect();
  };
}
