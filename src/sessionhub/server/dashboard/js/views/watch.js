// Watching a screen share one was admitted to: viewers may not read someone else's session,
// but the relay lets them see its frames.

import { h } from '../dom.js';
import { FrameViewer } from '../panels/frames.js';

export class WatchView {
  constructor(app, id) {
    this.viewer = new FrameViewer(app, id);
    this.element = h('section', { class: 'view watch-view' },
      h('h1', { tabindex: '-1' }, 'Screen share ', h('span', { class: 'mono' }, id)),
      h('section', { class: 'card' }, this.viewer.element));
  }

  mount() {
    this.viewer.start();
  }

  destroy() {
    this.viewer.stop();
  }
}
