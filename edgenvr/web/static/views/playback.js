// Playback of one camera: pick a day (or last night), see its timeline and events, play from any moment,
// step between events, change speed, and keep evidence (export / hold).
import { api, cameraPath, query } from "../api.js";
import { h } from "../dom.js";
import { t, tEnum } from "../i18n.js";
import { Player, isHevc } from "../player.js";
import { may } from "../session.js";
import { snapshotUrl } from "../snapshots.js";
import {
  HOUR, MINUTE, SECOND, addDays, atHour, dayKey, dayStart, formatDateTime, formatDuration, formatLongDate, formatTime,
  parseDayKey,
} from "../time.js";
import { Timeline, eventLabel } from "../timeline.js";
import { cameraBadges, errorMessage, notice, toast } from "../ui.js";
import { createExportPanel } from "./export_panel.js";

const BEFORE_EVENT_MS = 5 * SECOND;   // an event is played from a little before it starts
const REFRESH_MS = 30 * SECOND;       // a range that reaches now grows while the page is open
const RATES = [1, 2, 4, 8];
const SKIP_GAP_MS = 3 * SECOND;       // a hole longer than this is skipped during playback
const NIGHT_FROM_HOUR = 18;
const NIGHT_TO_HOUR = 6;
// timeline zoom: the whole day (or night), then spans around the playhead, so a short event can be hit on a phone
const ZOOMS = [0, 6 * HOUR, HOUR, 10 * MINUTE];

