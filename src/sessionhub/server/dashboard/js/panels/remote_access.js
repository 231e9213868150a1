// Remote access (seed 004): the safety mode, and the commands an agent runs, with their
// approval and output. Commands change the session (one `session.updated` each), so the
// list is read again whenever the stream says this session changed: never on a timer.

import { rolesOn } from '../auth.js';
import { h, show } from '../dom.js';
import { words } from '../format.js';
import { errorNote, showError } from '../views/common.js';

function commandItem(ctx, command, mayDecide) {
  const base = `/api/remote/${encodeURIComponent(ctx.session.id)}/commands/${encodeURIComponent(command.id)}`;
  const decide = (verb) => async (event) => {
    event.currentTarget.disabled = true;
    try {
      await ctx.app.api.post(`${base}/${verb}`, {});
      ctx.refresh();
    } catch (error) {
      showError(ctx.note, error);
      event.currentTarget.disabled = false;
    }
  };
  const pending = command.status === 'pending_approval';
  return h('li', { class: 'command', 'data-status': command.status, 'data-id': command.id },
    h('div', { class: 'command-head' },
      h('code', {}, command.command),
      h('span', { class: `state ${pending ? 'waiting' : command.status === 'rejected' ? 'ended' : 'active'}` }, words(command.status)),
      command.writes ? h('span', { class: 'tag' }, 'writes') : null),
    h('p', { class: 'help' },
      `submitted by ${command.submitted_by} at ${command.submitted_at}`,
      command.decided_by ? ` · decided by ${command.decided_by}` : '',
      command.exit_code !== null && command.exit_code !== undefined ? ` · exit code ${command.exit_code}` : ''),
    command.output !== null && command.output !== undefined
      ? h('pre', { class: 'output', 'aria-label': `Output of ${command.command}` }, command.output || '(no output)')
      : null,
    pending && mayDecide
      ? h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'primary', onclick: decide('approve') }, 'Approve command'),
        h('button', { type: 'button', class: 'danger', onclick: decide('reject') }, 'Reject command'))
      : null);
}

export function remoteAccessPanel({ app, session }) {
  const note = errorNote();
  note.hidden = true;
  const facts = h('p', { class: 'help' });
  const list = h('ol', { class: 'commands' });
  const input = h('input', { id: 'cmd-text', type: 'text', required: true, autocomplete: 'off', maxlength: '2000' });
  const writes = h('input', { id: 'cmd-writes', type: 'checkbox' });
  const form = h('form', { class: 'command-form' },
    h('div', { class: 'field grow' }, h('label', { for: 'cmd-text' }, 'Command'), input),
    h('div', { class: 'field check' }, writes, h('label', { for: 'cmd-writes' }, 'It changes something (writes)')),
    h('button', { type: 'submit' }, 'Submit command'));
  const ctx = { app, session, note, refresh: () => load() };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    note.hidden = true;
    try {
      await app.api.post(`/api/remote/${encodeURIComponent(ctx.session.id)}/commands`, {
        command: input.value,
        writes: writes.checked,
      });
      input.value = '';
      writes.checked = false;
      load();
    } catch (error) {
      showError(note, error);
    }
  });

  let commands = [];
  let loading = false;
  let again = false;
  // One read at a time; a change announced during a read is read once more after it, so
  // the last read always began after the last change.
  async function load() {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      const answer = await app.api.get(`/api/remote/${encodeURIComponent(ctx.session.id)}/commands`);
      commands = answer.commands;
      render();
    } catch (error) {
      showError(note, error);
    } finally {
      loading = false;
      if (again) {
        again = false;
        load();
      }
    }
  }

  function render() {
    const s = ctx.session;
    const roles = rolesOn(app.who, s.owner);
    const active = s.state === 'active';
    const mayDecide = active && (roles.has('admin') || roles.has('owner'));
    facts.textContent = [
      `Safety mode: ${words(s.attributes?.safety_mode)}.`,
      `${s.counters?.commands_executed ?? 0} commands executed.`,
      s.state === 'pending_approval' ? 'Waiting for an admin to approve this session.' : '',
    ].join(' ');
    // Pending commands first: they are what someone has to act on.
    const ordered = [...commands].sort(
      (a, b) => (b.status === 'pending_approval') - (a.status === 'pending_approval'),
    );
    show(list, ordered.length
      ? ordered.map((c) => commandItem(ctx, c, mayDecide))
      : h('li', { class: 'help' }, 'No commands yet.'));
    form.hidden = !active;
  }

  const element = h('section', { class: 'card panel', 'aria-labelledby': 'h-remote' },
    h('h2', { id: 'h-remote' }, 'Remote access'),
    facts, note, h('h3', {}, 'Commands'), list, form);
  render();
  load();
  return {
    element,
    update(s) {
      ctx.session = s;
      render();
    },
    onEvent(event) {
      if (event.type === 'session.updated' || event.type === 'session.state_changed') load();
    },
    reload: load,
  };
}
