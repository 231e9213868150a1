// Toasts: short notices in the corner (seed 001's SessionEventToast), read out by screen
// readers through the region's aria-live, dismissed after a while or by their button.

import { h } from './dom.js';

const SHOW_MS = 6000;
const MAX_SHOWN = 5;

export class Toasts {
  constructor(region) {
    this.region = region;
    this.recent = new Map(); // key -> time, to show one notice once
  }

  /** tone: 'good' | 'bad' | 'info'; key: drop a repeat of the same notice. */
  show({ title, body, tone = 'info', key, icon }) {
    const now = Date.now();
    if (key) {
      for (const [k, t] of this.recent) if (now - t > 60000) this.recent.delete(k);
      if (this.recent.has(key)) return;
      this.recent.set(key, now);
    }
    const close = h('button', { type: 'button', class: 'quiet close', 'aria-label': 'Dismiss' }, '×');
    // No role of its own: the region is the live region, so each toast is read out once.
    const toast = h(
      'div',
      { class: `toast ${tone}` },
      icon ? h('span', { class: 'toast-icon', 'aria-hidden': 'true' }, icon) : null,
      h('div', { class: 'toast-text' }, h('strong', {}, title), body ? h('p', {}, body) : null),
      close,
    );
    const remove = () => toast.remove();
    close.addEventListener('click', remove);
    setTimeout(remove, SHOW_MS);
    this.region.append(toast);
    while (this.region.children.length > MAX_SHOWN) this.region.firstElementChild.remove();
  }
}
