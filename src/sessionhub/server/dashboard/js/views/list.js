// All sessions the caller may see, of every kind, newest first, with filters and pages.
// The list is the app's live model (app.list): this view only draws it.

import { h, show } from '../dom.js';
import { age, when, words } from '../format.js';
import { errorNote, sessionLink, showError, stateBadge } from './common.js';

const TEXT_DELAY_MS = 300;

export class ListView {
  constructor(app) {
    this.app = app;
    this.list = app.list;
    this.note = errorNote();
    this.note.hidden = true;
    this.body = h('tbody');
    this.summary = h('p', { class: 'summary' });
    this.more = h('button', { type: 'button', onclick: () => this._more() }, 'Load older sessions');
    this.table = h(
      'table',
      { class: 'sessions', 'aria-busy': 'false' },
      h('caption', { class: 'visually-hidden' }, 'Sessions, newest first'),
      h(
        'thead',
        {},
        h('tr', {}, ...['Id', 'Kind', 'Owner', 'State', 'Age'].map((c) => h('th', { scope: 'col' }, c))),
      ),
      this.body,
    );
    this.element = h(
      'section',
      { class: 'view list-view' },
      h('h1', { tabindex: '-1' }, 'Sessions'),
      this._filters(),
      this.note,
      this.summary,
      this.table,
      h('p', { class: 'pager' }, this.more),
    );
    this.onChange = () => this.render();
    this.onTick = () => this.render();
    // While a snapshot loads the table says so (and tests can wait for it to settle).
    this.onLoading = () => this.table.setAttribute('aria-busy', 'true');
  }

  mount() {
    this.list.addEventListener('loading', this.onLoading);
    this.list.addEventListener('change', this.onChange);
    this.app.bus.addEventListener('tick', this.onTick);
    this.render();
  }

  destroy() {
    this.list.removeEventListener('loading', this.onLoading);
    this.list.removeEventListener('change', this.onChange);
    this.app.bus.removeEventListener('tick', this.onTick);
  }

  _filters() {
    const f = this.list.filters;
    const kinds = [...this.app.kinds.values()];
    const kind = h('select', { id: 'f-kind', name: 'kind' }, h('option', { value: '' }, 'All kinds'),
      kinds.map((k) => h('option', { value: k.name, selected: f.kind === k.name }, words(k.name))));
    const state = h('select', { id: 'f-state', name: 'state' });
    const fillStates = () => {
      const chosen = kind.value ? [this.app.kinds.get(kind.value)] : kinds;
      const states = [...new Set(chosen.flatMap((k) => k.states))];
      show(state, h('option', { value: '' }, 'All states'),
        states.map((s) => h('option', { value: s, selected: f.state === s }, words(s))));
      if (!states.includes(f.state)) state.value = '';
    };
    fillStates();
    const owner = h('input', { id: 'f-owner', name: 'owner', type: 'text', value: f.owner, autocomplete: 'off' });
    const text = h('input', { id: 'f-text', name: 'text', type: 'search', value: f.text, autocomplete: 'off' });
    const apply = () => {
      this.list.filters = {
        kind: kind.value,
        state: state.value,
        owner: this.app.who.isAdmin ? owner.value.trim() : '',
        text: text.value.trim(),
      };
      this.note.hidden = true;
      this.list.load().catch((error) => showError(this.note, error));
    };
    kind.addEventListener('change', () => {
      fillStates();
      apply();
    });
    state.addEventListener('change', apply);
    let timer = null;
    const now = () => {
      clearTimeout(timer);
      apply();
    };
    const later = () => {
      clearTimeout(timer);
      timer = setTimeout(apply, TEXT_DELAY_MS);
    };
    owner.addEventListener('input', later);
    text.addEventListener('input', later);
    const field = (id, label, input) => h('div', { class: 'field' }, h('label', { for: id }, label), input);
    return h(
      'form',
      { class: 'filters', role: 'search', 'aria-label': 'Filter sessions', onsubmit: (e) => { e.preventDefault(); now(); } },
      field('f-kind', 'Kind', kind),
      field('f-state', 'State', state),
      this.app.who.isAdmin ? field('f-owner', 'Owner', owner) : null,
      field('f-text', 'Search', text),
      // Enter in a field submits only through a submit button; filters also apply as you type.
      h('button', { type: 'submit' }, 'Apply'),
    );
  }

  async _more() {
    this.more.disabled = true;
    try {
      await this.list.more();
    } catch (error) {
      showError(this.note, error);
    } finally {
      this.more.disabled = false;
    }
  }

  render() {
    this.table.setAttribute('aria-busy', String(this.list.loading > 0));
    const now = Date.now();
    const items = this.list.items;
    show(
      this.body,
      items.map((s) =>
        h(
          'tr',
          { 'data-id': s.id, 'data-state': s.state },
          h('td', { 'data-label': 'Id' }, sessionLink(s)),
          h('td', { 'data-label': 'Kind' }, words(s.kind)),
          h('td', { 'data-label': 'Owner' }, s.owner),
          h('td', { 'data-label': 'State' }, stateBadge(this.app, s)),
          h('td', { 'data-label': 'Age' }, h('time', { datetime: s.created_at, title: when(s.created_at) }, age(s.created_at, now))),
        ),
      ),
    );
    if (!items.length) {
      show(this.body, h('tr', {}, h('td', { colspan: '5', class: 'empty' },
        this.list.error ? 'The sessions could not be loaded.' : 'No sessions match these filters.')));
    }
    const more = Boolean(this.list.nextCursor);
    this.more.hidden = !more;
    this.summary.textContent = `${items.length} session${items.length === 1 ? '' : 's'} shown${more ? ', older ones on the next page' : ''}.`;
  }
}
