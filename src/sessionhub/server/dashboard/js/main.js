// The dashboard's entry point: sign in, load the snapshots, follow the stream, route views.
//
// One SSE stream carries everything the page follows: the sessions topic the caller may
// read (`sessions` for admins, `user:<id>` for everyone else) from the position of the
// first snapshot, and the caller's notification topics from now on. Every view and model
// gets the same publications, so nothing needs a stream of its own.

import { Api, ApiError } from './api.js';
import { forgetToken, identity, loadToken } from './auth.js';
import { Counts } from './counts.js';
import { h, show } from './dom.js';
import { words } from './format.js';
import { LiveStream, STATUS } from './live.js';
import { SessionList } from './sessions.js';
import { showSignIn } from './signin.js';
import { Toasts } from './toasts.js';
import { CountsView } from './views/counts.js';
import { ListView } from './views/list.js';
import { RemoteView } from './views/remote.js';
import { SessionView } from './views/session.js';
import { WatchView } from './views/watch.js';

/** Tests may shorten the fallback interval: globalThis.sessionhubConfig = {pollMs}. */
const CONFIG = { pollMs: 10000, ...(globalThis.sessionhubConfig || {}) };
/** Seconds a token is still accepted after its expiry (the server's leeway). */
const LEEWAY_S = 30;

const STATUS_TEXT = {
  [STATUS.connecting]: 'Connecting…',
  [STATUS.live]: 'Live',
  [STATUS.reconnecting]: 'Reconnecting…',
  [STATUS.offline]: 'Offline, retrying',
  [STATUS.polling]: `No live stream: updating every ${Math.round(CONFIG.pollMs / 1000)} s`,
  [STATUS.expired]: 'Signed out',
};

