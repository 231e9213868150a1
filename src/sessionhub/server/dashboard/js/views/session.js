// One session: its attributes, metadata, timestamps, end reason, the actions the caller may
// take, the panel of its kind, and its event log as a timeline, all kept live.

import { ApiError } from '../api.js';
import { h, show } from '../dom.js';
import { duration, pretty, time, when, words } from '../format.js';
import { panelFor } from '../panels/index.js';
import { eventSession } from '../sessions.js';
import { actionButtons, allowedActions, errorNote, stateBadge } from './common.js';

const HIDDEN_METADATA = new Set(['_commands']); // shown by the remote access panel instead

function describe(event) {
  const d = event.data || {};
  switch (event.type) {
    case 'session.created':
      return `created in state ${words(d.state ?? d.session?.state)}`;
    case 'session.state_changed': {
      const why = [d.reason && `reason: ${words(d.reason)}`, d.detail && `“${d.detail}”`].filter(Boolean);
      return `${words(d.action)}: ${words(d.from)} → ${words(d.to)}${why.length ? ` (${why.join(', ')})` : ''}`;
    }
    case 'session.updated': {
      const parts = Object.entries(d.changes || {}).map(([what, keys]) =>
        Array.isArray(keys) && keys.length ? `${words(what)} (${keys.join(', ')})` : words(what));
      return parts.length ? `changed ${parts.join('; ')}` : 'updated';
    }
    case 'session.deleted':
      return 'deleted';
    default:
      return words(event.type);
  }
}

function definitions(entries) {
  return h('dl', { class: 'facts' }, entries.filter(Boolean).flatMap(([term, value]) => [
    h('dt', {}, term),
    h('dd', {}, value === null || value === undefined || value === '' ? '—' : value),
  ]));
}

export class SessionView {
  constructor(app, id) {
    this.app = app;
    this.id = id;
    this.session = null;
    this.events = [];
    this.loading = true;
    this.held = [];
    this.panel = null;
    this.note = errorNote();
    this.note.hidden = true;
    this.body = h('div', { class: 'session-body' }, h('p', {}, 'Loading…'));
    this.element = h('section', { class: 'view session-view' },
      h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← All sessions')),
      h('h1', { tabindex: '-1' }, 'Session ', h('span', { class: 'mono' }, id)),
      this.body);
    this.onEvent = (e) => this._event(e.detail);
    this.onReload = () => this.load();
  }

  mount() {
    this.app.bus.addEventListener('session-event', this.onEvent);
    this.app.bus.addEventListener('reload', this.onReload);
    this.load();
  }

  destroy() {
    this.app.bus.removeEventListener('session-event', this.onEvent);
    this.app.bus.removeEventListener('reload', this.onReload);
    this.panel?.destroy?.();
  }

  /** Snapshot and event log; publications arriving meanwhile are held, then applied. */
  async load() {
    this.loading = true;
    try {
      const path = `/api/sessions/${encodeURIComponent(this.id)}`;
      const [session, log] = await Promise.all([
        this.app.api.get(path),
        this.app.api.get(`${path}/events`, { limit: 1000 }),
      ]);
      this.session = session;
      this.events = log.items;
    } catch (error) {
      this.loading = false;
      this.parts = null;
      this.panel?.destroy?.();
      this.panel = null;
      const gone = error instanceof ApiError && error.status === 404;
      show(this.body, h('p', { class: 'form-error', role: 'alert' },
        gone ? `There is no session ${this.id} that you may see.` : error.text ?? String(error)));
      return;
    }
    this.loading = false;
    const held = this.held;
    this.held = [];
    for (const event of held) this._apply(event);
    const again = Boolean(this.parts);
    this.render();
    // After a gap the panel's own reads (commands, chat) may be stale as well.
    if (again) this.panel?.reload?.(this.events);
  }

  _event(event) {
    if (event.session_id !== this.id) return;
    if (this.loading) {
      this.held.push(event);
      return;
    }
    if (this._apply(event)) {
      this.render();
      this.panel?.onEvent?.(event, this.session);
    }
  }

