// Live view of one camera: a WebSocket of fragmented MP4 fed to Media Source Extensions, kept short and at
// the live edge so latency stays low. The caller starts it only while someone can see the picture and stops
// it otherwise, so a page nobody watches costs the box nothing.
//
// Protocol (the server's): first a text message {"mime": "video/mp4; codecs=\"...\""}, then binary
// messages, each a piece of fragmented MP4 (an init segment whenever a recorded segment starts, then
// moof+mdat fragments). Each recorded segment restarts its timestamps at 0, hence mode "sequence".
//
// Browsers with neither ManagedMediaSource nor MediaSource but native HLS (iPhones before iOS 17.1) get the
// box's live HLS playlist as the <video>'s src instead (same origin: the session cookie goes with it). The
// box keeps that camera's window open while the player asks for it, so stop() must remove the src.
import { cameraPath } from "./api.js";

const KEEP_BEHIND_S = 10;      // buffer kept behind the playhead; older media is removed
const MAX_LAG_S = 1.2;         // this far behind the newest frame: jump (a recorded fragment is <= 1 s, so
                               // in steady state the lag swings 0..1 s; measured: 2 s kept a 0.6 s stall's lag)
const STALL_MS = 10_000;       // no data this long: tell the viewer
const RETRY_UNAVAILABLE_MS = 30_000;
const MAX_RETRY_MS = 30_000;
const MAX_QUEUE = 300;         // pieces waiting to be appended; more means the page cannot keep up
const HLS_TYPE = "application/vnd.apple.mpegurl";
const HLS_MAX_LAG_S = 4;       // HLS: this far behind the seekable live edge (a stall, a background tab): jump

const MediaSourceClass = window.ManagedMediaSource || window.MediaSource;

/** Statuses passed to onStatus(status, detail): connecting, playing, waiting, reconnecting,
 *  unavailable, unsupported (detail: the mime type), error (detail: a message). */
export class LiveStream {
  constructor(video, camera, onStatus) {
    this.video = video;
    this.camera = camera;
    this.onStatus = onStatus;
    this.socket = null;
    this.retryTimer = null;
    this.tick = null;
    this.retryDelay = 2000;
    this.status = "";
    this.wanted = false;
    video.muted = true;
    video.playsInline = true;
    video.disableRemotePlayback = true;   // ManagedMediaSource (Safari) requires it
    video.addEventListener("playing", () => this.setStatus("playing"));
    video.addEventListener("error", () => {
      if (this.hls) this.onHlsError();
    });
  }

  /** Open the stream (no-op while open or waiting to retry). */
  start() {
    if (this.unsupported !== undefined) {
      this.setStatus("unsupported", this.unsupported);   // known already: no socket for nothing
      return;
    }
    this.wanted = true;
    if (this.socket || this.retryTimer) return;
    if (!MediaSourceClass && this.video.canPlayType(HLS_TYPE)) {
      this.startHls();
      return;
    }
    if (!MediaSourceClass) {
      this.unsupported = "";
      this.setStatus("unsupported", "");
      return;
    }
    this.connect();
  }

