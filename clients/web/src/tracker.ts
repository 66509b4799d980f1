// The klantreis web tracker: a library website's client events (docs/tracker.md), posted as CloudEvents to
// identity's `POST /v1/events` with the library's publishable key.
//
// Nothing leaves the browser and nothing is stored before the visitor consents: events tracked before are held in
// memory and sent once consent is given (dropped if it is refused). The visitor is a random first-party id in the
// site's own localStorage (no cookie, no third party); the library's server may link it to a member after login.
// Events go in batches, are kept in localStorage until the ingest accepted them (an offline queue), are retried
// with exponential backoff, and what is left when the page is hidden goes with navigator.sendBeacon.

export type Payloads = {
  page_viewed: { path: string };
  proposition_viewed: { proposition: string; path?: string };
  search_performed: { scope: string; results: number };
  platform_handoff: { to_platform: string; proposition?: string };
};
export type ClientEventName = keyof Payloads;

export const TYPE_PREFIX = "nl.bibliotheek.client.";
const VERSION = ".v1";

export interface CloudEvent {
  specversion: "1.0";
  id: string;
  source: string;
  type: string;
  time: string;
  subject: string;
  datacontenttype: "application/json";
  library: string;
  channel: "online";
  platform: string;
  data: Record<string, unknown>;
}

/** What the tracker needs of the browser; tests pass fakes. */
export interface Environment {
  storage: Pick<Storage, "getItem" | "setItem" | "removeItem"> | null;
  post(url: string, body: string): Promise<{ status: number; body: unknown }>;
  beacon(url: string, body: string): boolean;
  online(): boolean;
  now(): Date;
  random(): number;
  randomId(): string;
  later(run: () => void, ms: number): unknown;
  cancel(timer: unknown): void;
  path(): string;
}

export interface Options {
  /** identity's ingest, e.g. https://klantreis.example/v1/events */
  endpoint: string;
  /** the library's publishable key, `pk_<library>_<random>` */
  key: string;
  platform?: string;
  batchSize?: number;
  flushAfterMs?: number;
  maxQueue?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
}

export const STORAGE = { consent: "klantreis.consent", visitor: "klantreis.visitor", queue: "klantreis.queue" };
const MAX_PATH = 300;
// Answers a retry can change; any other 4xx is final for the batch (a bad event never gets better).
const RETRYABLE = new Set([408, 409, 425, 429]);

interface Held {
  name: ClientEventName;
  data: Record<string, unknown>;
  time: Date;
}

/** `pk_oba_…` → `oba`. */
export function libraryOf(key: string): string {
  const match = /^pk_([a-z][a-z0-9-]{1,39})_[A-Za-z0-9_-]{16,64}$/.exec(key);
  if (!match) throw new Error("klantreis: a publishable key reads pk_<library>_<random>");
  return match[1];
}

