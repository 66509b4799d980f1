// The script a library site adds with one line (docs/tracker.md):
//   <script async src="https://<identity>/tracker.js" data-key="pk_oba_…"></script>
// It posts to the ingest of the origin it was loaded from, sends a page view (after consent), marks
// `<meta name="klantreis:proposition" content="boekstart">` as a proposition view and a click on
// `<a data-klantreis-handoff="ebook">` as a hand-off, and sets `window.klantreis` for the site's consent banner.
import { type Environment, Tracker } from "./tracker";

declare global {
  interface Window {
    klantreis?: Tracker;
  }
}

function uuid(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function localStorageOrNull(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null; // storage blocked: the tracker works in memory
  }
}

export function browserEnvironment(): Environment {
  return {
    storage: localStorageOrNull(),
    async post(url, body) {
      const response = await fetch(url, {
        method: "POST",
        body,
        headers: { "Content-Type": "application/cloudevents-batch+json" },
        credentials: "omit",
        keepalive: true,
      });
      return { status: response.status, body: await response.json().catch(() => null) };
    },
    // text/plain: a beacon with another type is refused by browsers (it would need a preflight).
    beacon: (url, body) => navigator.sendBeacon(url, new Blob([body], { type: "text/plain" })),
    online: () => navigator.onLine !== false,
    now: () => new Date(),
    random: () => Math.random(),
    randomId: uuid,
    later: (run, ms) => window.setTimeout(run, ms),
    cancel: (timer) => window.clearTimeout(timer as number),
    path: () => window.location.pathname,
  };
}

function start(): void {
  const script = document.currentScript as HTMLScriptElement | null;
  const key = script?.dataset.key;
  if (!script || !key) {
    console.warn("klantreis: add data-key=\"pk_…\" to the tracker's script tag");
    return;
  }
  const flushMs = Number(script.dataset.flushMs);
  const tracker = new Tracker(
    {
      endpoint: new URL("/v1/events", script.src).href,
      key,
      platform: script.dataset.platform,
      flushAfterMs: flushMs > 0 ? flushMs : undefined,
    },
    browserEnvironment(),
  );
  window.klantreis = tracker;
  tracker.page();
  const proposition = document.querySelector<HTMLMetaElement>('meta[name="klantreis:proposition"]')?.content;
  if (proposition) tracker.track("proposition_viewed", { proposition, path: window.location.pathname });
  document.addEventListener("click", (event) => {
    const link = (event.target as Element | null)?.closest<HTMLElement>("[data-klantreis-handoff]");
    const platform = link?.dataset.klantreisHandoff;
    if (!link || !platform) return;
    const about = link.dataset.klantreisProposition;
    tracker.track("platform_handoff", about ? { to_platform: platform, proposition: about } : { to_platform: platform });
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") tracker.pageHide();
  });
  window.addEventListener("pagehide", () => tracker.pageHide());
  window.addEventListener("online", () => void tracker.flush());
  document.dispatchEvent(new CustomEvent("klantreis:ready"));
}

start();
