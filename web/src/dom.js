// A few DOM helpers: elements are built with textContent, never from HTML strings, so ids and
// messages from the API cannot inject markup.

// el('td', {class: 'num', dataset: {id: 'x'}}, 'text', childNode, [more, children])
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key === 'style' && typeof value === 'object') Object.assign(node.style, value);
      else if (key.startsWith('on') && typeof value === 'function') {
        node.addEventListener(key.slice(2), value);
      } else node.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

// Replaces the children of `node`.
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

// A titled card of the dashboard grid. `body` is where the panel renders.
export function panel(id, title, { span = 4, subtitle = '', extraClass = '' } = {}) {
  const body = el('div', { class: 'panel-body' });
  const note = el('span', { class: 'panel-note' }, subtitle);
  const root = el(
    'section',
    { class: `panel span-${span} ${extraClass}`, id, 'data-testid': id },
    el('header', { class: 'panel-head' }, el('h2', null, title), note),
    body,
  );
  return { root, body, note };
}

// A table with a fixed header; returns the tbody to fill.
export function table(columns, testid) {
  const tbody = el('tbody');
  const node = el(
    'table',
    { class: 'grid', 'data-testid': testid },
    el('thead', null, el('tr', null, columns.map((c) => el('th', { class: c.cls || '' }, c.label)))),
    tbody,
  );
  return { node, tbody };
}

export function emptyRow(colspan, text) {
  return el('tr', { class: 'empty' }, el('td', { colspan }, text));
}
