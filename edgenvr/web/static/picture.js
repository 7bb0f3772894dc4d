// A camera's current picture: live video while it is on screen, else (or when live cannot play) the newest
// event snapshot with a sentence saying why. Never a silent black box.
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { LiveStream } from "./live.js";
import { newestSnapshot } from "./snapshots.js";
import { formatWhen } from "./time.js";

const NO_LIVE_STATES = new Set(["offline", "disabled", "stopped"]);
// a tile scrolled away (or a tab switched) keeps its stream this long: scrolling past a tile and back does not
// reconnect (each connection is an audit record and a new key-frame wait)
const STOP_AFTER_MS = 5000;

export class CameraPicture {
  constructor(camera) {
    this.video = h("video", { class: "picture-video", muted: true, autoplay: true, playsInline: true,
      "aria-hidden": "true" });
    this.snapshot = h("img", { class: "picture-snapshot", alt: "", hidden: true, decoding: "async" });
    this.message = h("p", { class: "picture-message" });
    this.overlay = h("div", { class: "picture-overlay" }, this.message);
    this.liveBadge = h("span", { class: "live-badge", hidden: true, text: t("live.badge") });
    this.element = h("div", { class: "picture" }, this.video, this.snapshot, this.overlay, this.liveBadge);
    this.live = new LiveStream(this.video, camera.id, (status, detail) => this.onLive(status, detail));
    this.visible = false;
    this.liveStatus = "";
    this.camera = camera;
    this.refresh();
  }

  update(camera) {
    this.camera = camera;
    this.refresh();
  }

  setVisible(visible) {
    this.visible = visible;
    this.refresh();
  }

  destroy() {
    clearTimeout(this.stopTimer);
    this.live.stop();
  }

  refresh() {
    const noLive = NO_LIVE_STATES.has(this.camera.state);
    if (this.visible && !noLive && !document.hidden) {
      clearTimeout(this.stopTimer);
      this.stopTimer = null;
      this.live.start();
      if (!this.liveStatus) this.show(t("live.connecting"), false);
      return;
    }
    if (!noLive && this.liveStatus) {
      this.stopTimer ??= setTimeout(() => this.stopLive(false), STOP_AFTER_MS);
      return;
    }
    this.stopLive(noLive);
  }

  stopLive(noLive) {
    clearTimeout(this.stopTimer);
    this.stopTimer = null;
    this.live.stop();
    this.liveStatus = "";
    if (noLive) {
      this.show(this.camera.state === "offline" ? t("live.offline") : t("live.disabled"), true);
    } else {
      this.show(t("live.paused"), false);   // off screen or page hidden: nothing streams
    }
  }

  onLive(status, detail) {
    this.liveStatus = status;
    const messages = {
      connecting: [t("live.connecting"), false],
      reconnecting: [t("live.reconnecting"), false],
      waiting: [t("live.waiting"), true],
      unavailable: [t("live.unavailable"), true],
      unsupported: [t("live.unsupported"), true],
      error: [t("live.error", { detail: detail || "" }), true],
    };
    if (status === "playing") {
      this.overlay.hidden = true;
      this.snapshot.hidden = true;
      this.liveBadge.hidden = false;
      this.video.classList.remove("is-hidden");
      return;
    }
    const [text, withSnapshot] = messages[status] || [t("live.unavailable"), true];
    this.show(text, withSnapshot);
  }

  /** An explanation over the picture; with the newest snapshot behind it when asked. */
  show(text, withSnapshot) {
    this.liveBadge.hidden = true;
    this.overlay.hidden = false;
    this.message.replaceChildren(text);
    if (!withSnapshot) return;
    this.video.classList.add("is-hidden");
    const camera = this.camera.id;
    newestSnapshot(camera).then((found) => {
      if (this.camera.id !== camera || this.liveStatus === "playing") return;
      if (!found) {
        this.message.replaceChildren(text, h("br"), t("live.no_snapshot"));
        return;
      }
      this.snapshot.src = found.url;
      this.snapshot.alt = t("live.snapshot_alt", { time: formatWhen(found.time_ms) });
      this.snapshot.hidden = false;
      this.message.replaceChildren(text, h("br"), t("live.snapshot_of", { time: formatWhen(found.time_ms) }));
    });
  }
}

/**
 * Tells pictures whether they are on screen and the page is shown: live video runs only then.
 * watch(element, picture) / unwatch(element) / disconnect().
 */
export class VisibilityWatch {
  constructor() {
    this.pictures = new Map();
    this.observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const picture = this.pictures.get(entry.target);
        if (picture) picture.setVisible(entry.isIntersecting);
      }
    }, { threshold: 0.15 });
    this.onPageVisibility = () => {
      for (const picture of this.pictures.values()) picture.refresh();
    };
    document.addEventListener("visibilitychange", this.onPageVisibility);
  }

  watch(element, picture) {
    this.pictures.set(element, picture);
    this.observer.observe(element);
  }

  unwatch(element) {
    this.observer.unobserve(element);
    this.pictures.delete(element);
  }

  disconnect() {
    this.observer.disconnect();
    document.removeEventListener("visibilitychange", this.onPageVisibility);
    for (const picture of this.pictures.values()) picture.destroy();
    this.pictures.clear();
  }
}
