// A group's members (`groupinfo`); its owner adds and removes them.
import { $, el } from './dom.js';

export class GroupPanel {
  // chat: {request, token(), me(), alert(error)}
  constructor(chat) {
    this.chat = chat;
    this.panel = $('group-panel');
    this.group = null;
    $('add-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.add();
    });
  }

  hide() {
    this.group = null;
    this.panel.hidden = true;
  }

  async show(group) {
    this.group = group;
    this.panel.hidden = false;
    await this.refresh();
  }

  async refresh() {
    const group = this.group;
    if (!group) return;
    const info = await this.chat.request(`groupinfo ${this.chat.token()} ${group}`);
    if (this.group !== group) return;
    const owner = info.owner !== null && info.owner.toLowerCase() === this.chat.me().toLowerCase();
    $('group-owner').textContent = info.owner === null ? 'Owner unknown' : `Owner: ${info.owner}`;
    $('group-members-list').replaceChildren(...info.members.map((member) => el('li', {},
      el('span', {}, member),
      owner && member.toLowerCase() !== this.chat.me().toLowerCase()
        ? el('button', {
          type: 'button', class: 'small', 'aria-label': `Remove ${member}`,
          onclick: () => this.change('removemember', member),
        }, 'Remove') : null)));
    $('add-form').hidden = !owner;
  }

  async add() {
    const names = $('add-members').value.trim().split(/\s+/).filter(Boolean);
    if (names.length && await this.change('addmember', names.join(' '))) $('add-members').value = '';
  }

  async change(verb, names) {
    try {
      await this.chat.request(`${verb} ${this.chat.token()} ${this.group} ${names}`);
      await this.refresh();
      return true;
    } catch (error) {
      this.chat.alert(error);
      return false;
    }
  }

  // A member event of the group shown: its list again.
  member(event) {
    if (this.group && event.group.toLowerCase() === this.group.toLowerCase()) {
      this.refresh().catch(() => {});
    }
  }
}
