// The panels of the session page, by kind: what a session of that kind shows beyond the
// generic facts. A panel is `make({app, session, events})` returning `{element,
// update(session), onEvent(event, session), reload(events), destroy()}` (all but `element`
// optional): `events` is the session's event log as the page loaded it (oldest first, each
// with the session after it in `data.session`), `update` comes with every newer version of
// the session, `onEvent` with each of its publications as it arrives, `reload` after a gap
// in the stream with the log read again (read again whatever the panel fetched itself).
//
// This is the extension point for kinds to come: write a module like the ones below and
// register it here (or call registerPanel from it).

import { imagingPanel } from './imaging.js';
import { remoteAccessPanel } from './remote_access.js';
import { roomPanel } from './room.js';
import { screenSharePanel } from './screen_share.js';
import { workspacePanel } from './workspace.js';

const PANELS = new Map([
  ['remote_access', remoteAccessPanel],
  ['screen_share', screenSharePanel],
  ['workspace', workspacePanel],
  ['imaging', imagingPanel],
  ['room', roomPanel],
]);

export function registerPanel(kind, make) {
  PANELS.set(kind, make);
}

export function panelFor(kind) {
  return PANELS.get(kind) ?? null;
}
