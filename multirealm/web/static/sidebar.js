// The list of conversations (from `conversations`), with unread counts and,
// for people, online marks, kept up to date by events.
import { el } from './dom.js';

export const keyOf = (kind, name) => `${kind}:${name.toLowerCase()}`;
const isPerson = (entry) => entry.kind === 'private' && !entry.with.startsWith('@');

const preview = (message) => `${message.msg_from}: ${message.file !== undefined ? message.file : message.msg}`;

export class Sidebar {
  constructor(list, onOpen) {
    this.list = list;
    this.onOpen = onOpen;
    this.entries = new Map(); // key -> {with, kind, unread, last, online, lastSeen}
    this.openKey = null;
  }

  clear() {
    this.entries.clear();
    this.openKey = null;
    this.render();
  }

  // The realm's list replaces ours (newest first); online marks are kept.
  replace(conversations) {
    const old = this.entries;
    this.entries = new Map();
    for (const c of conversations) {
      const key = keyOf(c.kind, c.with);
      this.entries.set(key, { ...c, online: old.get(key)?.online, lastSeen: old.get(key)?.lastSeen });
    }
    for (const [key, entry] of old) { // opened here, not at the realm yet
      if (!this.entries.has(key) && key === this.openKey) this.entries.set(key, entry);
    }
    this.render();
  }

  get(kind, name) {
    return this.entries.get(keyOf(kind, name));
  }

  // A group first, then a person: what "Open conversation" finds by name.
  find(name) {
    return this.get('group', name) || this.get('private', name);
  }

  // An entry (made if new) moved to the top.
  touch(kind, name, last) {
    const key = keyOf(kind, name);
    const entry = this.entries.get(key) || { with: name, kind, unread: 0, last: null };
    if (last) entry.last = last;
    this.entries.delete(key);
    this.entries = new Map([[key, entry], ...this.entries]);
    this.render();
    return entry;
  }

  // The entry shown as open (made, at the end, if new).
  open(kind, name) {
    const key = keyOf(kind, name);
    if (!this.entries.has(key)) this.entries.set(key, { with: name, kind, unread: 0, last: null });
    this.openKey = key;
    this.render();
  }

  setUnread(kind, name, unread) {
    const entry = this.get(kind, name);
    if (entry && entry.unread !== unread) {
      entry.unread = unread;
      this.render();
    }
  }

  people() {
    return [...this.entries.values()].filter(isPerson).map((entry) => entry.with);
  }

  setOnline(user, online, lastSeen) {
    const entry = this.get('private', user);
    if (!entry) return;
    entry.lastSeen = lastSeen;
    if (entry.online !== online) {
      entry.online = online;
      this.render();
    }
  }

  label(entry) {
    const parts = [entry.with];
    if (entry.kind === 'group') parts.push('group');
    if (entry.with.startsWith('@')) parts.push('delivery failures');
    if (entry.unread > 0) parts.push(`${entry.unread} unread`);
    if (isPerson(entry) && entry.online !== undefined) parts.push(entry.online ? 'online' : 'offline');
    return parts.join(', ');
  }

  render() {
    const focused = document.activeElement?.dataset?.key;
    const items = [...this.entries].map(([key, entry]) => {
      const button = el('button', {
        type: 'button',
        class: 'conversation-button',
        'aria-label': this.label(entry),
        'aria-current': key === this.openKey ? 'true' : null,
        'data-key': key,
        onclick: () => this.onOpen(entry.kind, entry.with),
      },
      isPerson(entry) && entry.online !== undefined
        ? el('span', { class: entry.online ? 'dot online' : 'dot', 'aria-hidden': 'true' }) : null,
      el('span', { class: 'label' },
        el('span', { class: entry.kind === 'group' ? 'name group' : 'name' }, entry.with),
        entry.last ? el('span', { class: 'last' }, preview(entry.last)) : null),
      entry.unread > 0 ? el('span', { class: 'badge', 'aria-hidden': 'true' }, String(entry.unread)) : null);
      return el('li', {}, button);
    });
    this.list.replaceChildren(...items);
    if (focused) this.list.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  }
}
