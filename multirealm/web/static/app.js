// The web client: logs in over the realm's WebSocket, keeps the session in
// sessionStorage (never in a URL), and wires the parts of the page.
import { $, timeElement } from './dom.js';
import { ChatSocket, Disconnected } from './socket.js';
import { Sidebar } from './sidebar.js';
import { Conversation } from './conversation.js';
import { GroupPanel } from './group.js';
import { download, upload } from './files.js';

class ChatError extends Error {
  constructor(reply) {
    super(reply.message);
    this.code = reply.code;
  }
}

const session = {
  token: () => sessionStorage.getItem('multirealm.session'),
  user: () => sessionStorage.getItem('multirealm.user'),
  save(user, token) {
    sessionStorage.setItem('multirealm.user', user);
    sessionStorage.setItem('multirealm.session', token);
  },
  forget() {
    sessionStorage.removeItem('multirealm.user');
    sessionStorage.removeItem('multirealm.session');
  },
};

const STATES = { connecting: 'Connecting…', connected: 'Connected', reconnecting: 'Reconnecting…' };

const socket = new ChatSocket({ onOpen: () => resume().catch(chat.alert), onEvent: event, onState: (state) => {
  $('status').textContent = STATES[state];
  $('status').dataset.state = state;
} });

const chat = {
  async request(line) {
    const reply = await socket.ask(line);
    if (reply.status === 'OK') return reply;
    if (reply.code === 'invalid_session' && session.token()) { // ended elsewhere, or expired
      forget();
      $('username').focus();
    }
    throw new ChatError(reply);
  },
  token: session.token,
  me: () => session.user() || '',
  alert(error) {
    $('alert').textContent = error.message;
  },
  download: (message) => download(message.file_id, message.file, session.token()).catch(chat.alert),
  sidebar: null,
};

const sidebar = new Sidebar($('conversations'), (kind, name) => acting(() => openConversation(kind, name))());
chat.sidebar = sidebar;
const conversation = new Conversation(chat, $('messages'), $('older'));
const groupPanel = new GroupPanel(chat);

// Run a person's action; its error, if any, in the alert.
function acting(action) {
  return async (event) => {
    event?.preventDefault();
    try {
      await action(event);
      $('alert').textContent = '';
    } catch (error) {
      chat.alert(error);
    }
  };
}

function showChat(loggedIn) {
  $('login-view').hidden = loggedIn;
  $('chat-view').hidden = !loggedIn;
  $('logout').hidden = !loggedIn;
  $('who').hidden = !loggedIn;
  $('who').textContent = loggedIn ? `Logged in as ${chat.me()}` : '';
}

// On every (re)connection: the session subscribed again, and what was missed.
async function resume() {
  if (!session.token()) {
    showChat(false);
    return;
  }
  try {
    await chat.request(`subscribe ${session.token()}`);
  } catch (error) {
    if (!(error instanceof Disconnected)) chat.alert(error); // else: reconnecting, as the status says
    return;
  }
  showChat(true);
  await refreshConversations();
  await conversation.catchUp();
}

function forget() {
  session.forget();
  sidebar.clear();
  conversation.close();
  groupPanel.hide();
  document.body.classList.remove('open');
  $('send-form').hidden = true;
  $('conversation-title').textContent = 'No conversation open';
  $('conversation-presence').replaceChildren();
  showChat(false);
}

// The username and password typed: each one word (the protocol splits on spaces).
function credentials() {
  const user = $('username').value.trim();
  const password = $('password').value;
  if (!user || /\s/.test(user) || !password || /\s/.test(password)) {
    throw new Error('a username and a password, each one word without spaces');
  }
  return [user, password];
}

async function login(user, password) {
  const reply = await chat.request(`auth ${user} ${password}`);
  session.save(user, reply.tokenid);
  $('password').value = '';
  await resume();
  $('open-address').focus();
}

$('login-form').addEventListener('submit', acting(() => login(...credentials())));
$('register').addEventListener('click', acting(async () => {
  const [user, password] = credentials();
  await chat.request(`register ${user} ${password}`);
  await login(user, password);
}));
$('logout').addEventListener('click', acting(async () => {
  const token = session.token();
  forget();
  await chat.request(`logout ${token}`).catch(() => {});
  $('username').focus();
}));

const PAGES = 20; // at most this many pages of conversations (list_limit each)

async function refreshConversations() {
  let all = [];
  let after = '';
  for (let page = 0; page < PAGES; page += 1) {
    const reply = await chat.request(`conversations ${session.token()}${after}`);
    all = all.concat(reply.conversations);
    if (!reply.more || !reply.conversations.length) break;
    after = ` ${reply.conversations[reply.conversations.length - 1].with}`;
  }
  sidebar.replace(all);
  await askPresence(sidebar.people());
}

async function askPresence(people) {
  for (let i = 0; i < people.length; i += 100) {
    const reply = await chat.request(`presence ${session.token()} ${people.slice(i, i + 100).join(' ')}`);
    for (const [user, state] of Object.entries(reply.presence)) presence(user, state);
  }
}

// A person's state, in the list and, for the open conversation, under its name.
function presence(user, state) {
  sidebar.setOnline(user, state.online, state.last_seen);
  showPresence();
}

