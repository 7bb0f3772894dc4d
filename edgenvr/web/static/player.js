// Playback of recorded video: a window of up to 30 min as one MP4 from the box, whose media time 0 is the
// UTC time in X-Edgenvr-Start-Ms (holes are kept as holes, so video time t is start + t). A time inside the
// loaded window is a seek (the box answers Range requests); outside it, a new window is loaded.
import { ApiError, api, cameraPath, query } from "./api.js";

const WINDOW_MS = 30 * 60 * 1000;
const NEWEST_MS = 5000;    // the box refuses a start at or after its "now"; stay a little behind it
const CONTINUE_SLACK_MS = 2000;

/**
 * handlers: onTime(ms) as the video plays; onState(state, detail) with state one of
 * loading, playing, paused, gap (detail: the box's reason), unsupported (detail: codec), error, ended;
 * onWindow(startMs, endMs) when a window is loaded (null, null when none).
 */
export class Player {
  constructor(video, camera, handlers) {
    this.video = video;
    this.camera = camera;
    this.handlers = handlers;
    this.generation = 0;
    this.window = null;
    this.rate = 1;
    this.retried = false;
    this.abort = null;
    const on = (name, fn) => video.addEventListener(name, fn);
    on("timeupdate", () => {
      const ms = this.currentMs();
      if (ms !== null) this.handlers.onTime(ms);
    });
    // events of a video that was just unloaded arrive late: only a loaded window may change the state
    on("playing", () => { if (this.window) this.handlers.onState("playing"); });
    on("pause", () => { if (this.window && !video.ended) this.handlers.onState("paused"); });
    on("waiting", () => { if (this.window) this.handlers.onState("loading"); });
    on("ended", () => this.continueAfterEnd());
    on("error", () => this.onMediaError());
    on("loadeddata", () => {
      // a decoder that takes the file but makes no picture would leave a black player: say so instead
      if (this.window && video.videoWidth === 0) this.handlers.onState("unsupported", this.window.codec);
    });
  }

  /** The UTC ms shown now, or null when nothing is loaded. */
  currentMs() {
    if (!this.window || this.video.readyState < 1) return null;
    return this.window.startMs + this.video.currentTime * 1000;
  }

  /** Play (or show, when autoplay is false) the recording from `ms`. */
  async playAt(ms, autoplay = true) {
    const newest = Date.now() - NEWEST_MS;
    ms = Math.min(ms, newest);
    const loaded = this.window;
    if (loaded && ms >= loaded.startMs && ms < loaded.playableEndMs - 1000 && this.video.readyState >= 1) {
      this.video.currentTime = (ms - loaded.startMs) / 1000;
      if (autoplay) this.play();
      return;
    }
    await this.load(ms, autoplay);
  }

  async load(ms, autoplay) {
    const generation = ++this.generation;
    this.abort?.abort();
    this.abort = new AbortController();
    const start = Math.floor(ms);
    const end = Math.min(start + WINDOW_MS, Date.now());
    const url = `${cameraPath(this.camera)}/video.mp4${query({ start_ms: start, end_ms: end })}`;
    this.handlers.onState("loading");
    let head;
    try {
      // <video src> cannot read headers: ask for them first (the same route answers HEAD)
      head = await api(url, { method: "HEAD", raw: true, signal: this.abort.signal });
    } catch (error) {
      if (generation !== this.generation || error.name === "AbortError") return;
      this.clear();
      const message = error.status ? await this.errorOf(url) : "";
      if (generation !== this.generation) return;
      if (error.status === 404) this.handlers.onState("gap", message);
      else this.handlers.onState("error", message);
      return;
    }
    if (generation !== this.generation) return;
    const number = (name) => {
      const value = head.headers.get(name);
      return value === null || value === "" ? null : Number(value);
    };
    const startMs = number("X-Edgenvr-Start-Ms") ?? start;
    const endMs = number("X-Edgenvr-End-Ms") ?? end;
    const endsEarlyAt = number("X-Edgenvr-Ends-Early-At-Ms");
    const codec = head.headers.get("X-Edgenvr-Codec") || "";
    if (codec && this.video.canPlayType(codecType(codec)) === "") {
      this.clear();
      this.handlers.onState("unsupported", codec);
      return;
    }
    this.window = {
      url, requestedEnd: end, startMs, endMs, endsEarlyAt, codec,
      playableEndMs: endsEarlyAt ?? endMs,
    };
    this.retried = false;
    this.handlers.onWindow(startMs, this.window.playableEndMs);
    this.video.defaultPlaybackRate = this.rate;
    this.video.src = url;
    this.video.addEventListener("loadedmetadata", () => {
      if (generation !== this.generation) return;
      this.video.currentTime = Math.max(0, (ms - startMs) / 1000);
      this.video.playbackRate = this.rate;
      if (autoplay) this.play();
      else this.handlers.onState("paused");
    }, { once: true });
  }

  /** The `error` text of a failed video request (a HEAD answer has no body: ask with GET, then let go). */
  async errorOf(url) {
    const controller = new AbortController();
    try {
      await api(url, { raw: true, signal: controller.signal });
      controller.abort();   // it works now after all: don't download the video here
      return "";
    } catch (error) {
      return error instanceof ApiError ? error.message : "";
    }
  }

  play() {
    this.video.play().catch((error) => {
      if (error.name !== "AbortError") this.handlers.onState("paused");
    });
  }

  /** Whether the video is in play mode (also while it waits for data): what the play button toggles. */
  playing() {
    return Boolean(this.window) && !this.video.paused;
  }

  togglePlay() {
    if (!this.window) return false;
    if (this.video.paused) this.play();
    else this.video.pause();
    return true;
  }

  setRate(rate) {
    this.rate = rate;
    this.video.defaultPlaybackRate = rate;
    this.video.playbackRate = rate;
  }

  continueAfterEnd() {
    const loaded = this.window;
    if (!loaded) return;
    // the file ends early (a new codec or picture size starts a new file) or the window is used up:
    // go on from where it stops, unless that is now
    const next = loaded.endsEarlyAt ?? Math.max(loaded.requestedEnd, loaded.endMs);
    if (next < Date.now() - NEWEST_MS - CONTINUE_SLACK_MS) this.load(next, true);
    else this.handlers.onState("ended");
  }

  onMediaError() {
    const error = this.video.error;
    if (!error || !this.window || !this.video.getAttribute("src")) return;
    const ms = this.currentMs();
    if (error.code === MediaError.MEDIA_ERR_NETWORK && !this.retried && ms !== null) {
      // the box cut the answer (the ring deleted a segment while it was sent): ask again once
      this.retried = true;
      const at = ms;
      this.window = null;
      this.load(at, true);
      return;
    }
    if (error.code === MediaError.MEDIA_ERR_SRC_NOT_SUPPORTED || error.code === MediaError.MEDIA_ERR_DECODE) {
      this.handlers.onState("unsupported", this.window.codec);
    } else {
      this.handlers.onState("error", error.message || "");
    }
  }

  clear() {
    this.window = null;
    this.video.removeAttribute("src");
    this.video.load();
    this.handlers.onWindow(null, null);
  }

  destroy() {
    this.generation++;
    this.abort?.abort();
    this.clear();
  }
}

/** The type to ask canPlayType about: the header holds the codecs parameter (or, tolerated, a whole type). */
export function codecType(codec) {
  return codec.startsWith("video/") ? codec : `video/mp4; codecs="${codec}"`;
}

/** Whether the codec is H.265 (for the plain-language message). */
export function isHevc(codec) {
  return /^(hvc1|hev1)|hevc|h265/i.test(codec || "");
}
