// Rooms (seed 003): one multiplayer room per slug. The relay writes the room's session in
// batches (every couple of seconds while anything happens): `players` and `handles` as
// presence on room:<slug> last said, and the `messages` counter it relayed. Messages per
// second are the counter's deltas between those versions, over their server times: from
// the event log the page loaded, then every publication as it comes. Nothing is read on a
// timer; a local clock only lets the figure fall to zero when the writes stop (a quiet room
// is not written to).

import { chartBox, timeChart } from '../chart.js';
import { h, show } from '../dom.js';
import { time } from '../format.js';

/** The rate is the counter's growth over about this long, ms. */
const WINDOW_MS = 10000;
/** The chart shows this much of the past, ms. */
const CHART_MS = 5 * 60 * 1000;
const MAX_SAMPLES = 400;

/** The `messages` counter a version of the room carries: {t, m}. */
export function sample(session) {
  const t = Date.parse(session?.updated_at ?? '');
  const m = session?.counters?.messages;
  return Number.isNaN(t) || typeof m !== 'number' ? null : { t, m };
}

/** Add `p` to `samples` (oldest first) unless a sample of that moment is there. */
export function addSample(samples, p) {
  if (!p) return false;
  let i = samples.length;
  while (i > 0 && samples[i - 1].t > p.t) i -= 1;
  if (samples[i - 1]?.t === p.t) return false;
  samples.splice(i, 0, p);
  if (samples.length > MAX_SAMPLES) samples.splice(0, samples.length - MAX_SAMPLES);
  return true;
}

/** Messages per second now ({rate, quiet}), given the server's clock `now` (ms). */
export function currentRate(samples, now) {
  const n = samples.length;
  if (n < 2) return { rate: null, quiet: false };
  const newest = samples[n - 1];
  // Writes come every flush while anything happens: several missed means nothing did.
  const gaps = samples.slice(-6).map((p, i, a) => (i ? p.t - a[i - 1].t : null)).filter((g) => g > 0).sort((a, b) => a - b);
  const usual = gaps.length ? gaps[Math.floor(gaps.length / 2)] : 2000;
  if (now - newest.t > Math.max(6000, 3 * usual)) return { rate: 0, quiet: true };
  let o = n - 2;
  while (o > 0 && newest.t - samples[o - 1].t <= WINDOW_MS) o -= 1;
  const old = samples[o];
  const rate = Math.max(0, newest.m - old.m) / ((newest.t - old.t) / 1000);
  return { rate, quiet: false };
}

/** The rate between each sample and the one before it, for the chart. */
function rates(samples, since) {
  const out = [];
  for (let i = 1; i < samples.length; i += 1) {
    const [a, b] = [samples[i - 1], samples[i]];
    if (b.t < since || b.t <= a.t) continue;
    out.push({ t: b.t, v: Math.max(0, b.m - a.m) / ((b.t - a.t) / 1000) });
  }
  return out;
}

const perSecond = (v) => (v >= 10 ? String(Math.round(v)) : v.toFixed(1));

