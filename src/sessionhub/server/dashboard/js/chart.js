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

/** The time charts' height, and their width when the box they go in is not laid out yet. */
const TH = 190;
const TW_DEFAULT = 760;

/**
 * A value over time, in SVG, with a dot at every reading: `points` are {t (ms), v} oldest
 * first; a `v` of null breaks the line (guiding stopped, say). The x axis runs from the
 * first reading to `until` (default: the last one); the y axis from 0 to at least `floor`.
 * `label` starts the chart's text alternative; `format(v)` writes a value (with its unit).
 * `width`: the box's width in CSS pixels, so the drawing is at 1:1 (legible text on a
 * phone, not a shrunken desktop chart).
 */
export function timeChart(points, { label, format = String, floor = 1, until, className = '', width }) {
  const TW = width > 0 ? Math.max(280, Math.round(width)) : TW_DEFAULT;
  const values = points.filter((p) => typeof p.v === 'number');
  const from = points.length ? points[0].t : 0;
  let to = until ?? (points.length ? points[points.length - 1].t : 0);
  if (to <= from) to = from + 1000; // one reading: a second's width, drawn at the start
  const peak = Math.max(0, ...values.map((p) => p.v));
  const top = niceTop(Math.max(floor, peak));
  const x = (t) => PAD.left + ((t - from) / (to - from)) * (TW - PAD.left - PAD.right);
  const y = (v) => TH - PAD.bottom - (v / top) * (TH - PAD.top - PAD.bottom);
  let d = '';
  let pen = false;
  for (const p of points) {
    if (typeof p.v !== 'number') {
      pen = false;
      continue;
    }
    d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
    pen = true;
  }
  const latest = values.length ? values[values.length - 1] : null;
  const text = values.length
    ? `${label}: ${values.length} reading${values.length === 1 ? '' : 's'} from ${clock(from)} to ${clock(to)}; `
      + `latest ${format(latest.v)}, highest ${format(peak)}.`
    : `${label}: no readings yet.`;
  const ticks = [0, top / 2, top];
  return s('svg', {
    viewBox: `0 0 ${TW} ${TH}`, class: `chart ${className}`.trim(), role: 'img', 'aria-label': text,
    'data-points': String(values.length),
  },
  s('title', {}, text),
  ticks.map((v) => [
    s('line', { x1: PAD.left, x2: TW - PAD.right, y1: y(v), y2: y(v), class: 'grid-line' }),
    s('text', { x: PAD.left - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, trim(v)),
  ]),
  points.length
    ? [[from, 'start'], [to, 'end']].map(([t, anchor]) =>
      s('text', { x: x(t), y: TH - 8, class: 'axis', 'text-anchor': anchor }, clock(t)))
    : s('text', { x: TW / 2, y: TH / 2, class: 'axis', 'text-anchor': 'middle' }, 'No readings yet'),
  d ? s('path', { d, class: 'line' }) : null,
  // One dot per reading (the newest is larger): a lone reading still shows.
  values.map((p) => s('circle', {
    cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: p === latest ? 4 : 2.5,
    class: p === latest ? 'now point' : 'point',
  })));
}

/** A round number (1, 1.5, 2, 2.5 or 5 times a power of ten) at least `v`: an axis top. */
function niceTop(v) {
  const power = 10 ** Math.floor(Math.log10(v));
  return [1, 1.5, 2, 2.5, 5, 10].map((m) => m * power).find((n) => n >= v - 1e-9) ?? v;
}

function trim(v) {
  return String(Math.round(v * 100) / 100);
}

function clock(t) {
  return new Date(t).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/**
 * Keep `box` showing `draw(width)` at the box's own width: drawn now, once the box is laid
 * out, and again whenever its width changes (a phone turned, a window resized). Returns
 * {redraw(), stop()}.
 */
export function chartBox(box, draw) {
  let drawn = -1;
  const redraw = () => {
    drawn = box.clientWidth;
    box.replaceChildren(draw(drawn));
  };
  // Redrawn at the next frame, not inside the observer's callback: a new drawing changes
  // the box's height, which the observer would otherwise report again in the same frame.
  let pending = 0;
  const observer = new ResizeObserver(() => {
    cancelAnimationFrame(pending);
    pending = requestAnimationFrame(() => {
      if (Math.abs(box.clientWidth - drawn) > 1) redraw();
    });
  });
  observer.observe(box);
  redraw();
  return {
    redraw,
    stop: () => {
      observer.disconnect();
      cancelAnimationFrame(pending);
    },
  };
}
