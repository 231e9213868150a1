// Remote access requests (seed 004): the ones waiting for approval first, then the active
// ones, each with the actions the caller may take (admins approve and deny).

import { h, show } from '../dom.js';
import { age, when, words } from '../format.js';
import { SessionList } from '../sessions.js';
import { actionButtons, allowedActions, errorNote, sessionLink, showError, stateBadge } from './common.js';

export class RemoteView {
  constructor(app) {
    this.app = app;
    this.list = new SessionList(app.api, { kind: 'remote_access', state: 'pending_approval,active' }, { pageSize: 200 });
    this.note = errorNote();
    this.note.hidden = true;
    this.pending = h('ul', { class: 'requests', 'aria-labelledby': 'h-pending' });
    this.active = h('ul', { class: 'requests', 'aria-labelledby': 'h-active' });
    this.element = h('section', { class: 'view remote-view' },
      h('h1', { tabindex: '-1' }, 'Remote access'),
      this.note,
      h('section', { class: 'card' }, h('h2', { id: 'h-pending' }, 'Waiting for approval'), this.pending),
      h('section', { class: 'card' }, h('h2', { id: 'h-active' }, 'Active'), this.active));
    this.onEvent = (e) => this.list.apply(e.detail);
    this.onReload = () => this._load();
    this.onChange = () => this.render();
  }

  mount() {
    this.app.bus.addEventListener('session-event', this.onEvent);
    this.app.bus.addEventListener('reload', this.onReload);
    this.app.bus.addEventListener('tick', this.onChange);
    this.list.addEventListener('change', this.onChange);
    this._load();
  }

  destroy() {
    this.app.bus.removeEventListener('session-event', this.onEvent);
    this.app.bus.removeEventListener('reload', this.onReload);
    this.app.bus.removeEventListener('tick', this.onChange);
    this.list.removeEventListener('change', this.onChange);
  }

  _load() {
    this.list.load().catch((error) => showError(this.note, error));
  }

  _item(s) {
    const actions = allowedActions(this.app, s);
    return h('li', { class: 'request', 'data-id': s.id },
      h('div', { class: 'request-head' }, sessionLink(s), stateBadge(this.app, s)),
      h('p', { class: 'help' },
        `${s.owner} · ${words(s.attributes?.safety_mode)} mode · requested `,
        h('time', { datetime: s.created_at, title: when(s.created_at) }, `${age(s.created_at)} ago`)),
      h('div', { class: 'actions' },
        actions.length
          ? actionButtons(this.app, s, actions, this.note, (updated) => this.list.apply({
            type: 'session.state_changed', session_id: updated.id, version: updated.version, data: { session: updated },
          }))
          : h('span', { class: 'help' }, s.state === 'pending_approval' ? 'Waiting for an admin.' : '')));
  }

  render() {
    const items = this.list.items;
    const waiting = items.filter((s) => s.state === 'pending_approval');
    const running = items.filter((s) => s.state === 'active');
    show(this.pending, waiting.length ? waiting.map((s) => this._item(s)) : h('li', { class: 'help' }, 'No request is waiting.'));
    show(this.active, running.length ? running.map((s) => this._item(s)) : h('li', { class: 'help' }, 'No remote access session is active.'));
  }
}