const ROUTES = [
  [/^#?\/?$/, (app) => new ListView(app), 'sessions'],
  [/^#\/remote$/, (app) => new RemoteView(app), 'remote'],
  [/^#\/counts$/, (app) => new CountsView(app), 'counts'],
  [/^#\/session\/([^/]+)$/, (app, id) => new SessionView(app, decodeURIComponent(id)), 'sessions'],
  [/^#\/watch\/([^/]+)$/, (app, id) => new WatchView(app, decodeURIComponent(id)), 'sessions'],
];

class App {
  constructor(token, who) {
    this.token = token;
    this.who = who;
    this.api = new Api(token, (error) => this.signOut(`The server refused the token: ${error.message}`));
    this.main = document.getElementById('main');
    this.toasts = new Toasts(document.getElementById('toasts'));
    this.bus = new EventTarget(); // 'session-event' (detail: event), 'reload'
    this.view = null;
    this.reloading = null;
    this.ticker = setInterval(() => this.bus.dispatchEvent(new Event('tick')), 10000);
  }

  /** The sessions topic this caller may follow: it carries every session they may see. */
  get sessionsTopic() {
    return this.who.isAdmin ? 'sessions' : `user:${this.who.sub}`;
  }

  async start() {
    const { kinds } = await this.api.get('/api/kinds');
    this.kinds = new Map(kinds.map((k) => [k.name, k]));
    this.list = new SessionList(this.api);
    this.counts = new Counts(this.api, this.kinds);
    // The list's first snapshot is unfiltered, so its position is on the topic followed.
    const position = await this.list.load();
    await this.counts.load();
    this._header();
    const topics = [this.sessionsTopic, `notifications:${this.who.sub}`];
    if (this.who.isAdmin) topics.push('admin:notifications');
    this.stream = new LiveStream({
      token: this.token,
      topics,
      since: position.topic === this.sessionsTopic ? { [position.topic]: position } : {},
      pollMs: CONFIG.pollMs,
      onPub: (topic, data) => this._publication(topic, data),
      onGap: (info) => {
        if (info.topic === this.sessionsTopic) this.reload();
      },
      onPoll: () => this.reload(),
      onStatus: (status) => this._status(status),
      onExpired: () => this.signOut('Your token has expired: sign in again.'),
      probe: () => this._probe(),
    });
    this.stream.start();
    this._expireAt(this.who.exp);
    window.addEventListener('hashchange', () => this.route());
    this.route();
  }

  /** Can HTTP reach the server with this token? (For the stream's reconnect decisions.) */
  async _probe() {
    try {
      await this.api.request('GET', '/api/kinds', { timeout: 4000 });
      return 'ok';
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return 'unauthorized';
      return 'down';
    }
  }

  /** After a gap (or, without a stream, every poll): fresh snapshots for everything shown. */
  reload() {
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = (async () => {
      try {
        await Promise.all([this.list.load(), this.counts.load()]);
        this.bus.dispatchEvent(new Event('reload'));
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 401) console.warn('reload failed', error);
      } finally {
        this.reloading = null;
        if (this.reloadAgain) {
          this.reloadAgain = false;
          this.reload();
        }
      }
    })();
    return this.reloading;
  }

  _publication(topic, data) {
    if (topic === this.sessionsTopic) {
      this.list.apply(data);
      const what = this.counts.apply(data);
      if (what && this.who.isAdmin) this._sessionToast(data, what);
      this.bus.dispatchEvent(new CustomEvent('session-event', { detail: data }));
    } else if (topic.startsWith('notifications:') || topic === 'admin:notifications') {
      this._notificationToast(data);
    }
  }

  /** Seed 001's SessionEventToast: what happened and the live count. */
  _sessionToast(event, what) {
    const created = what === 'created';
    const state = event.data?.session?.state ?? event.data?.to;
    this.toasts.show({
      title: created ? `Session created: ${event.session_id}` : `Session ended: ${event.session_id}`,
      body: `${words(event.kind)} of ${event.owner}${created ? '' : ` (${state})`} · ${this.counts.active} active of ${this.counts.total}`,
      tone: created ? 'good' : 'bad',
      icon: created ? '+' : '−',
      key: `${what}:${event.session_id}`,
    });
  }

  _notificationToast(note) {
    const data = note.data || {};
    this.toasts.show({
      title: data.message || note.event,
      body: data.session_id ? `${note.event} · ${data.session_id}` : note.event,
      icon: data.badge,
      tone: /dropped|denied|stopped/.test(note.event) ? 'bad' : 'info',
      // A note addressed to the owner and to every admin arrives twice for an admin owner.
      key: `${note.event}:${data.session_id}:${data.timestamp}`,
    });
  }

  _header() {
    const badge = document.getElementById('count-badge');
    const render = () => {
      badge.hidden = false;
      badge.textContent = `${this.counts.active} active`;
      badge.title = `${this.counts.active} active sessions of ${this.counts.total}`;
    };
    this.counts.addEventListener('change', render);
    render();
    document.getElementById('nav').hidden = false;
    const who = document.getElementById('who');
    who.textContent = this.who.isAdmin ? `${this.who.sub} (admin)` : this.who.sub;
    const out = document.getElementById('signout');
    out.hidden = false;
    out.onclick = () => this.signOut('Signed out.');
  }

  _status(status) {
    const badge = document.getElementById('conn');
    badge.dataset.state = status;
    badge.textContent = STATUS_TEXT[status] ?? status;
  }

  _expireAt(exp) {
    if (!exp) return;
    const ms = (exp + LEEWAY_S) * 1000 - Date.now();
    // setTimeout holds at most ~24.8 days; a longer token is checked again then.
    const wait = Math.min(Math.max(ms, 0), 2 ** 31 - 1);
    setTimeout(() => {
      if (Date.now() >= (exp + LEEWAY_S) * 1000) this.signOut('Your token has expired: sign in again.');
      else this._expireAt(exp);
    }, wait);
  }

  route() {
    const hash = location.hash || '#/';
    for (const [pattern, make, section] of ROUTES) {
      const m = hash.match(pattern);
      if (!m) continue;
      this.view?.destroy?.();
      this.view = make(this, ...m.slice(1));
      for (const a of document.querySelectorAll('#nav a')) {
        if (a.dataset.route === section) a.setAttribute('aria-current', 'page');
        else a.removeAttribute('aria-current');
      }
      show(this.main, this.view.element);
      this.view.mount?.();
      // Move focus to the new page's heading, as a page load would.
      this.main.querySelector('h1')?.focus({ preventScroll: false });
      return;
    }
    location.hash = '#/';
  }

  signOut(message) {
    if (this.stopped) return;
    this.stopped = true;
    this.stream?.stop();
    this.counts?.stop();
    this.view?.destroy?.();
    clearInterval(this.ticker);
    forgetToken();
    location.hash = '';
    // A fresh page, so nothing of this session's state lingers; the message goes with it.
    try {
      sessionStorage.setItem('sessionhub.message', message);
    } catch {
      // the form then opens without it
    }
    location.reload();
  }
}

async function boot() {
  const token = loadToken();
  let message = null;
  try {
    message = sessionStorage.getItem('sessionhub.message');
    sessionStorage.removeItem('sessionhub.message');
  } catch {
    // no storage: no message
  }
  if (!token) {
    showSignIn(message);
    return;
  }
  let who;
  try {
    who = identity(token);
  } catch (error) {
    forgetToken();
    showSignIn(`That is not a sessionhub token (${error.message}).`);
    return;
  }
  if (who.exp && (who.exp + LEEWAY_S) * 1000 < Date.now()) {
    forgetToken();
    showSignIn('Your token has expired: sign in again.');
    return;
  }
  const app = new App(token, who);
  try {
    await app.start();
  } catch (error) {
    if (app.stopped) return;
    show(
      document.getElementById('main'),
      h('section', { class: 'card error-page' },
        h('h1', { tabindex: '-1' }, 'The dashboard could not start'),
        h('p', { role: 'alert' }, error instanceof ApiError ? error.text : String(error)),
        h('button', { type: 'button', onclick: () => location.reload() }, 'Try again'),
      ),
    );
  }
}

boot();
