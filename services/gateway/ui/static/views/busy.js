// Running now: every execution in progress across the cluster, with its output so far and a kill button.

import { api, can, execPath } from '../api.js';
import {
  append, button, clear, confirmDialog, emptyState, errorBox, executionStatus, h, icon, keepFocus, plural, runningFor,
  spinner, statusBadge, timeAgo, toast, toastError,
} from '../dom.js';

const TAIL_LINES = 4;

export async function render(ctx) {
  document.title = 'Running · cronbus';
  const node = ctx.query.get('node') || '';
  const summary = h('p', { class: 'muted', id: 'busy-summary', 'aria-live': 'polite' });
  const body = h('div', {}, spinner('Loading running executions…'));
  append(ctx.main, h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Running now'), summary),
      node ? h('div', { class: 'actions' }, h('span', { class: 'chip' }, `node = ${node}`), h('a', { class: 'btn btn-ghost', href: '#/busy' }, icon('x'), h('span', {}, 'Show every node'))) : null),
    body));
  const opts = { signal: ctx.signal };
  let lastCount = -1;

  async function load() {
    const { items } = await api.list('/v1/busy', {}, opts);
    const shown = items.filter((e) => !node || e.node_name === node)
      .sort((a, b) => String(a.started_at).localeCompare(String(b.started_at)));
    const text = shown.length ? `${plural(shown.length, 'execution')} running${node ? ` on ${node}` : ''}` : '';
    if (shown.length !== lastCount) summary.textContent = text;
    lastCount = shown.length;
    keepFocus(body, () => {
      clear(body);
      if (!shown.length) {
        body.append(h('div', { class: 'card' }, emptyState('okCircle', 'Nothing is running right now', node ? `No execution runs on ${node}.` : 'Executions show up here while they run.')));
        return;
      }
      body.append(h('ul', { class: 'busy-list' }, shown.map((e) => busyCard(e))));
    });
  }

  function busyCard(e) {
    const jobHref = `#/jobs/${encodeURIComponent(e.job_name)}`;
    const tail = (e.output || '').replace(/\s+$/, '').split('\n').slice(-TAIL_LINES).join('\n');
    return h('li', { class: 'card busy-card', dataset: { exec: e.id } },
      h('div', { class: 'busy-head' },
        h('h2', {}, h('a', { href: jobHref }, e.job_name)),
        statusBadge(executionStatus(e))),
      h('dl', { class: 'inline-dl' },
        h('div', {}, h('dt', {}, 'Started'), h('dd', {}, timeAgo(e.started_at, { withAbs: true, empty: 'not yet' }))),
        h('div', {}, h('dt', {}, 'Running for'), h('dd', {}, runningFor(e.started_at))),
        h('div', {}, h('dt', {}, 'Node'), h('dd', { class: 'mono' }, e.node_name || '—')),
        h('div', {}, h('dt', {}, 'Attempt'), h('dd', {}, String(e.attempt || 1)))),
      tail ? h('pre', { class: 'output output-tail', 'aria-label': `Last lines of output of ${e.job_name}` }, tail) : h('p', { class: 'muted small' }, 'No output yet.'),
      h('div', { class: 'actions' },
        h('a', { class: 'btn', href: `${jobHref}?exec=${encodeURIComponent(e.id)}`, dataset: { key: `live-${e.id}` } }, icon('terminal'), h('span', {}, 'Live output')),
        can('operator') ? button('Kill', { iconName: 'stop', kind: 'danger', dataset: { key: `kill-${e.id}` }, onclick: () => kill(e) }) : null));
  }

  async function kill(e) {
    const ok = await confirmDialog({
      title: `Kill ${e.job_name}?`,
      body: h('p', {}, `The process group on ${e.node_name || 'its executor'} gets SIGTERM, then SIGKILL after a grace period.`),
      confirmLabel: 'Kill',
      danger: true,
    });
    if (!ok) return;
    try {
      await api.post(`${execPath(e.job_name, e.id)}/kill`);
      toast(`Kill requested for ${e.job_name}.`, 'ok');
      guarded();
    } catch (error) {
      toastError('Kill', error);
    }
  }

  const guarded = () => load().catch((error) => {
    if (error.name === 'AbortError' || error.status === 401) return;
    append(clear(body), errorBox(error, guarded));
  });
  await guarded();
  ctx.every(3000, guarded);
}
