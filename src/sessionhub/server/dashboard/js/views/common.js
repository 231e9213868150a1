// Pieces several views share: state badges, session links, action buttons, error notes.

import { ApiError } from '../api.js';
import { rolesOn } from '../auth.js';
import { h } from '../dom.js';
import { words } from '../format.js';

/** The state as a badge: the word is always there, the colour only repeats it. */
export function stateBadge(app, session) {
  const ended = app.kinds.get(session.kind)?.ended.includes(session.state);
  const tone = ended ? 'ended' : session.state === 'active' ? 'active' : 'waiting';
  return h('span', { class: `state ${tone}` }, words(session.state));
}

export function sessionLink(session) {
  return h('a', { href: `#/session/${encodeURIComponent(session.id)}`, class: 'mono' }, session.id);
}

/**
 * The actions of the session's kind this caller may take from its current state: the same
 * rule as the server's (a transition from this state whose roles include one of the
 * caller's, counting "owner" on their own sessions), so no button is offered to be refused.
 */
export function allowedActions(app, session) {
  const kind = app.kinds.get(session.kind);
  if (!kind) return [];
  const roles = rolesOn(app.who, session.owner);
  return kind.actions.filter(
    (a) => a.from.includes(session.state) && a.roles.some((r) => r !== 'system' && roles.has(r)),
  );
}

const LABELS = { approve: 'Approve', deny: 'Deny', end: 'End', stop: 'Stop', drop: 'Drop' };

export function actionLabel(name) {
  return LABELS[name] ?? words(name).replace(/^./, (c) => c.toUpperCase());
}

/**
 * Buttons for `actions` on `session`. A click posts the action; the answer (the session
 * after it) goes to `onDone`, a refusal (409, 403, ...) to `note` in the server's words.
 */
export function actionButtons(app, session, actions, note, onDone) {
  return actions.map((action) =>
    h(
      'button',
      {
        type: 'button',
        class: action.name === 'approve' ? 'primary' : ['deny', 'drop', 'end', 'stop'].includes(action.name) ? 'danger' : '',
        'data-action': action.name,
        'aria-label': `${actionLabel(action.name)} ${session.id}`,
        onclick: async (event) => {
          const button = event.currentTarget;
          button.disabled = true;
          note.textContent = '';
          try {
            const updated = await app.api.post(
              `/api/sessions/${encodeURIComponent(session.id)}/actions/${encodeURIComponent(action.name)}`,
              {},
            );
            onDone?.(updated);
          } catch (error) {
            showError(note, error);
          } finally {
            button.disabled = false;
          }
        },
      },
      actionLabel(action.name),
    ),
  );
}

/** Put a refusal where the user looks: "409 Illegal transition: ...". */
export function showError(note, error) {
  note.textContent = error instanceof ApiError ? error.text : String(error);
  note.hidden = false;
}

export function errorNote() {
  return h('p', { class: 'form-error', role: 'alert' });
}
