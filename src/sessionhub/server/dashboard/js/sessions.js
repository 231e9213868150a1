// Lists of sessions kept current from the stream: a snapshot (GET /api/sessions), then
// every publication applied on top. Each session carries a `version` (+1 on every change);
// a publication whose version is not newer than what is shown is a repeat and is skipped, so
// a snapshot and the stream that continues it never show anything twice or go backwards.

import { ApiError } from './api.js';

export const PAGE_SIZE = 25;

/** Remembered newest copies of sessions seen, at most (for merging later pages). */
const SEEN_MAX = 5000;

/** What a publication on a sessions topic means for the session it is about. */
export function eventSession(event) {
  if (event.type === 'session.deleted') return null;
  return event.data?.session ?? null;
}

function splitList(value) {
  return String(value || '')
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean);
}

/** Does `session` pass `filters` ({kind, state, owner, text}), as the server would decide? */
export function matches(session, filters) {
  const kinds = splitList(filters.kind);
  const states = splitList(filters.state);
  if (kinds.length && !kinds.includes(session.kind)) return false;
  if (states.length && !states.includes(session.state)) return false;
  if (filters.owner && session.owner !== filters.owner) return false;
  if (filters.text) {
    const needle = filters.text.toLowerCase();
    const hay = [session.id, session.owner, JSON.stringify(session.attributes ?? {})];
    if (!hay.some((v) => String(v).toLowerCase().includes(needle))) return false;
  }
  return true;
}

/** Newest first, as the server orders them. */
export function newestFirst(a, b) {
  if (a.created_at !== b.created_at) return a.created_at < b.created_at ? 1 : -1;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

export class SessionList extends EventTarget {
  constructor(api, filters = {}, { pageSize = PAGE_SIZE } = {}) {
    super();
    this.api = api;
    this.filters = { kind: '', state: '', owner: '', text: '', ...filters };
    this.pageSize = pageSize;
    this.items = [];
    this.nextCursor = null;
    this.seen = new Map(); // id -> newest snapshot seen; {id, version, deleted} once deleted
    this.loading = 0;
    this.buffer = [];
    this.error = null;
  }

  /** The version shown for `id` (0: none). */
  version(id) {
    return this.seen.get(id)?.version ?? 0;
  }

  _remember(session) {
    if (this.seen.has(session.id)) this.seen.delete(session.id);
    this.seen.set(session.id, session);
    if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.keys().next().value);
  }

  /**
   * Load the first page for the current filters. Publications that arrive meanwhile are
   * held and applied after it, so none is lost to the snapshot replacing the list.
   * Returns the snapshot's stream position ({topic, offset, epoch}).
   */
  async load() {
    this.loading += 1;
    this.dispatchEvent(new Event('loading'));
    try {
      const page = await this.api.get('/api/sessions', { ...this.filters, limit: this.pageSize });
      this.items = [];
      this.nextCursor = page.next_cursor;
      this._merge(page.items);
      this.error = null;
      return page.stream;
    } catch (error) {
      this.error = error instanceof ApiError ? error : new ApiError(0, { detail: String(error) });
      throw error;
    } finally {
      this.loading -= 1;
      if (!this.loading) this._drain();
      this._changed();
    }
  }

  /** The next (older) page, appended. */
  async more() {
    if (!this.nextCursor) return;
    this.loading += 1;
    this.dispatchEvent(new Event('loading'));
    try {
      const page = await this.api.get('/api/sessions', {
        ...this.filters,
        limit: this.pageSize,
        cursor: this.nextCursor,
      });
      this.nextCursor = page.next_cursor;
      this._merge(page.items);
    } finally {
      this.loading -= 1;
      if (!this.loading) this._drain();
      this._changed();
    }
  }

  _merge(sessions) {
    const shown = new Set(this.items.map((s) => s.id));
    for (const fresh of sessions) {
      // A copy newer than the page's may have come over the stream meanwhile: keep it.
      const known = this.seen.get(fresh.id);
      if (known?.deleted) continue; // deleted since
      const session = known && known.version > fresh.version ? known : fresh;
      this._remember(session);
      // The server filters by text if it can; filtering here too keeps an older server honest.
      if (!shown.has(session.id) && matches(session, this.filters)) {
        this.items.push(session);
        shown.add(session.id);
      }
    }
    this.items.sort(newestFirst);
  }

  _drain() {
    const held = this.buffer;
    this.buffer = [];
    for (const event of held) this._apply(event);
  }

  /** A publication of a sessions topic. Returns true when it changed what is shown. */
  apply(event) {
    if (this.loading) {
      this.buffer.push(event);
      return false;
    }
    const changed = this._apply(event);
    if (changed) this._changed();
    return changed;
  }

  _apply(event) {
    const id = event.session_id;
    if (!id || event.version <= this.version(id)) return false; // a repeat, or older
    const session = eventSession(event);
    const index = this.items.findIndex((s) => s.id === id);
    if (session === null) {
      // A tombstone keeps the version, so a late repeat cannot bring the session back.
      this._remember({ id, version: event.version, deleted: true });
      if (index >= 0) this.items.splice(index, 1);
      return index >= 0;
    }
    this._remember(session);
    const fits = matches(session, this.filters) && this._inRange(session);
    if (index >= 0 && fits) this.items[index] = { ...this.items[index], ...session };
    else if (index >= 0) this.items.splice(index, 1);
    else if (fits) {
      this.items.push(session);
      this.items.sort(newestFirst);
    } else return false;
    return true;
  }

  /** Only sessions within what is loaded: the next page brings the older ones. */
  _inRange(session) {
    if (!this.nextCursor || !this.items.length) return true;
    return newestFirst(session, this.items[this.items.length - 1]) <= 0;
  }

  _changed() {
    this.dispatchEvent(new Event('change'));
  }
}
