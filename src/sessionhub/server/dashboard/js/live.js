// Following topics live over Server-Sent Events (GET /api/stream), without gaps.
//
// The stream starts from the position a snapshot reflects (the `stream` field of
// GET /api/sessions), sent as `last_event_id`, so the server replays exactly what happened
// after the snapshot. The position after every event is remembered, and a stream that breaks
// is reopened from there. When the server no longer has what was missed (its history window
// passed, or it restarted and the topic's epoch changed) it says `unrecovered` and `onGap`
// reloads the snapshots: stale data is never shown as current. A stream that cannot be
// opened while plain HTTP works (a proxy that blocks it) falls back to `onPoll` at a modest
// interval, and the status says so.

/** What the connection badge shows. */
export const STATUS = {
  connecting: 'connecting',
  live: 'live',
  reconnecting: 'reconnecting',
  offline: 'offline',
  polling: 'polling',
  expired: 'expired',
};

const BACKOFF_MS = [250, 500, 1000, 2000, 4000];
/** Times in a row the stream failed although HTTP worked, before reading over HTTP instead. */
const FALLBACK_AFTER = 2;
/** A stream that opened but delivered nothing by then is buffered away by something between. */
const FIRST_EVENT_MS = 10000;
const CODE_EXPIRED = 3005;

/** The SSE id for `positions` ({topic: {offset, epoch}}) among `topics` (see server/sse.py). */
export function formatId(positions, topics) {
  const known = topics.filter((t) => positions[t]);
  if (topics.length === 1 && known.length === 1) {
    const p = positions[known[0]];
    return `${p.offset}:${p.epoch}`;
  }
  return known.map((t) => `${t}@${positions[t].offset}:${positions[t].epoch}`).join(' ');
}

export class LiveStream {
  /**
   * topics: names to follow; since: {topic: {offset, epoch}} where to start (others: now).
   * onPub(topic, data): a publication. onGap(info): reload your snapshots.
   * onStatus(status, detail). onPoll(): read over HTTP (fallback). onExpired(): sign in again.
   * probe(): 'ok' | 'down' | 'unauthorized' — can HTTP reach the server with this token?
   */
  constructor({ token, topics, since, onPub, onGap, onStatus, onPoll, onExpired, probe, pollMs }) {
    this.token = token;
    this.topics = topics;
    this.lastId = formatId(since || {}, topics);
    this.onPub = onPub;
    this.onGap = onGap;
    this.onStatus = onStatus;
    this.onPoll = onPoll;
    this.onExpired = onExpired;
    this.probe = probe;
    this.pollMs = pollMs;
    this.status = null;
    this.failures = 0; // in a row, for the backoff
    this.blocked = 0; // in a row, with HTTP working: the stream itself cannot get through
    this.source = null;
    this.timer = null;
    this.watchdog = null;
    this.pollTimer = null;
    this.stopped = false;
  }

  start() {
    this._setStatus(STATUS.connecting);
    this._open();
  }

  stop() {
    this.stopped = true;
    this._close();
    clearTimeout(this.timer);
    this._stopPolling();
  }

  _url() {
    const params = new URLSearchParams({ topics: this.topics.join(','), token: this.token });
    // EventSource cannot set headers on its first request; the server reads the same
    // position from this parameter (and prefers the header the browser sends on reconnect).
    if (this.lastId) params.set('last_event_id', this.lastId);
    return `/api/stream?${params}`;
  }

  _open() {
    this._close();
    const source = new EventSource(this._url());
    this.source = source;
    const remember = (event) => {
      if (event.lastEventId) this.lastId = event.lastEventId;
    };
    source.addEventListener('subscribed', (event) => {
      remember(event);
      this._opened();
    });
    source.addEventListener('pub', (event) => {
      remember(event);
      const message = JSON.parse(event.data);
      this.onPub(message.topic, message.data);
    });
    source.addEventListener('unrecovered', (event) => this.onGap(JSON.parse(event.data)));
    source.addEventListener('disconnect', (event) => {
      // The server ends the stream and says why: an expired token is final; anything else
      // (shutdown, a slow reader) is resumed from the last position.
      const { code } = JSON.parse(event.data);
      if (code === CODE_EXPIRED) {
        this.stop();
        this._setStatus(STATUS.expired);
        this.onExpired();
      } else {
        this._failed();
      }
    });
    source.addEventListener('error', () => this._failed());
    this.watchdog = setTimeout(() => this._failed(), FIRST_EVENT_MS);
  }

  _close() {
    clearTimeout(this.watchdog);
    if (this.source) {
      this.source.close(); // closed by us: the browser does not reconnect it on its own
      this.source = null;
    }
  }

  _opened() {
    clearTimeout(this.watchdog);
    this.failures = 0;
    this.blocked = 0;
    this._stopPolling();
    this._setStatus(STATUS.live);
  }

  _failed() {
    if (this.stopped || !this.source) return;
    this._close();
    this.failures += 1;
    if (this.status !== STATUS.polling && this.status !== STATUS.offline) {
      this._setStatus(STATUS.reconnecting);
    }
    this._retryLater();
  }

  _retryLater() {
    const base = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length) - 1] ?? 500;
    const delay = this.status === STATUS.polling ? Math.max(base, this.pollMs * 2) : base;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._retry(), delay * (0.8 + Math.random() * 0.4));
  }

  async _retry() {
    const verdict = await this.probe();
    if (this.stopped) return;
    if (verdict === 'unauthorized') {
      this.stop();
      this._setStatus(STATUS.expired);
      this.onExpired();
      return;
    }
    if (verdict === 'down') {
      // The server itself is away (restarting, network down): not a blocked stream.
      this.failures += 1;
      this.blocked = 0;
      if (this.status !== STATUS.polling) this._setStatus(STATUS.offline);
      this._retryLater();
      return;
    }
    this.blocked += 1;
    if (this.blocked >= FALLBACK_AFTER) this._startPolling();
    else if (this.status === STATUS.offline) this._setStatus(STATUS.reconnecting);
    this._open();
  }

  _startPolling() {
    if (this.pollTimer) return;
    this._setStatus(STATUS.polling);
    this.onPoll();
    this.pollTimer = setInterval(() => this.onPoll(), this.pollMs);
  }

  _stopPolling() {
    clearInterval(this.pollTimer);
    this.pollTimer = null;
  }

  _setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.onStatus(status);
  }
}
