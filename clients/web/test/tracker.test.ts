import { beforeEach, describe, expect, it } from "vitest";

import { type CloudEvent, type Environment, STORAGE, Tracker, cleanPath, libraryOf } from "../src/tracker";

const KEY = "pk_oba_abcdefghijklmnopqrstuv";

/** A browser without a network: posts answered by `answers` (a status, or a thrown error), timers run by hand. */
class FakeBrowser implements Environment {
  store = new Map<string, string>();
  storage = {
    getItem: (k: string) => this.store.get(k) ?? null,
    setItem: (k: string, v: string) => void this.store.set(k, v),
    removeItem: (k: string) => void this.store.delete(k),
  };
  posts: CloudEvent[][] = [];
  beacons: CloudEvent[][] = [];
  answers: (number | Error | { status: number; body: unknown })[] = [];
  timers: { run: () => void; ms: number }[] = [];
  isOnline = true;
  beaconAccepts = true;
  private ids = 0;

  async post(_url: string, body: string) {
    this.posts.push(JSON.parse(body) as CloudEvent[]);
    const answer = this.answers.shift() ?? 202;
    if (answer instanceof Error) throw answer;
    return typeof answer === "number" ? { status: answer, body: { accepted: [], rejected: [] } } : answer;
  }
  beacon(_url: string, body: string) {
    if (this.beaconAccepts) this.beacons.push(JSON.parse(body) as CloudEvent[]);
    return this.beaconAccepts;
  }
  online = () => this.isOnline;
  now = () => new Date("2026-12-06T10:00:00Z");
  random = () => 0.5;
  randomId = () => `id-${++this.ids}`;
  later = (run: () => void, ms: number) => {
    const timer = { run, ms };
    this.timers.push(timer);
    return timer;
  };
  cancel = (timer: unknown) => {
    this.timers = this.timers.filter((t) => t !== timer);
  };
  path = () => "/boekstart?email=someone@example.nl#top";

  /** Run the timers due now, as the browser would, and let their posts finish. */
  async tick(): Promise<number[]> {
    const due = this.timers;
    this.timers = [];
    for (const timer of due) timer.run();
    await new Promise((resolve) => setTimeout(resolve, 0));
    return due.map((t) => t.ms);
  }
}

let browser: FakeBrowser;
beforeEach(() => {
  browser = new FakeBrowser();
});

describe("consent", () => {
  it("sends and stores nothing before the visitor consents, then sends what was tracked", async () => {
    const tracker = new Tracker({ endpoint: "https://id.example/v1/events", key: KEY }, browser);
    tracker.page();
    tracker.track("proposition_viewed", { proposition: "boekstart" });
    await browser.tick();
    expect(browser.posts).toEqual([]);
    expect(browser.store.size).toBe(0);
    tracker.pageHide();
    expect(browser.beacons).toEqual([]);

    tracker.consent(true);
    await browser.tick();
    expect(browser.posts).toHaveLength(1);
    expect(browser.posts[0].map((e) => e.type)).toEqual([
      "nl.bibliotheek.client.page_viewed.v1",
      "nl.bibliotheek.client.proposition_viewed.v1",
    ]);
  });

  it("drops what was held and the visitor's id when consent is refused", async () => {
    const tracker = new Tracker({ endpoint: "https://id.example/v1/events", key: KEY }, browser);
    tracker.page();
    tracker.consent(false);
    tracker.page();
    await browser.tick();
    expect(browser.posts).toEqual([]);
    expect([...browser.store.keys()]).toEqual([STORAGE.consent]);
  });

  it("remembers consent on the site: a later page sends at once", async () => {
    browser.store.set(STORAGE.consent, "granted");
    const tracker = new Tracker({ endpoint: "https://id.example/v1/events", key: KEY }, browser);
    tracker.page();
    await browser.tick();
    await browser.tick();
    expect(browser.posts.flat()).toHaveLength(1);
  });
});

