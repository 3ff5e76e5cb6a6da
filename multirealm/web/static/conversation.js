// The open conversation: its history paged backwards as the log is
// scrolled up, new messages as they arrive, and `markread` of what has
// been seen (on screen, with the page visible).
import { el, sizeText, timeElement } from './dom.js';

const NEAR_TOP = 80; // px from the top of the log that load older messages
const READ_AFTER = 300; // ms of calm before a markread goes out

export class Conversation {
  // chat: {request, me(), download(message), sidebar}
  constructor(chat, log, olderButton) {
    this.chat = chat;
    this.log = log;
    this.olderButton = olderButton;
    this.current = null;
    this.visible = new Set();
    this.observer = new IntersectionObserver((entries) => this.intersections(entries), {
      root: log, threshold: 0.5,
    });
    log.addEventListener('scroll', () => {
      if (log.scrollTop < NEAR_TOP) this.older().catch(() => {}); // disconnected: the next scroll
    });
    olderButton.addEventListener('click', () => this.older().catch(chat.alert));
    document.addEventListener('visibilitychange', () => this.markSeen());
  }

  close() {
    this.current = null;
    this.observer.disconnect();
    this.visible.clear();
    this.log.replaceChildren();
    this.olderButton.hidden = true;
  }

  async open(kind, name) {
    this.close();
    const current = { kind, name, ids: new Set(), more: false, loading: false, marked: null };
    this.current = current;
    const page = await this.history();
    if (this.current !== current) return;
    this.show(page);
  }

  is(kind, name) {
    return this.current && this.current.kind === kind
      && this.current.name.toLowerCase() === name.toLowerCase();
  }

  history(before) {
    const { kind, name } = this.current;
    return this.chat.request(`history ${this.chat.token()} ${kind} ${name}${before ? ` ${before}` : ''}`);
  }

  // A newest page in place of what is shown; then older pages until the log scrolls.
  show(page) {
    this.observer.disconnect();
    this.visible.clear();
    this.current.ids.clear();
    this.log.replaceChildren(...page.messages.map((m) => this.element(m)));
    this.setMore(page.more);
    this.log.scrollTop = this.log.scrollHeight;
    this.fill().catch(() => {});
  }

  async fill() {
    while (this.current?.more && this.log.scrollHeight <= this.log.clientHeight) {
      if (!(await this.older())) break;
    }
  }

  setMore(more) {
    this.current.more = more;
    this.olderButton.hidden = !more;
  }

  // The page before the oldest shown, kept in view where the reader was.
  async older() {
    const current = this.current;
    if (!current || !current.more || current.loading) return false;
    const oldest = this.log.firstElementChild?.dataset.id;
    current.loading = true;
    try {
      const page = await this.history(oldest);
      if (this.current !== current) return false;
      const before = this.log.scrollHeight;
      const fresh = page.messages.filter((m) => !current.ids.has(m.id));
      this.log.prepend(...fresh.map((m) => this.element(m)));
      this.log.scrollTop += this.log.scrollHeight - before;
      this.setMore(page.more);
      return fresh.length > 0;
    } finally {
      current.loading = false;
    }
  }

  // A message that arrived (an event) or was sent from here.
  append(message) {
    if (!this.current || this.current.ids.has(message.id)) return;
    const atBottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    this.log.append(this.element(message));
    if (atBottom || this.mine(message)) this.log.scrollTop = this.log.scrollHeight;
  }

  // After a reconnect or an upload: what the newest page has that we lack.
  async catchUp() {
    const current = this.current;
    if (!current) return;
    const page = await this.history();
    if (this.current !== current) return;
    if (!page.messages.some((m) => current.ids.has(m.id))) {
      this.show(page); // more came than one page: start again from the newest
      return;
    }
    for (const message of page.messages) this.append(message);
  }

  // A delivery failure names a message that may be on screen.
  failed(failure) {
    const node = this.log.querySelector(`[data-id="${CSS.escape(failure.failed.id)}"]`);
    if (node && !node.querySelector('.failed-note')) {
      node.classList.add('undelivered');
      node.append(el('p', { class: 'failed-note' }, el('strong', {}, 'Failed: '), failure.msg));
    }
  }

  mine(message) {
    return message.msg_from.toLowerCase() === this.chat.me().toLowerCase();
  }

  element(message) {
    this.current.ids.add(message.id);
    let body;
    if (message.file !== undefined) {
      body = el('p', { class: 'text' },
        el('a', {
          href: '#',
          onclick: (event) => {
            event.preventDefault();
            this.chat.download(message);
          },
        }, message.file),
        ' ', el('span', { class: 'size' }, `(${sizeText(message.size)})`));
    } else if (message.failed) {
      body = el('p', { class: 'text' }, el('strong', {}, 'Failed: '), message.msg);
    } else {
      body = el('p', { class: 'text' }, message.msg);
    }
    const classes = ['message'];
    if (this.mine(message)) classes.push('mine');
    if (message.failed) classes.push('failure');
    const node = el('div', { class: classes.join(' '), 'data-id': message.id },
      el('p', { class: 'meta' }, el('span', { class: 'from' }, message.msg_from), ' ', timeElement(message.timestamp)),
      body);
    if (!this.mine(message)) this.observer.observe(node);
    return node;
  }

  intersections(entries) {
    for (const entry of entries) {
      if (entry.isIntersecting) this.visible.add(entry.target);
      else this.visible.delete(entry.target);
    }
    this.markSeen();
  }

  // The last message of others on screen, marked read once things settle.
  markSeen() {
    if (!this.current || document.visibilityState !== 'visible') return;
    let newest = this.current.marked;
    for (const node of this.visible) {
      if (!node.isConnected) continue;
      if (!newest || !newest.isConnected || newest.compareDocumentPosition(node) & Node.DOCUMENT_POSITION_FOLLOWING) newest = node;
    }
    if (!newest || newest === this.current.marked) return;
    const current = this.current;
    clearTimeout(current.timer);
    current.timer = setTimeout(() => this.markread(current, newest), READ_AFTER);
  }

  async markread(current, node) {
    if (this.current !== current || !node.isConnected) return;
    const previous = current.marked;
    current.marked = node;
    try {
      await this.chat.request(`markread ${this.chat.token()} ${current.name} ${node.dataset.id}`);
    } catch (error) {
      current.marked = previous;
      return;
    }
    let unread = 0;
    for (let next = node.nextElementSibling; next; next = next.nextElementSibling) {
      if (!next.classList.contains('mine')) unread += 1;
    }
    this.chat.sidebar.setUnread(current.kind, current.name, unread);
  }
}