export function render(main, params) {
  const cameraId = params.camera;
  let day = parseDayKey(params.day) ?? dayStart(Date.now());
  let mode = params.range === "night" ? "night" : "day";
  let data = { recorded: [], gaps: [], events: [] };
  let listEvents = [];
  let chosenMs = null;
  let skippingTo = null;
  let refreshTimer = null;
  let destroyed = false;
  let loadGeneration = 0;
  let zoom = 0;
  let view = null;   // [start, end] of the timeline as shown

  // --- layout ---
  const title = h("h1", { class: "pb-title", text: cameraId });
  const badges = h("div", { class: "badges" });

  const prevDay = h("button", { type: "button", class: "icon-button", "aria-label": t("playback.prev_day"), title: t("playback.prev_day"), text: "◀" });
  const nextDay = h("button", { type: "button", class: "icon-button", "aria-label": t("playback.next_day"), title: t("playback.next_day"), text: "▶" });
  const dateInput = h("input", { type: "date", "aria-label": t("playback.pick_day") });
  const todayButton = h("button", { type: "button", text: t("playback.today") });
  const nightButton = h("button", { type: "button", text: t("playback.last_night") });
  const rangeTitle = h("span", { class: "pb-range-title" });
  const rangeBar = h("div", { class: "pb-range", role: "group", "aria-label": t("playback.range") },
    prevDay, dateInput, nextDay, todayButton, nightButton, rangeTitle);
  const head = h("div", { class: "pb-head" },
    h("div", { class: "pb-name" }, h("a", { class: "back-link", href: "#/cameras", text: t("playback.back") }), title, badges),
    rangeBar);

  const video = h("video", { class: "pb-video", playsInline: true, preload: "metadata" });
  const overlayText = h("div", { class: "pb-overlay-text" });
  const overlayActions = h("div", { class: "actions" });
  const overlay = h("div", { class: "pb-overlay" }, overlayText, overlayActions);
  const playerBox = h("div", { class: "pb-player" }, video, overlay);
  const clock = h("p", { class: "pb-clock" }, t("playback.nothing_playing"));
  const zoomOut = h("button", { type: "button", class: "icon-button", text: "−", "aria-label": t("timeline.zoom_out"), title: t("timeline.zoom_out") });
  const zoomIn = h("button", { type: "button", class: "icon-button", text: "+", "aria-label": t("timeline.zoom_in"), title: t("timeline.zoom_in") });
  const zoomText = h("span", { class: "zoom-text", "aria-live": "polite" });
  const clockRow = h("div", { class: "pb-clock-row" }, clock,
    h("div", { class: "button-group zoom", role: "group", "aria-label": t("timeline.zoom") }, zoomOut, zoomText, zoomIn));

  const prevEvent = h("button", { type: "button", text: t("playback.prev_event") });
  const playButton = h("button", { type: "button", class: "primary play-button", text: t("playback.play") });
  const nextEvent = h("button", { type: "button", text: t("playback.next_event") });
  const rateButtons = RATES.map((rate) => h("button", {
    type: "button", class: "rate", text: `${rate}×`, "aria-pressed": rate === 1 ? "true" : "false",
    "aria-label": t("playback.speed_n", { rate }),
  }));
  const fullscreen = h("button", { type: "button", class: "quiet", text: t("playback.fullscreen") });
  const exportButton = may("export") || may("hold")
    ? h("button", { type: "button", class: "evidence", text: may("export") ? t("playback.export") : t("playback.hold") })
    : null;
  const controls = h("div", { class: "pb-controls" },
    h("div", { class: "button-group" }, prevEvent, playButton, nextEvent),
    h("div", { class: "button-group", role: "group", "aria-label": t("playback.speed") }, ...rateButtons),
    h("div", { class: "button-group" }, fullscreen, exportButton));

  const timelineStatus = h("div", { class: "pb-status" });
  const timeline = new Timeline({ onSeek: (ms) => playFrom(ms), onScrub: (ms) => scrub(ms) });
  const exportPanel = createExportPanel(cameraId, () => player.currentMs() ?? chosenMs);

  const filter = h("select", { "aria-label": t("events.filter") },
    ...["", "motion", "tamper", "offline", "alert"].map((kind) => h("option", { value: kind, text: kind ? tEnum("events.only", kind) : t("events.all") })));
  const eventCount = h("p", { class: "hint", "aria-live": "polite" });
  const eventList = h("ul", { class: "event-list" });
  const eventsPanel = h("aside", { class: "pb-events", "aria-labelledby": "events-title" },
    h("div", { class: "pb-events-head" }, h("h2", { id: "events-title", text: t("events.title") }), filter),
    eventCount, eventList);

  main.append(h("section", { class: "playback" },
    head,
    h("div", { class: "pb-grid" },
      h("div", { class: "pb-left" }, playerBox, clockRow, timeline.element, controls, timelineStatus, exportPanel.element),
      eventsPanel)));

  // --- the player ---
  const player = new Player(video, cameraId, {
    onTime(ms) {
      if (zoom && view && (ms < view[0] || ms > view[1])) applyView(ms + ZOOMS[zoom] * 0.4);   // page on with the video
      timeline.setPlayhead(ms);
      clock.textContent = formatDateTime(ms);
      markCurrentEvent(ms);
      skipHole(ms);
    },
    onState: showState,
    onWindow(start, end) {
      timeline.setWindow(start, end);
    },
  });

  function showState(state, detail) {
    // the button says what a press does: a video stalled for data ("loading") is still playing, and pausing it
    // is what the button would do
    const playing = state === "playing" || (state === "loading" && player.playing());
    playButton.textContent = playing ? t("playback.pause") : t("playback.play");
    playButton.classList.toggle("is-playing", playing);
    overlayActions.replaceChildren();
    const show = (...content) => {
      overlay.hidden = false;
      overlayText.replaceChildren(...content);
    };
    switch (state) {
      case "playing":
      case "paused":
        overlay.hidden = true;
        break;
      case "loading":
        show(h("p", { class: "loading", text: t("player.loading") }));
        break;
      case "gap": {
        show(h("p", { text: t("player.no_video") }), detail ? h("p", { class: "detail", text: detail }) : null);
        timeline.say(detail || t("player.no_video"));
        const next = data.recorded.find((r) => r.end_ms > (chosenMs ?? 0) + SECOND);
        if (next && next.start_ms > (chosenMs ?? 0)) {
          overlayActions.append(h("button", { type: "button", class: "primary",
            text: t("player.play_next_recording", { time: formatTime(next.start_ms) }),
            onclick: () => playFrom(next.start_ms) }));
        }
        break;
      }
      case "unsupported": {
        const text = isHevc(detail) ? t("player.hevc_unsupported") : t("player.codec_unsupported", { codec: detail || "?" });
        show(h("p", { text }), h("p", { class: "detail", text: may("export") ? t("player.download_instead") : t("player.ask_operator") }));
        if (may("export")) {
          overlayActions.append(h("button", { type: "button", class: "primary", text: t("player.download_clip"),
            onclick: () => exportPanel.open(chosenMs) }));
        }
        break;
      }
      case "ended":
        show(h("p", { text: t("player.ended") }));
        break;
      case "error":
        show(h("p", { text: t("player.error") }), detail ? h("p", { class: "detail", text: detail }) : null);
        break;
      default:
        show(h("p", { text: t("player.idle") }));
    }
  }

  function playFrom(ms) {
    chosenMs = ms;
    skippingTo = null;
    if (zoom && view && (ms < view[0] || ms > view[1])) applyView(ms);
    timeline.setPlayhead(ms);
    clock.textContent = formatDateTime(ms);
    const hole = data.gaps.find((g) => g.start_ms <= ms && ms < g.end_ms);
    if (hole && hole.end_ms < Date.now() - 5 * SECOND) ms = hole.end_ms;   // nothing to see in a hole: start after it
    rememberTime(chosenMs);
    player.playAt(ms);
  }

  let lastScrub = 0;
  function scrub(ms) {
    // while dragging inside the loaded video, show frames as the finger moves (a few seeks a second)
    const now = performance.now();
    const loaded = player.window;
    if (!loaded || now - lastScrub < 200 || ms < loaded.startMs || ms >= loaded.playableEndMs) return;
    lastScrub = now;
    video.currentTime = (ms - loaded.startMs) / 1000;
  }

  function skipHole(ms) {
    if (video.paused || skippingTo !== null) return;
    const hole = data.gaps.find((g) => g.start_ms <= ms && ms < g.end_ms - SKIP_GAP_MS);
    if (!hole || hole.end_ms > Date.now() - 5 * SECOND) return;
    skippingTo = hole.end_ms;
    toast(t("player.skipping_gap", { time: formatTime(hole.end_ms) }));
    player.playAt(hole.end_ms).finally(() => { skippingTo = null; });
  }

  // --- range: a day, or the night from 18:00 to 06:00 ---
  function range() {
    if (mode === "night") return [atHour(day, NIGHT_FROM_HOUR), atHour(addDays(day, 1), NIGHT_TO_HOUR)];
    return [day, addDays(day, 1)];
  }

  function rememberTime(ms) {
    const search = new URLSearchParams({ day: dayKey(day) });
    if (mode === "night") search.set("range", "night");
    if (ms !== null && ms !== undefined) search.set("t", String(Math.round(ms)));
    history.replaceState(null, "", `#/camera/${encodeURIComponent(cameraId)}?${search}`);
  }

  function setRange(newDay, newMode) {
    day = newDay;
    mode = newMode;
    rememberTime(null);
    showRange();
    loadData(true);
  }

  function showRange() {
    const [start, end] = range();
    const now = Date.now();
    dateInput.value = dayKey(day);
    dateInput.max = dayKey(now);
    nextDay.disabled = addDays(day, 1) > now;
    rangeTitle.textContent = mode === "night"
      ? t("playback.night_of", { from: formatDateTime(start, false), to: formatDateTime(end, false) })
      : formatLongDate(start);
    todayButton.setAttribute("aria-pressed", String(mode === "day" && day === dayStart(now)));
    nightButton.setAttribute("aria-pressed", String(mode === "night"));
    zoom = 0;
    applyView(start);
  }

  /** Show the timeline at the current zoom, centred on `center` and kept inside the day (or night). */
  function applyView(center) {
    const [start, end] = range();
    const span = ZOOMS[zoom];
    if (!span || span >= end - start) {
      view = [start, end];
    } else {
      const from = Math.max(start, Math.min(Math.round(center - span / 2), end - span));
      view = [from, from + span];
    }
    timeline.setRange(view[0], view[1]);
    zoomOut.disabled = zoom === 0;
    zoomIn.disabled = zoom === ZOOMS.length - 1;
    zoomText.textContent = !span ? t(mode === "night" ? "timeline.whole_night" : "timeline.whole_day")
      : span >= HOUR ? t("timeline.span_hours", { n: span / HOUR }) : t("timeline.span_minutes", { n: span / MINUTE });
    const at = player.currentMs() ?? chosenMs;
    if (at !== null) timeline.setPlayhead(at);
  }

  const zoomCentre = () => player.currentMs() ?? chosenMs ?? (view ? (view[0] + view[1]) / 2 : range()[0]);
  zoomIn.addEventListener("click", () => {
    zoom = Math.min(zoom + 1, ZOOMS.length - 1);
    applyView(zoomCentre());
  });
  zoomOut.addEventListener("click", () => {
    zoom = Math.max(zoom - 1, 0);
    applyView(zoomCentre());
  });

  prevDay.addEventListener("click", () => setRange(addDays(day, -1), mode));
  nextDay.addEventListener("click", () => setRange(addDays(day, 1), mode));
  todayButton.addEventListener("click", () => setRange(dayStart(Date.now()), "day"));
  nightButton.addEventListener("click", () => {
    // "last night": the night that began yesterday evening; after 18:00 the one under way
    const now = Date.now();
    const evening = new Date(now).getHours() >= NIGHT_FROM_HOUR ? dayStart(now) : addDays(now, -1);
    setRange(evening, "night");
  });
  dateInput.addEventListener("change", () => {
    const picked = parseDayKey(dateInput.value);
    if (picked !== null && picked <= Date.now()) setRange(picked, mode);
  });

  // --- data: the timeline and the event list of the range ---
  async function loadData(announce) {
    const generation = ++loadGeneration;
    clearTimeout(refreshTimer);
    const [start, end] = range();
    const now = Date.now();
    if (start >= now) {
      data = { recorded: [], gaps: [], events: [] };
      timeline.setData(data, now);
      timelineStatus.replaceChildren(notice("info", t("playback.future")));
      listEvents = [];
      drawEvents();
      return;
    }
    const until = Math.min(end, now);
    if (announce) timelineStatus.replaceChildren(h("p", { class: "loading", text: t("common.loading") }));
    try {
      const [line, found] = await Promise.all([
        api(`${cameraPath(cameraId)}/timeline${query({ start_ms: start, end_ms: until })}`),
        api(`/api/events${query({ camera: cameraId, start_ms: start, end_ms: until })}`),
      ]);
      if (destroyed || generation !== loadGeneration) return;
      data = { recorded: line.recorded, gaps: line.gaps, events: [...line.events].sort((a, b) => a.start_ms - b.start_ms) };
      timeline.setData(data, Date.now());
      timelineStatus.replaceChildren(summary());
      const changed = found.events.length !== listEvents.length
        || found.events.some((e, i) => e.id !== listEvents[i]?.id || e.end_ms !== listEvents[i]?.end_ms);
      listEvents = found.events;
      if (changed) drawEvents();
    } catch (error) {
      if (destroyed || generation !== loadGeneration) return;
      timelineStatus.replaceChildren(notice("error", t("playback.load_failed"), " ", errorMessage(error)));
    }
    if (end > Date.now() && !destroyed) refreshTimer = setTimeout(() => loadData(false), REFRESH_MS);
  }

  function summary() {
    const recordedMs = data.recorded.reduce((sum, r) => sum + (r.end_ms - r.start_ms), 0);
    const parts = [t("playback.summary", { recorded: formatDuration(recordedMs), events: data.events.length })];
    if (data.gaps.length) parts.push(t("playback.summary_gaps", { gaps: data.gaps.length }));
    return h("p", { class: "hint", text: parts.join(" ") });
  }

  // --- events ---
  let eventButtons = new Map();
  function drawEvents() {
    const kind = filter.value;
    const shown = listEvents.filter((e) => !kind || e.kind === kind);
    eventButtons = new Map();
    eventList.replaceChildren(...shown.map((event) => {
      const button = h("button", { type: "button", class: "event-item", onclick: () => {
        playFrom(event.start_ms - BEFORE_EVENT_MS);
        revealPlayer();
      } },
      event.snapshot
        ? h("img", { class: "thumb", src: snapshotUrl(event.id), loading: "lazy", decoding: "async", alt: "", width: "160", height: "90" })
        : h("span", { class: `thumb thumb-none kind-${event.kind}`, "aria-hidden": "true", text: t("events.no_snapshot") }),
      h("span", { class: "event-text" },
        h("strong", { class: "event-time", text: formatTime(event.start_ms) }),
        h("span", { class: `kind-chip kind-${event.kind}`, text: eventLabel(event) }),
        h("span", { class: "event-duration", text: event.end_ms === null ? t("event.ongoing") : formatDuration(event.end_ms - event.start_ms) }),
        event.zones?.length ? h("span", { class: "event-zones", text: t("events.zones", { zones: event.zones.join(", ") }) }) : null,
        event.detail ? h("span", { class: "event-detail", text: event.detail }) : null));
      eventButtons.set(event.id, button);
      return h("li", {}, button);
    }));
    if (!shown.length) eventList.append(h("li", { class: "empty", text: t("events.none") }));
    eventCount.textContent = listEvents.length >= 1000 ? t("events.limited", { count: shown.length })
      : t("events.count", { count: shown.length });
    currentEventId = null;
  }
  filter.addEventListener("change", drawEvents);

  let currentEventId = null;
  function markCurrentEvent(ms) {
    const current = data.events.find((e) => e.start_ms - BEFORE_EVENT_MS <= ms && ms <= (e.end_ms ?? Date.now()));
    const id = current?.id ?? null;
    if (id === currentEventId) return;
    eventButtons.get(currentEventId)?.classList.remove("is-current");
    eventButtons.get(currentEventId)?.removeAttribute("aria-current");
    currentEventId = id;
    const button = eventButtons.get(id);
    if (button) {
      button.classList.add("is-current");
      button.setAttribute("aria-current", "true");
    }
  }

  /** On a phone the list is below the player: bring the player back into view when an event is chosen. */
  function revealPlayer() {
    const box = playerBox.getBoundingClientRect();
    if (box.top < 0 || box.bottom > window.innerHeight) playerBox.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function stepEvent(direction) {
    const kind = filter.value;
    const candidates = data.events.filter((e) => !kind || e.kind === kind);
    const [start, end] = range();
    const at = player.currentMs() ?? chosenMs ?? (direction > 0 ? start : Math.min(end, Date.now()));
    const target = (e) => e.start_ms - BEFORE_EVENT_MS;
    const found = direction > 0
      ? candidates.find((e) => target(e) > at + SECOND)
      : [...candidates].reverse().find((e) => target(e) < at - 3 * SECOND);
    if (!found) {
      toast(direction > 0 ? t("playback.no_next_event") : t("playback.no_prev_event"));
      return;
    }
    playFrom(target(found));
  }

  // --- controls ---
  prevEvent.addEventListener("click", () => stepEvent(-1));
  nextEvent.addEventListener("click", () => stepEvent(1));
  playButton.addEventListener("click", () => {
    if (!player.togglePlay()) {
      // nothing loaded yet: start at the first event of the range, else its first recording
      const first = data.events[0] ? data.events[0].start_ms - BEFORE_EVENT_MS : data.recorded[0]?.start_ms;
      if (first !== undefined) playFrom(first);
      else toast(t("playback.nothing_to_play"));
    }
  });
  rateButtons.forEach((button, index) => button.addEventListener("click", () => {
    player.setRate(RATES[index]);
    rateButtons.forEach((other) => other.setAttribute("aria-pressed", String(other === button)));
  }));
  fullscreen.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else playerBox.requestFullscreen?.().catch(() => {});
  });
  exportButton?.addEventListener("click", () => exportPanel.open());
  video.addEventListener("click", () => player.togglePlay());

  // --- the camera's name and state ---
  api("/api/cameras").then(({ cameras }) => {
    const camera = cameras.find((c) => c.id === cameraId);
    if (destroyed) return;
    if (!camera) {
      badges.replaceChildren(notice("error", t("playback.unknown_camera")));
      return;
    }
    title.textContent = camera.name || camera.id;
    document.title = `${camera.name || camera.id} · edgenvr`;
    badges.replaceChildren(...cameraBadges(camera));
  }).catch(() => { /* the name is a nicety; the timeline's own error says what is wrong */ });

  showRange();
  showState("idle");
  loadData(true).then(() => {
    const asked = Number(params.t);
    if (params.t && Number.isFinite(asked)) playFrom(asked);
  });

  return () => {
    destroyed = true;
    clearTimeout(refreshTimer);
    player.destroy();
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  };
}