  _apply(event) {
    if (!this.session || event.version <= this.session.version) return false; // a repeat
    const after = eventSession(event);
    if (after === null) {
      this.session = { ...this.session, deleted: true, version: event.version };
    } else {
      this.session = { ...this.session, ...after };
    }
    if (!this.events.some((e) => e.id === event.id)) this.events.push(event);
    return true;
  }

  /** The session an action answered with (newer than the stream's, or the same). */
  _answered(session) {
    if (session && session.version > this.session.version) {
      this.session = { ...this.session, ...session };
      this.render();
    }
  }

  render() {
    const s = this.session;
    if (!s) return;
    if (!this.parts) this._layout(s);
    const kind = this.app.kinds.get(s.kind);
    const actions = s.deleted ? [] : allowedActions(this.app, s);
    const metadata = Object.fromEntries(
      Object.entries(s.metadata || {}).filter(([k]) => !HIDDEN_METADATA.has(k)),
    );
    this.panel?.update?.(s);
    const { headline, actionBar, details, attributes, meta, timeline } = this.parts;
    show(headline,
      h('span', { class: 'kind' }, words(s.kind)),
      stateBadge(this.app, s),
      s.deleted ? h('strong', {}, 'deleted') : null);
    show(actionBar,
      actions.length
        ? actionButtons(this.app, s, actions, this.note, (updated) => this._answered(updated))
        : h('p', { class: 'help' }, kind && !kind.ended.includes(s.state)
          ? 'No action of this kind is open to you in this state.'
          : 'This session has ended.'));
    show(details, definitions([
      ['Owner', s.owner],
      ['State', words(s.state)],
      ['Version', String(s.version)],
      ['Created', when(s.created_at)],
      ['Started', when(s.started_at)],
      ['Last activity', when(s.last_activity_at)],
      ['Ended', when(s.ended_at)],
      ['End reason', s.end_reason ? words(s.end_reason) : null],
      ['End detail', s.end_detail],
      s.duration_seconds !== undefined ? ['Duration', duration(s.duration_seconds)] : null,
    ]));
    show(attributes,
      Object.keys(s.attributes || {}).length
        ? definitions(Object.entries(s.attributes).map(([k, v]) => [words(k), typeof v === 'string' ? v : JSON.stringify(v)]))
        : h('p', { class: 'help' }, 'None.'),
      Object.keys(s.counters || {}).length
        ? [h('h3', {}, 'Counters'), definitions(Object.entries(s.counters).map(([k, v]) => [words(k), String(v)]))]
        : null);
    show(meta, h('pre', { class: 'json' }, pretty(metadata)));
    show(timeline, this.events.map((e) =>
      h('li', { 'data-type': e.type },
        h('time', { datetime: e.at, title: when(e.at) }, time(e.at)),
        h('span', { class: 'event-type' }, words(e.type.replace('session.', ''))),
        h('span', { class: 'event-text' }, describe(e)),
        h('span', { class: 'event-meta' }, `v${e.version} · by ${e.actor}`))));
  }

  /** The page's parts, made once: later changes redraw their contents, so focus and what
   * is typed in the kind's panel survive a publication. */
  _layout(s) {
    const card = (id, title, content) =>
      h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), content);
    this.parts = {
      headline: h('div', { class: 'headline' }),
      actionBar: h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions' }),
      details: h('div'),
      attributes: h('div'),
      meta: h('div'),
      timeline: h('ol', { class: 'timeline' }),
    };
    const make = panelFor(s.kind);
    this.panel = make ? make({ app: this.app, session: s, events: this.events }) : null;
    const p = this.parts;
    show(this.body,
      p.headline,
      p.actionBar,
      this.note,
      h('div', { class: 'grid' },
        card('h-details', 'Details', p.details),
        card('h-attributes', 'Attributes', p.attributes),
        card('h-metadata', 'Metadata', p.meta)),
      this.panel ? this.panel.element : null,
      card('h-timeline', 'Event log', p.timeline));
  }
}
