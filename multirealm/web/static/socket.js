// The chat protocol over the realm's WebSocket (/ws): one text message
// out is one request line, each one in is one JSON object, a reply (in
// request order) or an event. Reconnects by itself with backoff.

const FIRST_DELAY = 500;
const MAX_DELAY = 8000;
const PING_EVERY = 60000; // well inside the realm's idle_timeout (600 s by default)

export class Disconnected extends Error {}

export class ChatSocket {
  constructor({ onOpen, onEvent, onState }) {
    this.onOpen = onOpen;
    this.onEvent = onEvent;
    this.onState = onState;
    this.pending = [];
    this.delay = FIRST_DELAY;
    this.ws = null;
    this.ping = null;
  }

  url() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/ws`;
  }

  start() {
    this.onState(this.ws ? 'reconnecting' : 'connecting');
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.addEventListener('open', () => {
      this.delay = FIRST_DELAY;
      this.onState('connected');
      this.ping = setInterval(() => this.ask('ping').catch(() => {}), PING_EVERY);
      this.onOpen();
    });
    ws.addEventListener('message', (event) => this.received(event.data));
    ws.addEventListener('close', () => this.closed(ws));
  }

  received(data) {
    let object;
    try {
      object = JSON.parse(data);
    } catch {
      return;
    }
    if ('event' in object) this.onEvent(object);
    else if (this.pending.length) this.pending.shift().resolve(object);
    // else: a reply to no request (idle_timeout before a close): the close says it
  }

  closed(ws) {
    if (ws !== this.ws) return;
    clearInterval(this.ping);
    for (const waiting of this.pending.splice(0)) waiting.reject(new Disconnected('not connected: try again in a moment'));
    const jitter = 0.8 + Math.random() * 0.4;
    this.onState('reconnecting');
    setTimeout(() => this.start(), this.delay * jitter);
    this.delay = Math.min(this.delay * 2, MAX_DELAY);
  }

  // The reply to one request line, in its turn.
  ask(line) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Disconnected('not connected: try again in a moment'));
    }
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.ws.send(line.replace(/[\r\n]+/g, ' '));
    });
  }
}
