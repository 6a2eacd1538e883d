// Cluster: every scheduler, executor and gateway with its tags and health, which scheduler leads, and how
// many executions each executor runs now.

import { api, can } from '../api.js';
import { loadPause, onPause, pauseState, pauseWithNote } from '../pause.js';
import { append, button, clear, emptyState, errorBox, h, icon, keepFocus, kvChips, plural, spinner } from '../dom.js';

const GROUPS = [
  ['scheduler', 'Schedulers', 'Compute fire times; one leads, the others stand by.'],
  ['executor', 'Executors', 'Run the jobs whose tags match theirs.'],
  ['gateway', 'Gateways', 'Serve this API and UI.'],
];
const HEALTH = {
  alive: ['ok', 'okCircle', 'Healthy'],
  failed: ['bad', 'badCircle', 'Failing health checks'],
  left: ['neutral', 'minus', 'Left'],
};

export async function render(ctx) {
  document.title = 'Cluster · cronbus';
  const summary = h('p', { class: 'muted', id: 'cluster-summary' });
  const body = h('div', { class: 'cluster' }, spinner('Loading members…'));
  const pauseActions = h('div', { class: 'actions' });
  const renderPauseAction = () => keepFocus(pauseActions, () => append(clear(pauseActions), can('admin')
    ? (pauseState.paused
      ? button('Resume submissions', { iconName: 'play', dataset: { key: 'unpause' }, onclick: async () => {
        await api.post('/v1/unpause').catch((error) => error);
        await loadPause();
      } })
      : button('Pause submissions', { iconName: 'pause', dataset: { key: 'pause' }, onclick: pauseWithNote }))
    : null));
  renderPauseAction();
  ctx.onCleanup(onPause(renderPauseAction));
  append(ctx.main, h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Cluster'), summary), pauseActions),
    body));
  const opts = { signal: ctx.signal };

  async function load() {
    const [members, busy] = await Promise.all([
      api.list('/v1/members', {}, opts),
      api.list('/v1/busy', {}, opts).catch((error) => {
        if (error.name === 'AbortError') throw error;
        return { items: null, error };
      }),
    ]);
    const running = new Map();
    for (const e of busy.items || []) running.set(e.node_name, (running.get(e.node_name) || 0) + 1);
    const leader = members.items.find((m) => m.Tags && m.Tags.leader === 'true');
    const executors = members.items.filter((m) => m.Tags && m.Tags.role === 'executor');
    const healthyExecutors = executors.filter((m) => m.Status === 1).length;
    summary.textContent = `${leader ? `Leader: ${leader.Name}` : 'No leader'} · ${healthyExecutors} of ${plural(executors.length, 'executor')} healthy`
      + (busy.items ? ` · ${plural(busy.items.length, 'execution')} running` : '');
    keepFocus(body, () => renderMembers(members, busy, running, leader));
  }

  function renderMembers(members, busy, running, leader) {
    clear(body);
    if (!members.items.length) {
      body.append(emptyState('server', 'No members registered', 'Start a scheduler and an executor; they register in Consul.'));
      return;
    }
    if (!leader) body.append(h('div', { class: 'alert alert-bad', role: 'status' }, icon('warn'), h('p', {}, 'No scheduler leads: nothing is being scheduled.')));
    if (busy.error) body.append(h('div', { class: 'alert alert-warn' }, icon('warn'), h('p', {}, `Running counts unavailable: ${busy.error.message}`)));
    for (const [role, title, about] of GROUPS) {
      const list = members.items.filter((m) => (m.Tags && m.Tags.role) === role);
      const headingId = `group-${role}`;
      body.append(h('section', { class: 'member-group', 'aria-labelledby': headingId },
        h('div', { class: 'group-head' }, h('h2', { id: headingId }, `${title} `, h('span', { class: 'count' }, String(list.length))), h('p', { class: 'muted small' }, about)),
        list.length
          ? h('ul', { class: 'member-grid' }, list.map((m) => memberCard(m, role, running)))
          : h('p', { class: 'muted' }, `No ${title.toLowerCase()} registered.`)));
    }
  }

  function memberCard(m, role, running) {
    const [tone, iconName, label] = HEALTH[m.statusText] || (m.Status === 1 ? HEALTH.alive : HEALTH.failed);
    const node = m.Tags.node || m.Name.replace(/^(scheduler|executor|gateway)-/, '');
    const count = running.get(node) || 0;
    const isLeader = m.Tags.leader === 'true';
    return h('li', { class: `member card${isLeader ? ' member-leader' : ''}`, dataset: { member: m.Name } },
      h('div', { class: 'member-head' },
        h('h3', {}, m.Name),
        isLeader ? h('span', { class: 'badge badge-accent' }, icon('crown'), 'Leader') : null),
      h('div', { class: 'member-status' },
        h('span', { class: `badge badge-${tone}` }, icon(iconName), label),
        role === 'executor' && running.size !== undefined
          ? h('a', { class: `badge ${count ? 'badge-info' : 'badge-neutral'}`, href: `#/busy?node=${encodeURIComponent(node)}`, dataset: { key: `busy-${node}` } }, icon('activity'), `${count} running`)
          : null),
      h('p', { class: 'muted small mono' }, `${m.Addr}${m.Port ? `:${m.Port}` : ''}`),
      role === 'executor' || Object.keys(m.Tags).some((k) => !['role', 'leader'].includes(k))
        ? h('div', { class: 'member-tags' }, h('span', { class: 'sr-only' }, 'Tags: '), kvChips(m.Tags, { skip: ['role', 'leader'] }))
        : null);
  }

  const guarded = () => load().catch((error) => {
    if (error.name === 'AbortError' || error.status === 401) return;
    append(clear(body), errorBox(error, guarded));
  });
  await guarded();
  ctx.every(5000, guarded);
}