describe("events", () => {
  it("are CloudEvents of the key's library, about a first-party random visitor, with no query in the path", async () => {
    const tracker = new Tracker({ endpoint: "https://id.example/v1/events", key: KEY }, browser);
    tracker.consent(true);
    tracker.page();
    tracker.track("platform_handoff", { to_platform: "ebook", proposition: "e-books" });
    await browser.tick();
    const [page, handoff] = browser.posts[0];
    expect(page).toMatchObject({
      specversion: "1.0",
      source: "/libraries/oba/website",
      library: "oba",
      channel: "online",
      platform: "website",
      data: { path: "/boekstart" },
    });
    expect(handoff.data).toEqual({ to_platform: "ebook", proposition: "e-books" });
    expect(page.subject).toBe(handoff.subject);
    expect(browser.store.get(STORAGE.visitor)).toBe(page.subject);
    expect(page.subject).toMatch(/^v-/); // a visitor, never a member's id
    expect(page.id).not.toBe(handoff.id);
  });

  it("refuses a key that is not a publishable one", () => {
    expect(() => new Tracker({ endpoint: "x", key: "kr_secret_admin" }, browser)).toThrow(/publishable/);
    expect(libraryOf(KEY)).toBe("oba");
  });

  it("keeps paths short and without query or fragment", () => {
    expect(cleanPath("/zoeken?q=jan+jansen#r")).toBe("/zoeken");
    expect(cleanPath("boekstart")).toBe("/boekstart");
    expect(cleanPath("/" + "a".repeat(400))).toHaveLength(300);
  });
});

describe("batching and retries", () => {
  it("posts a full batch at once and the rest after a pause", async () => {
    const tracker = new Tracker({ endpoint: "e", key: KEY, batchSize: 3, flushAfterMs: 500 }, browser);
    tracker.consent(true);
    for (let n = 0; n < 4; n++) tracker.track("search_performed", { scope: "catalogue", results: n });
    expect(await browser.tick()).toEqual([0]);
    expect(browser.posts.map((b) => b.length)).toEqual([3]);
    expect(await browser.tick()).toEqual([0]);
    expect(browser.posts.map((b) => b.length)).toEqual([3, 1]);
    expect(tracker.pending()).toEqual([]);
  });

  it("retries a failed post with growing waits, and sends each event once it gets through", async () => {
    const tracker = new Tracker({ endpoint: "e", key: KEY, backoffMs: 1000, maxBackoffMs: 3000 }, browser);
    tracker.consent(true);
    tracker.page();
    browser.answers = [new Error("offline"), 503, 503, 202];
    await browser.tick(); // first try
    expect(await browser.tick()).toEqual([750]); // after the first failure: half of 1 s + half at random
    expect(await browser.tick()).toEqual([1500]);
    expect(await browser.tick()).toEqual([2250]); // the ceiling: 3 s
    expect(browser.posts).toHaveLength(4);
    expect(new Set(browser.posts.map((b) => b[0].id)).size).toBe(1);
    expect(tracker.pending()).toEqual([]);
  });

  it("drops a batch the ingest refused for good, keeps the events it asks to post again", async () => {
    const tracker = new Tracker({ endpoint: "e", key: KEY }, browser);
    tracker.consent(true);
    tracker.page();
    tracker.page("/activiteiten");
    browser.answers = [{ status: 202, body: { accepted: ["id-2"], rejected: [{ index: 1, id: "id-3", status: 409 }] } }];
    await browser.tick();
    expect(tracker.pending().map((e) => e.id)).toEqual(["id-3"]);
    browser.answers = [422];
    await browser.tick();
    expect(tracker.pending()).toEqual([]);
  });
});

describe("offline queue and page hide", () => {
  it("keeps events in localStorage while offline and sends them on a later page", async () => {
    browser.isOnline = false;
    const first = new Tracker({ endpoint: "e", key: KEY }, browser);
    first.consent(true);
    first.page();
    await browser.tick();
    expect(browser.posts).toEqual([]);
    expect(JSON.parse(browser.store.get(STORAGE.queue) ?? "[]")).toHaveLength(1);

    browser.isOnline = true;
    browser.timers = [];
    const second = new Tracker({ endpoint: "e", key: KEY }, browser);
    await browser.tick();
    expect(browser.posts.flat().map((e) => e.data)).toEqual([{ path: "/boekstart" }]);
    expect(second.pending()).toEqual([]);
    expect(browser.store.has(STORAGE.queue)).toBe(false);
  });

  it("hands what waits to sendBeacon when the page is hidden, and keeps it when the beacon is refused", () => {
    const tracker = new Tracker({ endpoint: "e", key: KEY }, browser);
    tracker.consent(true);
    tracker.page();
    browser.beaconAccepts = false;
    tracker.pageHide();
    expect(tracker.pending()).toHaveLength(1);
    browser.beaconAccepts = true;
    tracker.pageHide();
    expect(browser.beacons.flat().map((e) => e.type)).toEqual(["nl.bibliotheek.client.page_viewed.v1"]);
    expect(tracker.pending()).toEqual([]);
  });
});
