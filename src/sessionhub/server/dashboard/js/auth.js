// The token of this tab: taken from the sign-in link by index.html's inline script (or here,
// should that not have run), kept in sessionStorage (this tab only, gone when it closes).

const KEY = 'sessionhub.token';

export function loadToken() {
  const query = new URLSearchParams(location.search);
  const fromUrl = query.get('token');
  if (fromUrl) {
    saveToken(fromUrl);
    query.delete('token');
    const rest = query.toString();
    history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : '') + location.hash);
  }
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return fromUrl;
  }
}

export function saveToken(token) {
  try {
    sessionStorage.setItem(KEY, token);
  } catch {
    // Storage refused (private mode): the token then lasts as long as the page.
  }
}

export function forgetToken() {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // nothing stored
  }
}

function base64url(part) {
  const b64 = part.replaceAll('-', '+').replaceAll('_', '/');
  const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) =>
    c.charCodeAt(0),
  );
  return new TextDecoder().decode(bytes);
}

/**
 * Who the token says the caller is: {sub, roles, exp, isAdmin}. Read without checking the
 * signature (only the server can): it decides what the page offers, and the server still
 * checks every request. Throws when the text is not a JWT.
 */
export function identity(token) {
  const parts = String(token).trim().split('.');
  if (parts.length !== 3) throw new Error('not a JWT: a token has three parts separated by dots');
  let claims;
  try {
    claims = JSON.parse(base64url(parts[1]));
  } catch {
    throw new Error('not a JWT: its middle part is not readable');
  }
  if (!claims || typeof claims.sub !== 'string' || !claims.sub) {
    throw new Error('the token names no user (sub)');
  }
  let roles = claims.roles ?? [];
  if (typeof roles === 'string') roles = [roles];
  roles = Array.isArray(roles) ? roles.filter((r) => typeof r === 'string' && r !== 'system') : [];
  return {
    sub: claims.sub,
    roles: new Set(roles),
    exp: typeof claims.exp === 'number' ? claims.exp : null,
    isAdmin: roles.includes('admin'),
  };
}

/** Roles the caller holds on a session owned by `owner` (as the server computes them). */
export function rolesOn(who, owner) {
  const roles = new Set(who.roles);
  if (owner === who.sub) roles.add('owner');
  return roles;
}
