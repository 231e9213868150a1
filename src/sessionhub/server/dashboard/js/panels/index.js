// The panels of the session page, by kind: what a session of that kind shows beyond the
// generic facts. A panel is `make({app, session})` returning `{element, update(session),
// onEvent(event, session), reload(), destroy()}` (all but `element` optional): `update` with
// every newer version of the session, `onEvent` with each of its publications, `reload`
// after a gap in the stream (read again whatever the panel fetched itself).
//
// This is the extension point for kinds to come (imaging, rooms): write a module like the
// ones below and register it here (or call registerPanel from it).

import { remoteAccessPanel } from './remote_access.js';
import { screenSharePanel } from './screen_share.js';
import { workspacePanel } from './workspace.js';

const PANELS = new Map([
  ['remote_access', remoteAccessPanel],
  ['screen_share', screenSharePanel],
  ['workspace', workspacePanel],
]);

export function registerPanel(kind, make) {
  PANELS.set(kind, make);
}

export function panelFor(kind) {
  return PANELS.get(kind) ?? null;
}
