// A screen share's live picture: the frames the relay sends on WebSocket /stream/{id}
// (seed 004), drawn into an <img> as they come. Only the newest frame matters (the relay
// skips frames for a slow viewer), so each replaces the last.

import { h } from '../dom.js';

/** Close codes after which reconnecting cannot help (relay/frames.py). */
const FINAL = new Map([
  [1000, 'The share has ended.'],
  [4000, 'Another connection took over.'],
  [4400, 'The request was refused as malformed.'],
  [4401, 'The server refused the token.'],
  [4403, 'You are not admitted to this share.'],
  [4404, 'There is no such screen share.'],
  [4409, 'The share is not active.'],
]);

export class FrameViewer {
  constructor(app, sessionId) {
    this.app = app;
    this.sessionId = sessionId;
    this.image = h('img', { class: 'frame', alt: `Live screen of share ${sessionId}`, hidden: true });
    this.status = h('p', { class: 'help', role: 'status' }, 'Connecting to the stream…');
    this.element = h('figure', { class: 'viewer' }, this.image, h('figcaption', {}, this.status));
    this.frames = 0;
    this.url = null;
    this.socket = null;
    this.retry = null;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = new URLSearchParams({ role: 'viewer', token: this.app.token });
    const socket = new WebSocket(`${scheme}//${location.host}/stream/${encodeURIComponent(this.sessionId)}?${query}`);
    socket.binaryType = 'blob';
    this.socket = socket;
    socket.addEventListener('message', (event) => {
      if (typeof event.data === 'string') {
        const info = JSON.parse(event.data);
        if (info.type === 'ready') {
          this.status.textContent = `Watching: ${info.quality} quality, ${info.width}×${info.height} at up to ${info.fps} fps. Waiting for a frame…`;
        }
        return;
      }
      this._frame(event.data);
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      const final = FINAL.get(event.code);
      if (final || this.stopped) {
        this.status.textContent = final ?? 'Stopped.';
        return;
      }
      this.status.textContent = 'The stream broke off; reconnecting…';
      this.retry = setTimeout(() => this.start(), 2000);
    });
  }

  _frame(blob) {
    this.frames += 1;
    // The previous frame's URL can go as soon as the next one is set: the <img> moves on.
    const previous = this.url;
    this.url = URL.createObjectURL(blob);
    this.image.src = this.url;
    if (previous) URL.revokeObjectURL(previous);
    this.image.hidden = false;
    this.image.dataset.frames = String(this.frames);
    this.status.textContent = `Live: ${this.frames} frame${this.frames === 1 ? '' : 's'} received.`;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000);
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
  }
}
