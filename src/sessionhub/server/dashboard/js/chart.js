// A step chart of active sessions over the last hour, in SVG: samples are taken at every
// change the stream reports, so the line is exact from the moment the page opened.

import { s } from './dom.js';

const W = 640;
const H = 200;
const PAD = { left: 36, right: 12, top: 12, bottom: 28 };
const HOUR_MS = 3600 * 1000;

export function activeChart(samples, now = Date.now()) {
  const start = now - HOUR_MS;
  const points = samples.filter((p, i) => p.t >= start || samples[i + 1]?.t >= start);
  const top = Math.max(1, ...points.map((p) => p.active));
  const x = (t) => PAD.left + ((Math.max(t, start) - start) / HOUR_MS) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  let d = '';
  points.forEach((p, i) => {
    d += i === 0 ? `M${x(p.t)},${y(p.active)}` : `H${x(p.t)}V${y(p.active)}`;
  });
  if (points.length) d += `H${x(now)}`;
  const latest = points.length ? points[points.length - 1].active : 0;
  const label = `Active sessions over the last hour: ${latest} now, at most ${Math.max(0, ...points.map((p) => p.active))}.`;
  const ticks = [0, Math.round(top / 2), top].filter((v, i, a) => a.indexOf(v) === i);
  return s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': label },
    s('title', {}, label),
    ticks.map((v) => [
      s('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid-line' }),
      s('text', { x: PAD.left - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, String(v)),
    ]),
    [[start, '−60 min'], [start + HOUR_MS / 2, '−30 min'], [now, 'now']].map(([t, text], i) =>
      s('text', { x: x(t), y: H - 8, class: 'axis', 'text-anchor': ['start', 'middle', 'end'][i] }, text)),
    d ? s('path', { d, class: 'line' }) : null,
    // The present value, visible even before the line has any length.
    points.length ? s('circle', { cx: x(now), cy: y(latest), r: 4, class: 'now' }) : null);
}
