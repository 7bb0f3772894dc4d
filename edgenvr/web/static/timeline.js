// The day (or night) timeline of one camera: recorded stretches, gaps with their reasons, events as marks,
// the loaded video window and the playhead. Tap or click to play from a time, drag to seek, arrow keys to
// step. Everything is positioned in percent of the shown span, so it fits any width.
import { h, place } from "./dom.js";
import { t, tEnum } from "./i18n.js";
import { HOUR, MINUTE, formatDuration, formatTime } from "./time.js";

const EVENT_KINDS = ["motion", "tamper", "offline", "alert"];
const LABEL_STEPS = [MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR];
const TICK_STEPS = new Map([[MINUTE, MINUTE / 2], [2 * MINUTE, MINUTE], [5 * MINUTE, MINUTE], [10 * MINUTE, 5 * MINUTE],
  [15 * MINUTE, 5 * MINUTE], [30 * MINUTE, 10 * MINUTE], [HOUR, 15 * MINUTE], [2 * HOUR, HOUR], [3 * HOUR, HOUR], [6 * HOUR, HOUR]]);

/** ms since local midnight (ticks fall on local round times, whatever the time zone's offset). */
function localOffset(ms) {
  const date = new Date(ms);
  return ms - new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

function roundUp(ms, step) {
  const offset = localOffset(ms);
  return ms - offset + Math.ceil(offset / step) * step;
}
const KEY_SEEK_DELAY_MS = 350;   // arrow keys step the playhead; the video follows when the keys rest

export class Timeline {
  /** onSeek(ms): the user chose a time (tap, end of a drag, keys); onScrub(ms): a drag is moving. */
  constructor({ onSeek, onScrub }) {
    this.onSeek = onSeek;
    this.onScrub = onScrub || (() => {});
    this.start = 0;
    this.end = 1;
    this.now = Date.now();
    this.data = { recorded: [], gaps: [], events: [] };
    this.playheadMs = null;

    this.recordLane = h("div", { class: "tl-lane tl-lane-rec" });
    this.eventLane = h("div", { class: "tl-lane tl-lane-ev" });
    this.ticks = h("div", { class: "tl-ticks", "aria-hidden": "true" });
    this.future = h("div", { class: "tl-future", hidden: true });
    this.window = h("div", { class: "tl-window", hidden: true });
    this.playhead = h("div", { class: "tl-playhead", hidden: true });
    this.hover = h("div", { class: "tl-hover", hidden: true, "aria-hidden": "true" });
    this.track = h("div", {
      class: "tl-track", role: "slider", tabindex: "0", "aria-label": t("timeline.label"),
      "aria-valuemin": "0", "aria-valuemax": "0", "aria-valuenow": "0",
    }, this.ticks, this.recordLane, this.eventLane, this.future, this.window, this.playhead, this.hover);
    this.labels = h("div", { class: "tl-labels", "aria-hidden": "true" });
    this.info = h("p", { class: "tl-info", "aria-live": "polite" });
    this.element = h("div", { class: "timeline" },
      this.track, this.labels, this.info, legend());

    this.bindPointer();
    this.bindKeys();
  }

  setRange(start, end) {
    this.start = start;
    this.end = end;
    this.track.setAttribute("aria-valuemin", String(start));
    this.track.setAttribute("aria-valuemax", String(end));
    this.drawTicks();
    this.draw();
  }

  setData(data, now) {
    this.data = data;
    this.now = now;
    this.draw();
  }

  /** The part of the span the loaded video covers (null: none). */
  setWindow(start, end) {
    if (start === null || end <= this.start || start >= this.end) {
      this.window.hidden = true;
      return;
    }
    this.window.hidden = false;
    const [left, width] = this.span(start, end);
    place(this.window, left, width);
  }

  setPlayhead(ms) {
    this.playheadMs = ms;
    if (ms === null || ms < this.start || ms > this.end) {
      this.playhead.hidden = true;
      return;
    }
    this.playhead.hidden = false;
    place(this.playhead, this.percent(ms));
    this.track.setAttribute("aria-valuenow", String(Math.round(ms)));
    this.track.setAttribute("aria-valuetext", formatTime(ms));
  }

  percent(ms) {
    return Math.min(100, Math.max(0, ((ms - this.start) / (this.end - this.start)) * 100));
  }

  span(from, to) {
    const left = this.percent(from);
    return [left, Math.max(0, this.percent(to) - left)];
  }

  drawTicks() {
    // about eight labels across, on round local times (3 h for a day, 2 h for a night, 5 min for 30 min...)
    const span = this.end - this.start;
    const labelStep = LABEL_STEPS.find((step) => span / step <= 9) ?? LABEL_STEPS.at(-1);
    const tickStep = TICK_STEPS.get(labelStep);
    const ticks = [];
    const labels = [];
    let index = 0;
    for (let at = roundUp(this.start, tickStep); at <= this.end; at += tickStep) {
      const left = this.percent(at);
      const major = localOffset(at) % labelStep === 0;
      const tick = h("span", { class: major ? "tl-tick tl-tick-major" : "tl-tick" });
      place(tick, left);
      ticks.push(tick);
      if (major) {
        // every other label is "minor": hidden on a phone, where they would overlap
        const minor = index++ % 2 === 1;
        // the labels at both ends are aligned inwards, so they are not cut off
        const edge = left < 3 ? " tl-label-start" : left > 97 ? " tl-label-end" : "";
        const label = h("span", { class: `tl-label${minor ? " tl-label-minor" : ""}${edge}`, text: formatTime(at, false) });
        place(label, left);
        labels.push(label);
      }
    }
    this.ticks.replaceChildren(...ticks);
    this.labels.replaceChildren(...labels);
  }

  draw() {
    const inView = (from, to) => to > this.start && from < this.end;
    const recorded = this.data.recorded.filter((r) => inView(r.start_ms, r.end_ms));
    const gaps = this.data.gaps.filter((g) => inView(g.start_ms, g.end_ms));
    const events = this.data.events.filter((e) => inView(e.start_ms, e.end_ms ?? this.now));
    const bars = [];
    for (const stretch of recorded) {
      const bar = h("div", { class: "tl-rec", title: `${t("legend.recorded")} ${formatTime(stretch.start_ms)}–${formatTime(stretch.end_ms)}` });
      place(bar, ...this.span(stretch.start_ms, stretch.end_ms));
      bars.push(bar);
    }
    for (const gap of gaps) {
      const bar = h("div", { class: "tl-gap", title: gapText(gap) });
      place(bar, ...this.span(gap.start_ms, gap.end_ms));
      bars.push(bar);
    }
    this.recordLane.replaceChildren(...bars);

    const marks = [];
    for (const event of events) {
      const kind = EVENT_KINDS.includes(event.kind) ? event.kind : "alert";
      const mark = h("div", { class: `tl-event tl-event-${kind}`, title: eventText(event, this.now) });
      place(mark, ...this.span(event.start_ms, event.end_ms ?? this.now));
      marks.push(mark);
    }
    this.eventLane.replaceChildren(...marks);

    if (this.now < this.end) {
      this.future.hidden = false;
      place(this.future, ...this.span(Math.max(this.now, this.start), this.end));
    } else {
      this.future.hidden = true;
    }
  }

  /** The time under a pointer, kept within the span and never after now. */
  msAt(clientX) {
    const box = this.track.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (clientX - box.left) / box.width));
    return Math.min(this.start + fraction * (this.end - this.start), this.now);
  }

  bindPointer() {
    let dragging = false;
    const showHover = (ms) => {
      this.hover.hidden = false;
      this.hover.textContent = formatTime(ms);
      place(this.hover, this.percent(ms));
    };
    this.track.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      dragging = true;
      this.track.setPointerCapture(event.pointerId);
      const ms = this.msAt(event.clientX);
      showHover(ms);
      this.setPlayhead(ms);
      event.preventDefault();   // no text selection, no focus flicker
      this.track.focus({ preventScroll: true });
    });
    this.track.addEventListener("pointermove", (event) => {
      const ms = this.msAt(event.clientX);
      showHover(ms);
      if (dragging) {
        this.setPlayhead(ms);
        this.onScrub(ms);
      }
    });
    const finish = (event, seek) => {
      if (!dragging) return;
      dragging = false;
      this.hover.hidden = true;
      if (!seek) return;
      const ms = this.msAt(event.clientX);
      this.describe(ms);
      this.onSeek(ms);
    };
    this.track.addEventListener("pointerup", (event) => finish(event, true));
    this.track.addEventListener("pointercancel", (event) => finish(event, false));
    this.track.addEventListener("pointerleave", () => {
      if (!dragging) this.hover.hidden = true;
    });
  }

  bindKeys() {
    let timer = null;
    this.track.addEventListener("keydown", (event) => {
      const steps = {
        ArrowLeft: -MINUTE, ArrowRight: MINUTE, ArrowDown: -MINUTE, ArrowUp: MINUTE,
        PageDown: -HOUR, PageUp: HOUR,
      };
      let ms = this.playheadMs ?? this.start;
      if (event.key in steps) ms += steps[event.key] * (event.shiftKey ? 10 : 1);
      else if (event.key === "Home") ms = this.start;
      else if (event.key === "End") ms = this.now;
      else if (event.key === "Enter" || event.key === " ") ms = this.playheadMs ?? this.start;
      else return;
      event.preventDefault();
      ms = Math.max(this.start, Math.min(ms, this.end, this.now));
      this.setPlayhead(ms);
      this.describe(ms);
      clearTimeout(timer);
      timer = setTimeout(() => this.onSeek(ms), KEY_SEEK_DELAY_MS);
    });
  }

  /** Words for what is at `ms` (the tap text: a phone has no hover tooltips). */
  describe(ms) {
    const slack = (this.end - this.start) / 100;   // about a finger's width on a phone
    const parts = [];
    const gap = this.data.gaps.find((g) => g.start_ms <= ms && ms < g.end_ms);
    if (gap) parts.push(gapText(gap));
    else if (this.data.recorded.some((r) => r.start_ms <= ms && ms < r.end_ms)) parts.push(t("timeline.at_recorded", { time: formatTime(ms) }));
    else parts.push(t("timeline.at_nothing", { time: formatTime(ms) }));
    const near = this.data.events.filter((e) => e.start_ms - slack <= ms && ms <= (e.end_ms ?? this.now) + slack);
    for (const event of near.slice(0, 3)) parts.push(eventText(event, this.now));
    this.info.textContent = parts.join(" · ");
  }

  /** Say something in the tap-text line (e.g. the server's reason for a missing video). */
  say(text) {
    this.info.textContent = text;
  }
}

