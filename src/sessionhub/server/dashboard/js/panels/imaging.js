// Imaging (seed 000): one night of a NINA rig. The connector keeps the night's unified state
// in the session's attributes (the same object GET /api/nina/session-state?rig= answers), so
// everything here follows the session's publications like the rest of the page: no reads of
// its own, no timer (the page's 10 s tick only ages the "since" times). The guiding RMS
// chart is made of the readings the night's versions carried: those in the event log the
// page loaded, then every publication as it comes.

import { chartBox, timeChart } from '../chart.js';
import { h, show } from '../dom.js';
import { age, duration, time, when, words } from '../format.js';

/** Readings the chart keeps: the newest (a night guided for hours has thousands). */
const MAX_READINGS = 720;

const ACTIVITY = {
  imaging: 'Imaging',
  flats: 'Taking flats',
  darks: 'Taking darks',
  paused_unsafe: 'Paused: unsafe',
  waiting: 'Waiting',
  idle: 'Idle',
};
const TONE = {
  imaging: 'active', flats: 'active', darks: 'active', paused_unsafe: 'bad', waiting: 'waiting', idle: 'ended',
};

const number = (v) => typeof v === 'number' && Number.isFinite(v);
const arcsec = (v) => `${v.toFixed(2)}″`;
const celsius = (v) => `${v.toFixed(1).replace('-', '−')} °C`;
const seconds = (v) => `${Math.round(v * 10) / 10} s`;

/** The guiding reading a version of the night carries: {t, v} (v null: not guiding). */
export function reading(session) {
  const a = session?.attributes;
  if (!a?.guiding_timestamp) return null;
  const t = Date.parse(a.guiding_timestamp);
  if (Number.isNaN(t)) return null;
  return { t, v: a.is_guiding !== false && number(a.guiding_rms) ? a.guiding_rms : null };
}

/** Add `r` to `readings` (oldest first) unless it is already there; true if it changed. */
export function addReading(readings, r) {
  if (!r) return false;
  let i = readings.length;
  while (i > 0 && readings[i - 1].t > r.t) i -= 1;
  const before = readings[i - 1];
  if (before && before.t === r.t) {
    if (before.v === r.v) return false;
    readings[i - 1] = r; // the same moment, a later word on it
  } else {
    readings.splice(i, 0, r);
  }
  if (readings.length > MAX_READINGS) readings.splice(0, readings.length - MAX_READINGS);
  return true;
}

function eventDetail(e) {
  const rest = (keys) => keys.filter(([, v]) => v !== null && v !== undefined && v !== '');
  switch (e.eventType) {
    case 'IMAGE-SAVE':
      return rest([
        ['', e.ImageType],
        ['filter', e.FilterName],
        ['', number(e.ExposureTime) ? seconds(e.ExposureTime) : null],
        ['HFR', number(e.HFR) ? e.HFR.toFixed(2) : null],
        ['', e.TargetName],
      ]).map(([k, v]) => (k ? `${k} ${v}` : String(v))).join(' · ');
    case 'FILTERWHEEL-CHANGED':
      return `${e.PreviousFilterName ?? '?'} → ${e.FilterName ?? '?'}`;
    default:
      // NINA's fields come in no particular order: alphabetical, so a line reads the same twice.
      return rest(Object.entries(e).filter(([k]) => k !== 'eventType' && k !== 'timestamp').sort(([a], [b]) => (a < b ? -1 : 1)))
        .slice(0, 4)
        .map(([k, v]) => `${k} ${v}`)
        .join(' · ');
  }
}

function countTable(id, caption, head, counts) {
  // In the order the night first used them (L, R, G, B; LIGHT, FLAT, DARK): rows stay put.
  const rows = Object.entries(counts || {});
  return h('table', { class: 'mini' },
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, head), h('th', { scope: 'col', class: 'num' }, 'Frames'))),
    h('tbody', { id },
      rows.length
        ? rows.map(([name, n]) => h('tr', { 'data-name': name },
          h('th', { scope: 'row' }, name), h('td', { class: 'num' }, String(n))))
        : h('tr', {}, h('td', { colspan: '2', class: 'help' }, 'None yet.'))));
}

function fact(term, value, id) {
  return [h('dt', {}, term), h('dd', id ? { id } : {}, value === null || value === undefined || value === '' ? '—' : value)];
}

