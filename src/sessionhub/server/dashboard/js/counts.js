// Live session counts (what KATO's dashboard shows): total and active sessions, per kind,
// created and ended in the last hour, events per minute, and the active count over the last
// hour for the chart. Read once from GET /api/sessions/count, then moved by the stream.

const HOUR_MS = 3600 * 1000;
const SEEN_MAX = 10000;
/** Quiet time after the last change before the counts are read again to confirm them. */
const CONFIRM_AFTER_MS = 3000;
const CONFIRM_MAX_WAIT_MS = 30000;

export class Counts extends EventTarget {
  /** kinds: Map name -> kind (from GET /api/kinds: its `ended` states). */
  constructor(api, kinds) {
    super();
    this.api = api;
    this.kinds = kinds;
    this.total = 0;
    this.active = 0;
    this.byKind = new Map([...kinds.keys()].map((k) => [k, { count: 0, active: 0 }]));
    this.samples = []; // [{t, active}], the last hour
    this.created = []; // times of creations seen, the last hour
    this.endedAt = []; // times of ends seen, the last hour
    this.publications = []; // times of publications, for the rate
    this.versions = new Map();
    this.loaded = false;
    this.confirmTimer = null;
    this.firstPending = 0;
  }

  isEnded(kind, state) {
    return Boolean(this.kinds.get(kind)?.ended.includes(state));
  }

  async load() {
    const names = [...this.kinds.keys()];
    const [all, ...perKind] = await Promise.all([
      this.api.get('/api/sessions/count'),
      ...names.map((kind) => this.api.get('/api/sessions/count', { kind })),
    ]);
    this.total = all.count;
    this.active = all.active_sessions;
    names.forEach((kind, i) => {
      this.byKind.set(kind, { count: perKind[i].count, active: perKind[i].active_sessions });
    });
    this.loaded = true;
    this._sample();
    this._changed();
  }

  /** Count one publication of a sessions topic. Returns 'created', 'ended' or null. */
  apply(event) {
    const now = Date.now();
    this.publications.push(now);
    const id = event.session_id;
    if (!id || event.version <= (this.versions.get(id) ?? 0)) return null; // a repeat
    this.versions.set(id, event.version);
    if (this.versions.size > SEEN_MAX) this.versions.delete(this.versions.keys().next().value);
    const kind = this.byKind.get(event.kind) ?? { count: 0, active: 0 };
    this.byKind.set(event.kind, kind);
    let what = null;
    if (event.type === 'session.created') {
      this.total += 1;
      kind.count += 1;
      if (!this.isEnded(event.kind, event.data?.session?.state)) {
        this.active += 1;
        kind.active += 1;
      }
      this.created.push(now);
      what = 'created';
    } else if (event.type === 'session.state_changed') {
      const wasEnded = this.isEnded(event.kind, event.data?.from);
      const isEnded = this.isEnded(event.kind, event.data?.to);
      if (!wasEnded && isEnded) {
        this.active -= 1;
        kind.active -= 1;
        this.endedAt.push(now);
        what = 'ended';
      }
    } else if (event.type === 'session.deleted') {
      this.total -= 1;
      kind.count -= 1;
      if (!this.isEnded(event.kind, event.data?.state)) {
        this.active -= 1;
        kind.active -= 1;
      }
    }
    if (what || event.type === 'session.deleted') {
      this._sample();
      this._confirmLater();
    }
    this._changed();
    return what;
  }

  /**
   * The count read at start-up carries no stream position, so a change in the moment
   * between it and the stream's start could be counted twice. One read once things are
   * quiet settles it; with no changes there are no reads at all.
   */
  _confirmLater() {
    const now = Date.now();
    if (!this.firstPending) this.firstPending = now;
    clearTimeout(this.confirmTimer);
    const wait = Math.min(CONFIRM_AFTER_MS, CONFIRM_MAX_WAIT_MS - (now - this.firstPending));
    this.confirmTimer = setTimeout(() => {
      this.firstPending = 0;
      this.load().catch(() => {});
    }, Math.max(0, wait));
  }

  stop() {
    clearTimeout(this.confirmTimer);
  }

  /** Publications per minute over the last minute. */
  perMinute(now = Date.now()) {
    this.publications = this.publications.filter((t) => now - t < 60000);
    return this.publications.length;
  }

  lastHour(list, now = Date.now()) {
    while (list.length && now - list[0] > HOUR_MS) list.shift();
    return list.length;
  }

  _sample() {
    const now = Date.now();
    this.samples.push({ t: now, active: this.active });
    while (this.samples.length > 2 && now - this.samples[1].t > HOUR_MS) this.samples.shift();
  }

  _changed() {
    this.dispatchEvent(new Event('change'));
  }
}