export function roomPanel({ app, session, events = [] }) {
  let current = session;
  const samples = [];
  // The browser's clock minus the server's (at least the delivery time): the smallest gap
  // seen between a publication's server time and its arrival.
  let skew = null;
  const facts = h('dl', { class: 'facts' });
  const players = h('ul', { id: 'room-players', class: 'players', 'aria-label': 'Players present' });
  const playersNote = h('p', { class: 'help' });
  const rate = h('p', { class: 'number rate' });
  const chart = h('div', { id: 'room-rate-chart', class: 'chart-box' });
  const join = h('dl', { class: 'facts join' });
  const block = (id, title, ...content) =>
    h('section', { class: 'block', 'aria-labelledby': id }, h('h3', { id }, title), ...content);

  function seed(log) {
    for (const e of log || []) addSample(samples, sample(e.data?.session));
    addSample(samples, sample(current));
  }

  const serverNow = () => Date.now() - (skew ?? 0);

  function renderRate() {
    const { rate: r, quiet } = currentRate(samples, serverNow());
    const newest = samples[samples.length - 1];
    const ended = current.state !== 'active';
    show(rate,
      h('span', { class: 'value', id: 'room-rate', 'data-rate': r === null ? '' : String(r) },
        r === null || ended ? '—' : perSecond(r)),
      h('span', { class: 'label' }, 'messages per second'),
      h('span', { class: 'help' }, ended
        ? 'The room has ended.'
        : r === null
          ? 'Measuring: the rate shows after the relay’s next write of the counts.'
          : quiet
            ? `Quiet: no messages since ${time(newest.t)}.`
            : `Over the last ${Math.round(WINDOW_MS / 1000)} s; ${current.counters?.messages ?? 0} messages in all.`));
  }

  let box = null;
  const renderChart = () => box?.redraw();
  function drawChart(width) {
    const newest = samples[samples.length - 1];
    const points = newest ? rates(samples, newest.t - CHART_MS) : [];
    return timeChart(points, {
      label: 'Messages per second', format: (v) => `${perSecond(v)}/s`, floor: 1, className: 'rate', width,
    });
  }

  function render() {
    const s = current;
    const a = s.attributes || {};
    const c = s.counters || {};
    const slug = a.slug ?? s.slug ?? '';
    const count = a.players ?? 0;
    const handles = a.handles ?? [];
    show(facts,
      h('dt', {}, 'Slug'), h('dd', {}, h('code', { id: 'room-slug' }, slug)),
      h('dt', {}, 'Players'), h('dd', { id: 'room-count' }, `${count} now, at most ${Math.max(a.peak_players ?? 0, count)}`),
      h('dt', {}, 'Joins'), h('dd', {}, String(c.joins ?? 0)),
      h('dt', {}, 'Messages'), h('dd', {}, String(c.messages ?? 0)),
      h('dt', {}, 'Over the rate limit'), h('dd', {}, String(c.dropped ?? 0)),
      h('dt', {}, 'Generation'), h('dd', {}, String(a.generation ?? 0)));
    show(players, handles.length
      ? handles.map((name) => h('li', { 'data-handle': name },
        /^\d+$/.test(name) ? [`player ${name} `, h('span', { class: 'help' }, '(no handle)')] : name))
      : h('li', { class: 'help' }, count ? 'Nobody has said who they are.' : 'Nobody is here.'));
    playersNote.textContent = count > handles.length
      ? `${count} present; ${count - handles.length} more than the names listed.`
      : `${count} present, as the room's presence says.`;
    const origin = location.origin;
    const lookup = `${origin}/session/${encodeURIComponent(slug)}`;
    const path = s.socket_path ?? `/room/${encodeURIComponent(slug)}`;
    const socket = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${path}`;
    show(join,
      h('dt', {}, 'Look up'), h('dd', {}, h('a', { href: lookup, id: 'room-lookup' }, lookup)),
      h('dt', {}, 'Socket'), h('dd', {}, h('code', { id: 'room-socket' }, socket)),
      h('dt', {}, 'Presence'), h('dd', {}, h('code', {}, `room:${slug}`)));
    renderRate();
  }

  const element = h('section', { class: 'card panel room-panel', 'aria-labelledby': 'h-room' },
    h('h2', { id: 'h-room' }, 'Room'),
    h('div', { class: 'panel-grid' },
      block('h-room-players', 'Players present', players, playersNote),
      block('h-room-traffic', 'Traffic', rate, facts)),
    block('h-room-chart', 'Messages per second, last 5 minutes', chart),
    block('h-room-join', 'How to join', join,
      h('p', { class: 'help' },
        'An Aesthetic Computer client looks the slug up and opens the socket it is given; any client speaking its protocol may open the socket directly.')));

  seed(events);
  render();
  box = chartBox(chart, drawChart);
  // Only the page's clock: lets the figure fall to zero once the relay stops writing.
  const clock = setInterval(renderRate, 2000);
  return {
    element,
    update(s) {
      current = s;
      if (addSample(samples, sample(s))) renderChart();
      render();
    },
    onEvent(event) {
      // A publication as it arrives (not a replay the page loaded): its server time.
      const p = sample(event.data?.session);
      if (!p) return;
      const gap = Date.now() - p.t;
      skew = skew === null ? gap : Math.min(skew, gap);
      renderRate();
    },
    reload(log) {
      seed(log);
      render();
      renderChart();
    },
    destroy() {
      clearInterval(clock);
      box.stop();
    },
  };
}
