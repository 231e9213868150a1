// Building DOM nodes from data without innerHTML: every string becomes text, never markup,
// so nothing a session carries (ids, attributes, chat, command output) can inject HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function set(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key in el && typeof value !== 'string' && !(el instanceof SVGElement)) {
      el[key] = value; // properties such as checked, disabled, value
    } else el.setAttribute(key, value === true ? '' : String(value));
  }
}

/** Append children: nodes as they are, everything else (strings, numbers) as text. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** h('a', {href: '#/'}, 'text', child, ...) */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  set(el, props);
  return append(el, ...children);
}

/** The same for SVG elements. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  set(el, props);
  return append(el, ...children);
}

/** Replace what `el` shows. */
export function show(el, ...children) {
  el.replaceChildren();
  return append(el, ...children);
}