  /** Close everything; nothing runs until start() again. */
  stop() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.closeSocket();
    this.hls = false;
    this.teardownMedia();
    this.status = "";
  }

  /** Native HLS: the <video> plays the box's live playlist; a tick keeps it playing near the live edge. */
  startHls() {
    if (this.hls) return;
    this.hls = true;
    this.setStatus(this.status === "reconnecting" ? "reconnecting" : "connecting");
    this.lastTime = -1;
    this.lastDataAt = performance.now();
    this.video.muted = true;
    this.video.playsInline = true;
    this.video.src = `${cameraPath(this.camera)}/live.m3u8`;
    this.video.play().catch(() => { /* autoplay refused: the tick tries again */ });
    this.tick = setInterval(() => this.watchHls(), 1000);
  }

  watchHls() {
    const video = this.video;
    if (video.currentTime !== this.lastTime) {
      this.lastTime = video.currentTime;
      this.lastDataAt = performance.now();
      this.retryDelay = 2000;   // it works: the next drop retries quickly again
      if (this.status === "waiting" && video.readyState >= 2) this.setStatus("playing");
    } else if (performance.now() - this.lastDataAt > STALL_MS && this.status !== "error") {
      this.setStatus("waiting");
    }
    const ranges = video.seekable;
    if (ranges.length && ranges.end(ranges.length - 1) - video.currentTime > HLS_MAX_LAG_S) {
      video.currentTime = ranges.end(ranges.length - 1);   // the player's own live edge (3 segments back)
    }
    if (video.paused) video.play().catch(() => { /* autoplay refused: muted video normally isn't */ });
  }

  /** The playlist or a part failed (no picture yet: 503, the session ended: 401, the network): look again
   *  later, quickly if it had played. */
  onHlsError() {
    const played = this.status === "playing" || this.status === "waiting";
    this.stopHls();
    if (!this.wanted) return;
    if (played) {
      this.setStatus("reconnecting");
      this.scheduleRetry(this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, MAX_RETRY_MS);
    } else {
      this.setStatus("unavailable");
      this.scheduleRetry(RETRY_UNAVAILABLE_MS);
    }
  }

  stopHls() {
    clearInterval(this.tick);
    this.tick = null;
    this.hls = false;
    this.teardownMedia();   // removes the src: the player stops asking, and the box closes the window
  }

  setStatus(status, detail) {
    if (status === this.status && status !== "error") return;
    this.status = status;
    this.onStatus(status, detail);
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${cameraPath(this.camera)}/live`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.gotData = false;
    this.lastDataAt = performance.now();
    this.queue = [];
    this.setStatus(this.status === "reconnecting" ? "reconnecting" : "connecting");
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      if (typeof event.data === "string") this.onText(event.data);
      else this.onPiece(event.data);
    });
    socket.addEventListener("close", () => {
      if (socket === this.socket) this.onClosed();
    });
    this.tick = setInterval(() => this.watch(), 1000);
  }

  closeSocket() {
    clearInterval(this.tick);
    this.tick = null;
    const socket = this.socket;
    this.socket = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
  }

  onText(text) {
    let message;
    try { message = JSON.parse(text); } catch { return; }
    if (message.error) {
      this.setStatus("error", String(message.error));
    } else if (message.mime) {
      this.setupMedia(String(message.mime));
    }
  }

  setupMedia(mime) {
    this.teardownMedia();
    if (!MediaSourceClass.isTypeSupported(mime)) {
      // e.g. H.265 in a browser without a decoder for it: stop, and let the tile say so
      this.wanted = false;
      this.unsupported = mime;
      this.closeSocket();
      this.setStatus("unsupported", mime);
      return;
    }
    const media = new MediaSourceClass();
    this.media = media;
    this.objectUrl = URL.createObjectURL(media);
    media.addEventListener("sourceopen", () => {
      if (media !== this.media) return;
      try {
        this.buffer = media.addSourceBuffer(mime);
        this.buffer.mode = "sequence";
      } catch (error) {
        this.fail(String(error.message || error));
        return;
      }
      this.buffer.addEventListener("updateend", () => this.pump());
      this.buffer.addEventListener("error", () => this.fail("append"));
      this.pump();
    }, { once: true });
    this.video.src = this.objectUrl;
  }

  teardownMedia() {
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = null;
    this.media = null;
    this.buffer = null;
    this.queue = [];
    this.video.removeAttribute("src");
    this.video.load();
  }

  onPiece(data) {
    this.gotData = true;
    this.lastDataAt = performance.now();
    this.retryDelay = 2000;   // it works: the next drop retries quickly again
    if (this.status === "waiting" && this.video.readyState >= 2) this.setStatus("playing");
    this.queue.push(data);
    if (this.queue.length > MAX_QUEUE) {
      this.restart();   // fell hopelessly behind (a busy phone): start again at the live edge
      return;
    }
    this.pump();
  }

  pump() {
    const buffer = this.buffer;
    if (!buffer || buffer.updating || this.media?.readyState !== "open") return;
    if (this.trim()) return;   // updateend calls pump again
    const next = this.queue.shift();
    if (!next) {
      this.chase();
      return;
    }
    try {
      buffer.appendBuffer(next);
    } catch (error) {
      if (error.name === "QuotaExceededError") {
        this.queue.unshift(next);
        const now = this.video.currentTime;
        if (buffer.buffered.length && now - 1 > buffer.buffered.start(0)) buffer.remove(0, now - 1);
        else this.restart();
      } else {
        this.fail(String(error.message || error));
      }
    }
  }

  /** Remove what is more than KEEP_BEHIND_S behind the playhead (with slack, so not on every append). */
  trim() {
    const ranges = this.buffer.buffered;
    if (!ranges.length) return false;
    const behind = this.video.currentTime - ranges.start(0);
    if (behind <= KEEP_BEHIND_S + 5) return false;
    this.buffer.remove(ranges.start(0), this.video.currentTime - KEEP_BEHIND_S);
    return true;
  }

  /** Stay near the newest frame: playback that fell behind (a stall, a background tab) jumps ahead. */
  chase() {
    const ranges = this.buffer?.buffered;
    if (!ranges || !ranges.length) return;
    const end = ranges.end(ranges.length - 1);
    const start = ranges.start(ranges.length - 1);
    if (end - this.video.currentTime > MAX_LAG_S || this.video.currentTime < start) {
      // to the newest fragment's start (about 1 s before the end), not the very end: the next fragment is
      // a second away, and jumping nearer the end froze the picture until it came (measured)
      this.video.currentTime = Math.max(start, end - 1.0);
    }
    if (this.video.paused) this.video.play().catch(() => { /* autoplay refused: muted video normally isn't */ });
  }

  watch() {
    if (!this.socket) return;
    this.chase();
    if (performance.now() - this.lastDataAt > STALL_MS && this.status !== "error") this.setStatus("waiting");
  }

  onClosed() {
    this.closeSocket();
    if (!this.wanted) return;
    if (!this.gotData) {
      // the route is not there (404), refused, or nothing to show: say so (keeping the box's own reason when
      // it sent one) and look again later
      this.teardownMedia();
      if (this.status !== "error") this.setStatus("unavailable");
      this.scheduleRetry(RETRY_UNAVAILABLE_MS);
    } else {
      this.setStatus("reconnecting");
      this.scheduleRetry(this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, MAX_RETRY_MS);
    }
  }

  scheduleRetry(delay) {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.wanted) return;
      if (MediaSourceClass) this.connect();
      else this.startHls();
    }, delay);
  }

  restart() {
    this.closeSocket();
    this.teardownMedia();
    if (this.wanted) this.connect();
  }

  fail(message) {
    this.wanted = false;
    this.closeSocket();
    this.teardownMedia();
    this.setStatus("error", message);
  }
}
