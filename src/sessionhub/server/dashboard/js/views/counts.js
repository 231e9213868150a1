// Live counts (seed 001, KATO): the numbers and the active sessions over the last hour,
// moved by the stream's events as they happen.

import { activeChart } from '../chart.js';
import { h, show } from '../dom.js';
import { words } from '../format.js';

export class CountsView {
  constructor(app) {
    this.app = app;
    this.counts = app.counts;
    this.numbers = h('div', { class: 'numbers' });
    this.kinds = h('tbody');
    this.chart = h('div', { class: 'chart-box' });
    this.element = h('section', { class: 'view counts-view' },
      h('h1', { tabindex: '-1' }, 'Live counts'),
      this.numbers,
      h('section', { class: 'card', 'aria-labelledby': 'h-chart' },
        h('h2', { id: 'h-chart' }, 'Active sessions, last hour'),
        this.chart,
        h('p', { class: 'help' }, 'Drawn from the live stream since this page opened.')),
      h('section', { class: 'card', 'aria-labelledby': 'h-kinds' },
        h('h2', { id: 'h-kinds' }, 'By kind'),
        h('table', { class: 'by-kind' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Kind'), h('th', { scope: 'col' }, 'Active'), h('th', { scope: 'col' }, 'All'))),
          this.kinds)));
    this.onChange = () => this.render();
  }

  mount() {
    this.counts.addEventListener('change', this.onChange);
    this.app.bus.addEventListener('tick', this.onChange);
    this.render();
  }

  destroy() {
    this.counts.removeEventListener('change', this.onChange);
    this.app.bus.removeEventListener('tick', this.onChange);
  }

  render() {
    const c = this.counts;
    const number = (label, value, id) =>
      h('div', { class: 'number card', id }, h('span', { class: 'value' }, String(value)), h('span', { class: 'label' }, label));
    show(this.numbers,
      number('active sessions', c.active, 'n-active'),
      number('sessions in all', c.total, 'n-total'),
      number('created in the last hour', c.lastHour(c.created), 'n-created'),
      number('ended in the last hour', c.lastHour(c.endedAt), 'n-ended'),
      number('events per minute', c.perMinute(), 'n-rate'));
    show(this.kinds, [...c.byKind.entries()].map(([kind, n]) =>
      h('tr', {}, h('th', { scope: 'row' }, words(kind)), h('td', {}, String(n.active)), h('td', {}, String(n.count)))));
    show(this.chart, activeChart(c.samples));
  }
}
