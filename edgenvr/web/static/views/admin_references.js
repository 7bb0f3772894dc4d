// Reference views: per camera, the picture "moved" detection compares with (provisional until approved)
// beside what the camera sees now, and a button to approve the current view.
import { api, cameraPath } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";
import { CameraPicture, VisibilityWatch } from "../picture.js";
import { formatDateTime } from "../time.js";
import { cameraBadges, errorMessage, notice, toast } from "../ui.js";

export function render(body) {
  const status = h("div");
  const list = h("ul", { class: "reference-list" });
  body.append(h("p", { class: "hint", text: t("references.explained") }), status, list);
  const watch = new VisibilityWatch();
  let destroyed = false;
  let pictures = [];

  async function load() {
    try {
      const { cameras } = await api("/api/cameras");
      if (destroyed) return;
      status.replaceChildren(cameras.length ? "" : notice("info", t("cameras.none")));
      for (const old of pictures) {
        watch.unwatch(old.element);
        old.destroy();
      }
      pictures = [];
      list.replaceChildren(...cameras.map(card));
    } catch (error) {
      if (!destroyed) status.replaceChildren(notice("error", t("cameras.load_failed"), " ", errorMessage(error)));
    }
  }

  function card(camera) {
    const reference = camera.reference;
    const image = h("img", { class: "reference-image", alt: t("references.image_alt", { camera: camera.name || camera.id }), decoding: "async" });
    const missing = h("p", { class: "picture-message", hidden: true, text: t("references.none") });
    if (reference) {
      // a new approval changes approved_ms: a new URL, so the browser does not show the old picture
      image.src = `${cameraPath(camera.id)}/reference.png?v=${reference.approved_ms}`;
      image.addEventListener("error", () => { image.hidden = true; missing.hidden = false; });
    } else {
      image.hidden = true;
      missing.hidden = false;
    }
    const state = !reference ? t("references.none")
      : reference.provisional ? t("references.provisional", { time: formatDateTime(reference.approved_ms, false) })
        : t("references.approved_by", { name: reference.approved_by, time: formatDateTime(reference.approved_ms, false) });

    const picture = new CameraPicture(camera);
    pictures.push(picture);
    watch.watch(picture.element, picture);

    const message = h("div", { "aria-live": "polite" });
    const approve = h("button", { type: "button", class: "primary", text: t("references.approve") });
    approve.addEventListener("click", async () => {
      if (!window.confirm(t("references.approve_confirm", { camera: camera.name || camera.id }))) return;
      approve.disabled = true;
      message.replaceChildren(notice("info", t("references.approving")));
      try {
        await api(`${cameraPath(camera.id)}/reference/approve`, { method: "POST" });
        toast(t("references.approved_ok", { camera: camera.name || camera.id }));
        load();
      } catch (error) {
        approve.disabled = false;
        message.replaceChildren(notice("error", t("references.approve_failed"), " ", errorMessage(error)));
      }
    });

    return h("li", { class: "card reference-card" },
      h("h2", { class: "card-title", text: camera.name || camera.id }),
      h("div", { class: "badges" }, ...cameraBadges(camera)),
      h("div", { class: "compare" },
        h("figure", {}, h("div", { class: "figure-box" }, image, missing),
          h("figcaption", {}, h("strong", { text: t("references.in_use") }), h("br"), state)),
        h("figure", {}, picture.element,
          h("figcaption", {}, h("strong", { text: t("references.now") }), h("br"), t("references.now_hint")))),
      message,
      h("div", { class: "actions" }, approve));
  }

  load();
  return () => {
    destroyed = true;
    watch.disconnect();
  };
}