export function gapText(gap) {
  return t("timeline.gap", {
    from: formatTime(gap.start_ms), to: formatTime(gap.end_ms),
    reason: gap.reason || t("timeline.gap_no_reason"),
  });
}

export function eventLabel(event) {
  const kind = tEnum("event", event.kind);
  return event.subkind ? `${kind}: ${tEnum(event.kind === "tamper" ? "tamper" : "subkind", event.subkind)}` : kind;
}

export function eventText(event, now) {
  const end = event.end_ms ?? now;
  const duration = event.end_ms === null || event.end_ms === undefined
    ? t("event.ongoing") : formatDuration(end - event.start_ms);
  return `${eventLabel(event)} ${formatTime(event.start_ms)} (${duration})`;
}

function legend() {
  const item = (cls, key) => h("li", {}, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), t(key));
  return h("ul", { class: "legend", "aria-label": t("legend.title") },
    item("tl-rec", "legend.recorded"),
    item("tl-gap", "legend.gap"),
    item("tl-none", "legend.nothing"),
    item("tl-event-motion", "legend.motion"),
    item("tl-event-tamper", "legend.tamper"),
    item("tl-event-offline", "legend.offline"),
    item("tl-event-alert", "legend.alert"),
    item("tl-playhead-swatch", "legend.playhead"));
}