export function imagingPanel({ app, session, events = [] }) {
  let current = session;
  const readings = [];
  const intro = h('p', { class: 'help' });
  const target = h('dl', { class: 'facts' });
  const status = h('div');
  const camera = h('dl', { class: 'facts' });
  const images = h('div');
  const guiding = h('p', { id: 'img-guiding' });
  const chart = h('div', { id: 'img-rms-chart', class: 'chart-box' });
  const recent = h('ol', { id: 'img-events', class: 'nina-events', 'aria-label': 'Last 20 events, newest first' });
  const block = (id, title, ...content) =>
    h('section', { class: 'block', 'aria-labelledby': id }, h('h3', { id }, title), ...content);

  function seed(log) {
    for (const e of log || []) addReading(readings, reading(e.data?.session));
    addReading(readings, reading(current));
  }

  let box = null;
  const drawChart = () => box?.redraw();

  function render() {
    const s = current;
    const a = s.attributes || {};
    const coords = a.target_coordinates || {};
    const activity = a.activity || { state: 'idle' };
    const ended = s.state !== 'active';
    show(intro,
      `Rig ${a.rig ?? s.owner}${a.night ? `, the night of ${a.night}` : ''}. `,
      ended
        ? `The night finished ${s.ended_at ? `at ${time(s.ended_at)} ` : ''}(${words(s.end_reason ?? s.state)}). `
        : 'Live from the rig. ',
      'The same state as JSON: ',
      h('code', {}, `GET /api/nina/session-state?rig=${encodeURIComponent(a.rig ?? s.owner)}`), '.');
    show(target,
      fact('Name', a.target_name, 'img-target'),
      fact('Project', a.project_name),
      fact('RA', coords.ra, 'img-ra'),
      fact('Dec', coords.dec, 'img-dec'),
      fact('Until', a.target_end_time ? when(a.target_end_time) : null));
    const since = activity.since;
    const safe = a.is_safe === true ? 'Safe' : a.is_safe === false ? 'Unsafe' : 'Unknown';
    show(status,
      h('p', { class: 'big-state' },
        h('span', { id: 'img-activity', class: `state ${TONE[activity.state] ?? 'waiting'}`, 'data-state': activity.state },
          ACTIVITY[activity.state] ?? words(activity.state)),
        since ? h('span', { class: 'help' }, ` since ${time(since)} (${age(since)})`) : null),
      activity.previous ? h('p', { class: 'help' }, `Before that: ${(ACTIVITY[activity.previous] ?? words(activity.previous)).toLowerCase()}.`) : null,
      h('p', {},
        h('strong', {}, 'Safety: '),
        h('span', { id: 'img-safety', class: `state ${a.is_safe === true ? 'active' : a.is_safe === false ? 'bad' : 'ended'}` }, safe),
        a.safety_timestamp ? h('span', { class: 'help' }, ` since ${time(a.safety_timestamp)}`) : null));
    const af = a.autofocus;
    show(camera,
      fact('Filter', a.current_filter, 'img-filter'),
      fact('Temperature', number(a.camera_temperature) ? celsius(a.camera_temperature) : null, 'img-temp'),
      fact('Last exposure', number(a.exposure_time) ? seconds(a.exposure_time) : null),
      fact('Autofocus', af?.state
        ? `${words(af.state)}${number(af.last_hfr) ? `, HFR ${af.last_hfr.toFixed(2)}` : ''}${af.points ? `, ${af.points} points` : ''}`
        : null),
      fact('Mount', a.mount_state ? words(a.mount_state) : null));
    const total = a.total_exposure_time || 0;
    show(images,
      h('p', { class: 'totals' },
        h('span', { class: 'value', id: 'img-total' }, String(a.total_images || 0)),
        ' light frames, ',
        h('span', { class: 'value', id: 'img-exposure', title: `${Math.round(total)} s` }, duration(total)),
        ' of exposure'),
      h('div', { class: 'tables' },
        countTable('img-per-filter', 'Light frames per filter', 'Filter', a.images_per_filter),
        countTable('img-per-type', 'Every frame by type', 'Type', a.images_by_type)));
    const rms = a.is_guiding && number(a.guiding_rms) ? ` · total RMS ${arcsec(a.guiding_rms)}` : '';
    show(guiding,
      h('span', { class: `state ${a.is_guiding ? 'active' : 'ended'}` }, a.guiding_state ?? (a.is_guiding ? 'Guiding' : 'Not guiding')),
      rms,
      a.guiding_timestamp ? h('span', { class: 'help' }, ` (at ${time(a.guiding_timestamp)})`) : null);
    const list = [...(a.recent_events || [])].reverse();
    show(recent, list.length
      ? list.map((e) => h('li', { 'data-type': e.eventType },
        h('time', { datetime: e.timestamp, title: when(e.timestamp) }, time(e.timestamp)),
        h('span', { class: 'event-type' }, e.eventType),
        h('span', { class: 'event-text' }, eventDetail(e))))
      : h('li', { class: 'help' }, 'No events yet.'));
  }

  const element = h('section', { class: 'card panel imaging-panel', 'aria-labelledby': 'h-imaging' },
    h('h2', { id: 'h-imaging' }, 'Imaging night'),
    intro,
    h('div', { class: 'panel-grid' },
      block('h-img-target', 'Target', target),
      block('h-img-status', 'Activity', status),
      block('h-img-camera', 'Camera', camera),
      block('h-img-images', 'Images', images)),
    block('h-img-guiding', 'Guiding', guiding, chart,
      h('p', { class: 'help' }, 'Total RMS in arcseconds, a dot per reading the night stored (changes too small to matter are not stored); gaps are times without guiding.')),
    block('h-img-events', 'Last 20 events', recent));

  const onTick = () => render();
  app.bus.addEventListener('tick', onTick);
  seed(events);
  render();
  box = chartBox(chart, (width) =>
    timeChart(readings, { label: 'Guiding RMS', format: arcsec, floor: 1, className: 'rms', width }));
  return {
    element,
    update(s) {
      current = s;
      render();
      if (addReading(readings, reading(s))) drawChart();
    },
    reload(log) {
      // After a gap: the page read the session and its log again.
      seed(log);
      drawChart();
    },
    destroy() {
      app.bus.removeEventListener('tick', onTick);
      box.stop();
    },
  };
}
