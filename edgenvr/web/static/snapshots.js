// The newest event snapshot of a camera: what a tile shows when there is no live picture.
import { api, query } from "./api.js";

const CACHE_MS = 60_000;
const cache = new Map();   // camera -> {at, promise}

/** {url, time_ms} of the camera's newest snapshot in the last 24 h, or null. */
export function newestSnapshot(camera) {
  const cached = cache.get(camera);
  if (cached && performance.now() - cached.at < CACHE_MS) return cached.promise;
  const promise = api(`/api/events${query({ camera, limit: 50 })}`)
    .then(({ events }) => {
      const found = events.find((event) => event.snapshot);   // newest first
      return found ? { url: snapshotUrl(found.id), time_ms: found.start_ms } : null;
    })
    .catch(() => null);
  cache.set(camera, { at: performance.now(), promise });
  return promise;
}

export const snapshotUrl = (eventId) => `/api/events/${encodeURIComponent(eventId)}/snapshot.jpg`;
