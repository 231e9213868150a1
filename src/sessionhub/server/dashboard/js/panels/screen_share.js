// Screen share (seed 004): quality, frames, who may watch, and the live picture for anyone
// the relay admits (the owner, admins and the viewers the owner named).

import { rolesOn } from '../auth.js';
import { h, show } from '../dom.js';
import { errorNote, showError } from '../views/common.js';
import { FrameViewer } from './frames.js';

export function screenSharePanel({ app, session }) {
  let current = session;
  const note = errorNote();
  note.hidden = true;
  const facts = h('p', { class: 'help' });
  const viewers = h('ul', { class: 'viewers' });
  const viewerSlot = h('div');
  let viewer = null;
  const who = h('input', { id: 'admit-user', type: 'text', required: true, autocomplete: 'off' });
  const admit = h('form', { class: 'inline-form' },
    h('div', { class: 'field grow' }, h('label', { for: 'admit-user' }, 'Admit a viewer (user id)'), who),
    h('button', { type: 'submit' }, 'Admit'));
  const base = () => `/api/screen_share/${encodeURIComponent(current.id)}/viewers`;

  admit.addEventListener('submit', async (event) => {
    event.preventDefault();
    note.hidden = true;
    try {
      await app.api.post(base(), { user_id: who.value.trim() });
      who.value = '';
    } catch (error) {
      showError(note, error);
    }
  });

  function render() {
    const s = current;
    const roles = rolesOn(app.who, s.owner);
    const manages = s.state === 'active' && (roles.has('admin') || roles.has('owner'));
    const admitted = s.attributes?.viewers ?? [];
    facts.replaceChildren(
      `Quality ${s.attributes?.quality ?? 'medium'}${s.resolution ? ` (${s.resolution} at ${s.fps} fps)` : ''}; `,
      `${s.counters?.frames_captured ?? 0} frames counted so far. Viewers follow `,
      h('a', { href: `#/watch/${encodeURIComponent(s.id)}` }, 'this link'),
      '.',
    );
    show(viewers, admitted.length
      ? admitted.map((user) => h('li', {}, user, manages
        ? h('button', {
          type: 'button', class: 'quiet', 'aria-label': `Remove viewer ${user}`,
          onclick: async () => {
            try {
              await app.api.delete(`${base()}/${encodeURIComponent(user)}`);
            } catch (error) {
              showError(note, error);
            }
          },
        }, 'Remove') : null))
      : h('li', { class: 'help' }, 'Nobody besides the owner and admins.'));
    admit.hidden = !manages;
    if (s.state === 'active' && !viewer) {
      viewer = new FrameViewer(app, s.id);
      show(viewerSlot, viewer.element);
      viewer.start();
    } else if (s.state !== 'active' && viewer) {
      viewer.stop();
      viewer = null;
      show(viewerSlot, h('p', { class: 'help' }, 'The share has ended.'));
    } else if (s.state !== 'active') {
      show(viewerSlot, h('p', { class: 'help' }, 'The share has ended.'));
    }
  }

  const element = h('section', { class: 'card panel', 'aria-labelledby': 'h-screen' },
    h('h2', { id: 'h-screen' }, 'Screen share'),
    facts, viewerSlot, note, h('h3', {}, 'Admitted viewers'), viewers, admit);
  render();
  return {
    element,
    update(s) {
      current = s;
      render();
    },
    destroy() {
      viewer?.stop();
    },
  };
}
