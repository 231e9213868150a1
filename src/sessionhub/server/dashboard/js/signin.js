// Signing in without a link: paste a token (from `sessionhub token create`). It is checked
// with the server before it is kept, so a wrong one is refused here with the server's reason.

import { Api, ApiError } from './api.js';
import { identity, saveToken } from './auth.js';
import { h, show } from './dom.js';

export function showSignIn(message) {
  const main = document.getElementById('main');
  const error = h('p', { class: 'form-error', id: 'signin-error', role: 'alert' });
  const field = h('textarea', {
    id: 'token',
    name: 'token',
    rows: '4',
    required: true,
    spellcheck: 'false',
    autocomplete: 'off',
    'aria-describedby': 'token-help signin-error',
  });
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    { class: 'card signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title', tabindex: '-1' }, 'Sign in to sessionhub'),
    message ? h('p', { class: 'notice', role: 'status' }, message) : null,
    h('label', { for: 'token' }, 'Token'),
    field,
    h(
      'p',
      { id: 'token-help', class: 'help' },
      'Open the sign-in link that ',
      h('code', {}, 'sessionhub serve'),
      ' prints, or paste a token made with ',
      h('code', {}, 'sessionhub token create --user NAME'),
      '. It is kept for this tab only.',
    ),
    error,
    submit,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const token = field.value.trim();
    try {
      identity(token);
    } catch (e) {
      error.textContent = `That is not a sessionhub token: ${e.message}.`;
      field.focus();
      return;
    }
    submit.disabled = true;
    try {
      await new Api(token).get('/api/kinds');
    } catch (e) {
      error.textContent =
        e instanceof ApiError && e.status === 401 ? `The server refused it: ${e.message}.` : e.text ?? String(e);
      submit.disabled = false;
      field.focus();
      return;
    }
    saveToken(token);
    location.reload();
  });
  document.getElementById('nav').hidden = true;
  document.getElementById('conn').hidden = true;
  show(main, form);
  field.focus();
}
