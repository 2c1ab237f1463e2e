// DOM helpers. Everything is built with createElement and textContent: nothing the API returns
// is ever parsed as HTML, so a record's text cannot become markup or script.

import { explain } from './api.js';

/** `h('p', {class: 'x'}, 'text', child)`: an element. `on*` attributes become listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let ids = 0;
/** A labelled input: `field('Username', {name: 'username', autocomplete: 'username'})`. */
export function field(label, attrs = {}, hint) {
  const id = `f${++ids}`;
  const tag = attrs.tag || 'input';
  const options = attrs.options;
  const input = h(tag, { ...attrs, tag: undefined, options: undefined, id, 'aria-describedby': hint ? `${id}h` : undefined });
  if (options) for (const [value, text] of options) input.append(h('option', { value }, text));
  return h('div', { class: 'field' }, h('label', { for: id }, label), hint ? h('span', { class: 'hint', id: `${id}h` }, hint) : null, input);
}

/** Shows `text` in the live region (read out by screen readers); `kind`: ok or error. */
export function say(text, kind = 'ok') {
  const box = document.getElementById('messages');
  box.replaceChildren(h('p', { class: `message ${kind}` }, text));
}

export function clearMessages() { document.getElementById('messages').replaceChildren(); }

/** Shows what went wrong with `error` as a clear message. */
export function fail(error) {
  if (!(error && error.status)) console.warn(error);
  say(explain(error), 'error');
}

/**
 * A form whose submit runs `action(values, form)` with a loading state: the submit button is
 * disabled and marked busy until it settles; errors become messages.
 */
export function form(fields, submitText, action, attrs = {}) {
  const button = h('button', { type: 'submit' }, submitText);
  const el = h('form', { ...attrs, novalidate: false }, ...fields, h('div', { class: 'row' }, button));
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(el).entries());
    await busy(button, () => action(values, el));
  });
  return el;
}

/** Runs `work` with `button` busy; an error is shown, not thrown. */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  const text = button.textContent;
  button.textContent = `${text}…`;
  try {
    await work();
  } catch (error) {
    fail(error);
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.textContent = text;
  }
}

/** A button running `work` with a loading state. */
export function action(text, work, attrs = {}) {
  const button = h('button', { type: 'button', ...attrs }, text);
  button.addEventListener('click', () => busy(button, work));
  return button;
}

/** A table of `rows` (objects) with `columns`: [heading, row => cell]. */
export function table(caption, columns, rows, empty = 'Nothing here yet.') {
  if (!rows || rows.length === 0) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('caption', { class: 'muted' }, caption),
    h('thead', {}, h('tr', {}, columns.map(([heading]) => h('th', { scope: 'col' }, heading)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map(([, cell]) => h('td', {}, cell(row))))))));
}

/** A card section with a heading and `children`. */
export function panel(title, ...children) {
  const headingId = `c${++ids}`;
  return h('section', { class: 'card', 'aria-labelledby': headingId }, h('h2', { id: headingId }, title), ...children);
}

/** A card section with a heading; `load()` fills it, showing "Loading…" meanwhile. */
export function card(title, load) {
  const body = h('div', { 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…'));
  const headingId = `c${++ids}`;
  const section = h('section', { class: 'card', 'aria-labelledby': headingId }, h('h2', { id: headingId }, title), body);
  const refresh = async () => {
    body.setAttribute('aria-busy', 'true');
    try {
      body.replaceChildren(...[await load(refresh)].flat());
    } catch (error) {
      body.replaceChildren(h('p', { class: 'message error' }, explainSafe(error)));
    } finally {
      body.removeAttribute('aria-busy');
    }
  };
  section.refresh = refresh;
  refresh();
  return section;
}

function explainSafe(error) {
  if (!(error && error.status)) console.warn(error);
  return explain(error);
}

/** Unix seconds (or an RFC 3339 string) as a local date and time. */
export function when(time) {
  if (time === null || time === undefined || time === '') return '—';
  const date = typeof time === 'number' || /^\d+$/.test(time) ? new Date(Number(time) * 1000) : new Date(time);
  return Number.isNaN(date.getTime()) ? String(time) : date.toLocaleString();
}

/** Puts `nodes` in the page's main region (messages of the last view gone) and moves focus to its first heading. */
export function show(...nodes) {
  clearMessages();
  const main = document.getElementById('main');
  main.replaceChildren(...nodes);
  const heading = main.querySelector('h1');
  (heading || main).setAttribute('tabindex', '-1');
  (heading || main).focus();
}
