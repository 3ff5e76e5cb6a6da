// Elements built from properties and children. Text only ever goes in as
// text (textContent, text nodes): nothing a user sends is parsed as HTML.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child); // a string becomes a text node
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

// "12:05", or "3 Dec 12:05" for another day; the full time in the title.
export function timeElement(timestamp) {
  const when = new Date(timestamp);
  const today = new Date().toDateString() === when.toDateString();
  const clock = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const shown = today ? clock : `${when.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${clock}`;
  return el('time', { datetime: timestamp, title: when.toLocaleString() }, shown);
}

export function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
