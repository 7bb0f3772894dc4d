// Clip search and playback: the clips boxes uploaded (motion, tamper, requested), found by box, camera, kind and
// time; one plays in a <video> straight from the hub (the file the box signed, with Range requests to seek), and
// operators download the signed evidence folder.
import { api, query } from "../api.js";
import { h } from "../dom.js";
import { t, tEnum } from "../i18n.js";
import { may } from "../session.js";
import { DAY, formatDateTime, formatDuration, fromInputValue, toInputValue } from "../time.js";
import { errorMessage, field, latestSearch, notice } from "../ui.js";

const KINDS = ["tamper", "requested", "motion", "continuous"];

/** params: box, camera, kind, from, to (UTC ms), clip (the one to play). */
export function render(main, params) {
  const box = h("select", {}, h("option", { value: "", text: t("clips.any_box") }));
  const camera = h("input", { type: "text", autocapitalize: "none", spellcheck: "false", value: params.camera || "", maxlength: "32" });
  const kind = h("select", {}, h("option", { value: "", text: t("clips.any_kind") }),
    ...KINDS.map((name) => h("option", { value: name, text: tEnum("kind", name), selected: params.kind === name })));
  const from = h("input", { type: "datetime-local", step: "1", value: toInputValue(Number(params.from) || Date.now() - 7 * DAY) });
  const to = h("input", { type: "datetime-local", step: "1", value: params.to ? toInputValue(Number(params.to)) : "" });
  const status = h("div", { "aria-live": "polite" });
  const player = h("section", { class: "hub-player", "aria-live": "polite" });
  const results = h("div", { class: "table-wrap" });
  const form = h("form", { class: "panel", novalidate: true, "aria-label": t("clips.search_label") },
    h("div", { class: "field-row" }, field(t("clips.box"), box), field(t("clips.camera"), camera), field(t("clips.kind"), kind)),
    h("div", { class: "field-row" }, field(t("clips.from"), from), field(t("clips.to"), to, t("clips.to_hint"))),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: t("clips.search") })));
  main.append(h("div", { class: "page-head" }, h("h1", { text: t("clips.title") })), form, player, status, results);
  let destroyed = false;
  let selected = params.clip || null;

  api("/api/fleet").then(({ boxes }) => {
    if (destroyed) return;
    box.append(...boxes.map((b) => h("option", { value: b.box, text: `${b.box} (${b.site})`, selected: params.box === b.box })));
  }).catch(() => { /* the box filter stays "any"; the search still works */ });

  const run = latestSearch(status, results, () => destroyed);
  function search(event) {
    event?.preventDefault();
    return run(() => api(`/api/clips${query({
      box: box.value || params.box, camera: camera.value.trim(), kind: kind.value,
      from_ms: fromInputValue(from.value) ?? undefined, to_ms: fromInputValue(to.value) ?? undefined,
    })}`), ({ clips }) => {
      status.replaceChildren(h("p", { class: "hint", text: t("clips.count", { count: clips.length }) }));
      results.replaceChildren(clips.length ? table(clips) : notice("info", t("clips.none")));
    }, t("clips.failed"));
  }

  function table(clips) {
    const head = ["clips.col_time", "clips.col_box", "clips.col_camera", "clips.col_kind", "clips.col_size", "clips.col_play"];
    return h("table", { class: "audit-table hub-table" },
      h("thead", {}, h("tr", {}, ...head.map((key) => h("th", { scope: "col", text: t(key) })))),
      h("tbody", {}, ...clips.map((clip) => h("tr", { class: clip.id === selected ? "is-selected" : undefined, dataset: { clip: clip.id } },
        h("td", {}, h("div", { class: "nowrap", text: formatDateTime(clip.start_ms) }),
          h("div", { class: "hint", text: formatDuration(clip.end_ms - clip.start_ms) })),
        h("td", { class: "box-id", text: clip.box }),
        h("td", { text: clip.camera }),
        h("td", { text: tEnum("kind", clip.kind) }),
        h("td", { class: "nowrap", text: t("clips.megabytes", { mb: (clip.bytes / 1e6).toFixed(1) }) }),
        h("td", {}, h("button", { type: "button", text: t("clips.play"), "aria-label": t("clips.play_label", { camera: clip.camera, box: clip.box, time: formatDateTime(clip.start_ms) }),
          onclick: () => { selected = clip.id; show(clip.id); for (const tr of results.querySelectorAll("tr")) tr.classList.toggle("is-selected", tr.dataset.clip === clip.id); } }))))));
  }

  async function show(clipId) {
    player.replaceChildren(h("p", { class: "loading", text: t("common.loading") }));
    try {
      const detail = await api(`/api/clips/${encodeURIComponent(clipId)}`);
      if (destroyed) return;
      player.replaceChildren(playerPanel(detail));
      player.querySelector("video")?.focus({ preventScroll: true });
      player.scrollIntoView({ block: "nearest" });
    } catch (error) {
      if (!destroyed) player.replaceChildren(notice("error", t("clips.open_failed"), " ", errorMessage(error)));
    }
  }

  form.addEventListener("submit", search);
  search();
  if (selected) show(selected);
  return () => {
    destroyed = true;
    for (const video of player.querySelectorAll("video")) {
      video.pause();
      video.removeAttribute("src");
      video.load();
    }
  };
}

function playerPanel({ clip, files, manifest }) {
  const base = `/api/clips/${encodeURIComponent(clip.id)}`;
  // Muted and playing at once: the person chose this clip (a box's video carries no sound worth hearing, and a
  // muted video may start without another click).
  const video = h("video", { class: "pb-video", controls: true, playsInline: true, muted: true, autoplay: true,
    preload: "auto", src: `${base}/video.mp4?part=1`, "aria-label": t("clips.video_label", { camera: clip.camera, box: clip.box }) });
  const parts = files.length > 1
    ? h("div", { class: "actions", role: "group", "aria-label": t("clips.parts") }, ...files.map((file) =>
      h("button", { type: "button", text: t("clips.part", { part: file.part, time: formatDateTime(file.start_ms) }),
        onclick: () => { video.src = `${base}/video.mp4?part=${file.part}`; video.play().catch(() => {}); } })))
    : null;
  const facts = [
    ["clips.fact_range", `${formatDateTime(clip.start_ms)} – ${formatDateTime(clip.end_ms)}`],
    ["clips.fact_kind", tEnum("kind", clip.kind)],
    ["clips.fact_reason", manifest.reason || "–"],
    ["clips.fact_exported_by", manifest.exported_by || "–"],
    ["clips.fact_received", formatDateTime(clip.received_ms)],
    ["clips.fact_codec", files.map((file) => `${file.codec} ${file.width}×${file.height}`).join(", ")],
    ["clips.fact_sha256", clip.sha256],
    ["clips.fact_key", manifest.box?.key_fingerprint || "–"],
  ];
  return h("div", { class: "panel", dataset: { clip: clip.id } },
    h("h2", { text: t("clips.playing", { camera: clip.camera, box: clip.box }) }),
    h("div", { class: "pb-player" }, video),
    parts,
    h("dl", { class: "clip-facts" }, ...facts.flatMap(([key, value]) => [h("dt", { text: t(key) }), h("dd", { text: value })])),
    may("export")
      ? h("div", { class: "actions" }, h("a", { class: "button evidence", href: `${base}/evidence.zip`, download: "",
        text: t("clips.download") }), h("span", { class: "hint", text: t("clips.download_hint") }))
      : null);
}