/** A path as sent: no query string or fragment (they may carry personal data), at most 300 characters. */
export function cleanPath(path: string): string {
  const bare = path.split(/[?#]/, 1)[0].replace(/\s/g, "");
  const absolute = bare.startsWith("/") ? bare : `/${bare}`;
  return absolute.slice(0, MAX_PATH);
}

export class Tracker {
  readonly library: string;
  private readonly platform: string;
  private readonly url: string;
  private readonly batchSize: number;
  private readonly flushAfterMs: number;
  private readonly maxQueue: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private held: Held[] = [];
  private queue: CloudEvent[] = [];
  private timer: unknown = null;
  private timerMs = 0;
  private sending = false;
  private failures = 0;

  constructor(
    options: Options,
    private readonly env: Environment,
  ) {
    this.library = libraryOf(options.key);
    this.platform = options.platform ?? "website";
    this.url = `${options.endpoint}?key=${encodeURIComponent(options.key)}`;
    this.batchSize = options.batchSize ?? 20;
    this.flushAfterMs = options.flushAfterMs ?? 1000;
    this.maxQueue = options.maxQueue ?? 500;
    this.backoffMs = options.backoffMs ?? 1000;
    this.maxBackoffMs = options.maxBackoffMs ?? 60_000;
    if (this.consented()) {
      this.queue = this.storedQueue();
      this.schedule(0);
    }
  }

  /** The visitor's choice, as the site's consent banner reports it; remembered on this site. */
  consent(granted: boolean): void {
    this.write(STORAGE.consent, granted ? "granted" : "denied");
    if (!granted) {
      this.held = [];
      this.queue = [];
      this.env.storage?.removeItem(STORAGE.visitor);
      this.env.storage?.removeItem(STORAGE.queue);
      return;
    }
    const held = this.held;
    this.held = [];
    for (const event of held) this.enqueue(this.cloudEvent(event));
  }

  consented(): boolean {
    return this.read(STORAGE.consent) === "granted";
  }

  /** A page view of `path` (default: the current page's). */
  page(path?: string): void {
    this.track("page_viewed", { path: cleanPath(path ?? this.env.path()) });
  }

  track<N extends ClientEventName>(name: N, data: Payloads[N]): void {
    const held: Held = { name, data: { ...data }, time: this.env.now() };
    if (typeof held.data.path === "string") held.data.path = cleanPath(held.data.path);
    if (this.read(STORAGE.consent) === "denied") return;
    if (!this.consented()) {
      if (this.held.length < this.maxQueue) this.held.push(held);
      return;
    }
    this.enqueue(this.cloudEvent(held));
  }

  /** What waits to be sent (after consent). */
  pending(): readonly CloudEvent[] {
    return this.queue;
  }

  /** Post the next batch now; resolves when its answer is handled. */
  async flush(): Promise<void> {
    if (this.sending || !this.queue.length || !this.consented() || !this.env.online()) return;
    this.cancelTimer();
    const batch = this.queue.slice(0, this.batchSize);
    this.sending = true;
    let answer: { status: number; body: unknown } | null = null;
    try {
      answer = await this.env.post(this.url, JSON.stringify(batch));
    } catch {
      answer = null; // offline, refused by CORS, the server away: all worth a retry
    } finally {
      this.sending = false;
    }
    if (answer === null || answer.status >= 500 || RETRYABLE.has(answer.status)) {
      this.failures += 1;
      const ceiling = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** (this.failures - 1));
      this.schedule(ceiling / 2 + (this.env.random() * ceiling) / 2);
      return;
    }
    this.failures = 0;
    this.forget(new Set(batch.map((event) => event.id)), retryAgain(answer));
    if (this.queue.length) this.schedule(0);
  }

  /** The page is being hidden or left: hand what waits to the browser with sendBeacon. */
  pageHide(): void {
    if (!this.queue.length || !this.consented()) return;
    const batch = this.queue.slice(0, this.batchSize);
    if (this.env.beacon(this.url, JSON.stringify(batch))) {
      // The ingest keeps event ids for 7 days: were this beacon to arrive and the queue be sent again, nothing doubles.
      this.forget(new Set(batch.map((event) => event.id)), new Set());
    }
  }

  private enqueue(event: CloudEvent): void {
    this.queue.push(event);
    if (this.queue.length > this.maxQueue) this.queue.splice(0, this.queue.length - this.maxQueue);
    this.persist();
    this.schedule(this.queue.length >= this.batchSize ? 0 : this.flushAfterMs);
  }

  private forget(sent: Set<string>, keep: Set<string>): void {
    this.queue = this.queue.filter((event) => !sent.has(event.id) || keep.has(event.id));
    this.persist();
  }

  private cloudEvent(held: Held): CloudEvent {
    return {
      specversion: "1.0",
      id: this.env.randomId(),
      source: `/libraries/${this.library}/${this.platform}`,
      type: TYPE_PREFIX + held.name + VERSION,
      time: held.time.toISOString(),
      subject: this.visitor(),
      datacontenttype: "application/json",
      library: this.library,
      channel: "online",
      platform: this.platform,
      data: held.data,
    };
  }

  private visitor(): string {
    let id = this.read(STORAGE.visitor);
    if (!id) {
      id = `v-${this.env.randomId()}`; // never a member's id (a bare UUID): identity links it to one server-side
      this.write(STORAGE.visitor, id);
    }
    return id;
  }

  private schedule(ms: number): void {
    if (this.timer !== null && this.timerMs <= ms) return;
    this.cancelTimer();
    this.timerMs = ms;
    this.timer = this.env.later(() => {
      this.timer = null;
      void this.flush();
    }, ms);
  }

  private cancelTimer(): void {
    if (this.timer !== null) this.env.cancel(this.timer);
    this.timer = null;
  }

  private storedQueue(): CloudEvent[] {
    try {
      const stored: unknown = JSON.parse(this.read(STORAGE.queue) ?? "[]");
      return Array.isArray(stored) ? (stored as CloudEvent[]) : [];
    } catch {
      return [];
    }
  }

  private persist(): void {
    if (this.queue.length) this.write(STORAGE.queue, JSON.stringify(this.queue));
    else this.env.storage?.removeItem(STORAGE.queue);
  }

  private read(name: string): string | null {
    try {
      return this.env.storage?.getItem(name) ?? null;
    } catch {
      return null;
    }
  }

  private write(name: string, value: string): void {
    try {
      this.env.storage?.setItem(name, value);
    } catch {
      // storage full or blocked: the tracker goes on in memory
    }
  }
}

/** The ids of a batch's events that the ingest asked to post again (409: being handled elsewhere). */
function retryAgain(answer: { status: number; body: unknown }): Set<string> {
  const rejected = (answer.body as { rejected?: { id?: string; status?: number }[] } | null)?.rejected ?? [];
  return new Set(rejected.filter((r) => r.status === 409 && r.id).map((r) => r.id as string));
}