function showPresence() {
  const open = conversation.current;
  const entry = open && open.kind === 'private' ? sidebar.get('private', open.name) : null;
  const line = $('conversation-presence');
  if (!entry || entry.online === undefined) line.replaceChildren();
  else if (entry.online) line.replaceChildren('online');
  else if (entry.lastSeen) line.replaceChildren('last seen ', timeElement(entry.lastSeen));
  else line.replaceChildren('offline');
}

let refreshing = null;
function refreshSoon() {
  clearTimeout(refreshing);
  refreshing = setTimeout(() => refreshConversations().catch(() => {}), 200);
}

const ADDRESS = /^[A-Za-z0-9_.-]{1,32}(@[A-Za-z0-9_.-]{1,32})?$/;

async function openConversation(kind, name) {
  sidebar.open(kind, name);
  $('conversation-title').textContent = name;
  $('conversation-presence').replaceChildren();
  $('send-form').hidden = name.startsWith('@');
  document.body.classList.add('open');
  if (kind === 'group') groupPanel.show(name).catch(chat.alert);
  else groupPanel.hide();
  await conversation.open(kind, name);
  showPresence();
  $('message').focus();
}

$('open-form').addEventListener('submit', acting(async () => {
  const name = $('open-address').value.trim();
  if (!ADDRESS.test(name)) throw new Error(`'${name}' is no address: write heru, or heru@2 for another realm`);
  const known = sidebar.find(name);
  await openConversation(known ? known.kind : 'private', known ? known.with : name);
  $('open-address').value = '';
  if (!known) await askPresence([name]).catch(() => {});
}));

$('group-form').addEventListener('submit', acting(async () => {
  const name = $('group-name').value.trim();
  const members = $('group-members').value.trim().split(/\s+/).filter(Boolean);
  await chat.request(`creategroup ${session.token()} ${name} ${members.join(' ')}`.trimEnd());
  $('group-name').value = '';
  $('group-members').value = '';
  await refreshConversations();
  await openConversation('group', name);
}));

$('back').addEventListener('click', () => {
  document.body.classList.remove('open');
  $('conversations').querySelector('[aria-current="true"]')?.focus();
});

$('send-form').addEventListener('submit', acting(async () => {
  const open = conversation.current;
  const text = $('message').value;
  if (!open || !text.trim()) return;
  const verb = open.kind === 'group' ? 'sendgroup' : 'send';
  const reply = await chat.request(`${verb} ${session.token()} ${open.name} ${text}`);
  $('message').value = '';
  const message = {
    id: reply.id, msg_from: chat.me(), msg_to: open.name,
    msg: text.replace(/^ +/, '').replace(/[ \t\r]+$/, ''), timestamp: reply.timestamp,
  };
  conversation.append(message);
  const first = !sidebar.get(open.kind, open.name)?.last;
  sidebar.touch(open.kind, open.name, message);
  sidebar.setUnread(open.kind, open.name, 0); // sending reads what came before
  // A first message makes a contact, told of changes from now: ask where things stand.
  if (first && open.kind === 'private') askPresence([open.name]).catch(() => {});
}));

$('attach').addEventListener('change', acting(async () => {
  const open = conversation.current;
  const file = $('attach').files[0];
  $('attach').value = '';
  if (!open || !file) return;
  const bar = $('upload');
  bar.value = 0;
  bar.hidden = false;
  try {
    await upload(file, open, session.token(), (done) => { bar.value = done; });
  } finally {
    bar.hidden = true;
  }
  await conversation.catchUp();
}));

// Events of the subscribed session (docs/protocol.md, "Live events").
function event(e) {
  if (e.event === 'message') received(e.kind, e.message);
  else if (e.event === 'presence') presence(e.user, e);
  else if (e.event === 'read') {
    const entry = sidebar.get('group', e.with) || sidebar.get('private', e.with);
    if (entry && entry.last && entry.last.id === e.up_to) sidebar.setUnread(entry.kind, entry.with, 0);
    else refreshSoon();
  } else if (e.event === 'member') {
    groupPanel.member(e);
    // A group this list lacks (just created with us in it), or our own membership changed.
    const mine = e.member.toLowerCase() === chat.me().toLowerCase();
    if (mine || !sidebar.get('group', e.group)) refreshSoon();
  } else if (e.event === 'overflow') {
    resume().catch(() => {}); // subscribe again, then read what was missed
  }
}

function received(kind, message) {
  const group = kind === 'group';
  const name = group ? message.msg_to : message.msg_from; // a failure: from "@realm"
  const conversationKind = group ? 'group' : 'private';
  const isNew = !sidebar.get(conversationKind, name);
  const entry = sidebar.touch(conversationKind, name, message);
  entry.unread = (entry.unread || 0) + 1; // until markread says it was seen
  sidebar.render();
  if (kind === 'failure') conversation.failed(message);
  if (conversation.is(conversationKind, name)) conversation.append(message);
  if (isNew && !group && !name.startsWith('@')) askPresence([name]).catch(() => {});
}

showChat(Boolean(session.token())); // until the realm says whether the session lives
if (!session.token()) $('username').focus();
socket.start();
