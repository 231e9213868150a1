// Workspace (seed 002): its name, the linked mission, and the chat history. Chat messages
// are not session events (nothing publishes them), so the history is read when the page
// opens and on request, and the panel says so rather than pretend it is live.

import { h, show } from '../dom.js';
import { time, when } from '../format.js';
import { errorNote, showError } from '../views/common.js';

const PER_PAGE = 100;

export function workspacePanel({ app, session }) {
  let current = session;
  const note = errorNote();
  note.hidden = true;
  const facts = h('dl', { class: 'facts' });
  const chat = h('ol', { class: 'chat', 'aria-label': 'Chat history' });
  const count = h('p', { class: 'help' });
  const reload = h('button', { type: 'button', class: 'quiet', onclick: () => load() }, 'Reload chat');

  async function load() {
    note.hidden = true;
    const path = `/api/sessions/${encodeURIComponent(current.id)}/messages`;
    try {
      let page = await app.api.get(path, { page: 1, per_page: PER_PAGE });
      const last = Math.max(1, Math.ceil(page.total / PER_PAGE));
      if (last > 1) page = await app.api.get(path, { page: last, per_page: PER_PAGE });
      show(chat, page.messages.length
        ? page.messages.map((m) => h('li', { class: `message ${m.role}` },
          h('span', { class: 'role' }, m.role),
          h('p', {}, m.content),
          h('time', { datetime: m.created_at, title: when(m.created_at) }, time(m.created_at))))
        : h('li', { class: 'help' }, 'No messages yet.'));
      count.textContent = page.total > page.messages.length
        ? `The last ${page.messages.length} of ${page.total} messages. New messages show when you reload the chat.`
        : `${page.total} message${page.total === 1 ? '' : 's'}. New messages show when you reload the chat.`;
    } catch (error) {
      showError(note, error);
    }
  }

  function render() {
    const a = current.attributes || {};
    const mission = a.mission_id ?? current.mission_id;
    show(facts,
      h('dt', {}, 'Name'), h('dd', {}, a.name || current.name || 'Session'),
      h('dt', {}, 'Linked mission'), h('dd', {}, mission ? h('code', {}, mission) : 'none'),
      h('dt', {}, 'Assets'), h('dd', {}, String((a.assets ?? []).length)));
  }

  const element = h('section', { class: 'card panel', 'aria-labelledby': 'h-workspace' },
    h('h2', { id: 'h-workspace' }, 'Workspace'),
    facts, h('h3', {}, 'Chat'), count, chat, note, reload);
  render();
  load();
  return {
    element,
    update(s) {
      current = s;
      render();
    },
    reload: load,
  };
}
