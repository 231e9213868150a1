// How times, ages and values read on the page.

const UNITS = [
  [86400, 'd'],
  [3600, 'h'],
  [60, 'min'],
  [1, 's'],
];

/** "42 s", "5 min", "3 h", "2 d": how long ago `iso` was. */
export function age(iso, now = Date.now()) {
  if (!iso) return '';
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  for (const [size, unit] of UNITS) {
    if (seconds >= size || unit === 's') return `${Math.floor(seconds / size)} ${unit}`;
  }
  return '';
}

/** A duration in seconds as "1 h 5 min" / "42 s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '';
  let rest = Math.round(seconds);
  const parts = [];
  for (const [size, unit] of UNITS) {
    if (rest >= size && parts.length < 2) {
      parts.push(`${Math.floor(rest / size)} ${unit}`);
      rest %= size;
    }
  }
  return parts.join(' ') || '0 s';
}

/** A timestamp in the reader's locale, with seconds. */
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

export function time(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** JSON for reading: indented, or "—" when empty. */
export function pretty(value) {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'object' && Object.keys(value).length === 0) return '—';
  return JSON.stringify(value, null, 2);
}

/** "remote_access" -> "remote access"; "pending_approval" -> "pending approval". */
export function words(name) {
  return String(name ?? '').replaceAll('_', ' ');
}
