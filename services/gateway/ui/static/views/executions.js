// Executions of every job (GET /v1/executions): filtered by status, job, executor, time and text in the
// output, newest first, a page at a time; each row opens its output on its job's page.

import { api } from '../api.js';
import {
  append, clear, debounce, emptyState, errorBox, executionDuration, executionsPager, executionStatus, h, icon, keepFocus,
  plural,
  spinner, statusBadge, timeAgo,
} from '../dom.js';

const PAGE = 50;
const SNIPPET_BYTES = 300; // the end of each output: its last line says why a run failed
const FAILURES = 'failed,timeout,killed';
export const STATUSES = [
  ['', 'Any status'], [FAILURES, 'Failed, timed out or killed'], ['failed', 'Failed'], ['timeout', 'Timed out'],
  ['killed', 'Killed'], ['success', 'Succeeded'], ['running', 'Running'], ['pending', 'Pending'], ['missed', 'Missed'],
  ['skipped', 'Skipped'],
];
const HOUR_MS = 3_600_000;
const RANGES = [['', 'Any time'], ['1h', 'Last hour'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days']];
/** @type {Record<string, number>} */
const RANGE_MS = { '1h': HOUR_MS, '24h': 24 * HOUR_MS, '7d': 7 * 24 * HOUR_MS };

function readState(query) {
  const page = Number(query.get('page'));
  const status = query.get('status') || '';
  const range = query.get('range') || '';
  return {
    status: STATUSES.some(([v]) => v === status) ? status : '',
    range: RANGES.some(([v]) => v === range) ? range : '',
    job: query.get('job') || '',
    node: query.get('node') || '',
    q: query.get('q') || '',
    page: Number.isInteger(page) && page > 0 ? page : 1,
  };
}

/** The last non-empty line of an output (what it ended with). */
function lastLine(output) {
  const lines = (output || '').split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.length ? lines[lines.length - 1] : '';
}

export async function render(ctx) {
  document.title = 'Executions · cronbus';
  const state = readState(ctx.query);
  const opts = { signal: ctx.signal };
  let loadSeq = 0;

  const select = (id, choices, value) => h('select', { id, onchange: () => apply() },
    choices.map(([v, label]) => h('option', { value: v, selected: v === value }, label)));
  const text = (id, value, placeholder) => h('input', { id, type: 'search', value, placeholder, autocomplete: 'off', spellcheck: 'false', oninput: debounce(() => apply(), 350) });
  const statusSel = select('exec-status', STATUSES, state.status);
  const rangeSel = select('exec-range', RANGES, state.range);
  const jobInput = text('exec-job', state.job, 'Job name');
  const nodeInput = text('exec-node', state.node, 'Executor');
  const qInput = text('exec-q', state.q, 'Text in the output');
  const labelled = (id, label, control) => h('div', { class: 'field' }, h('label', { for: id }, label), control);
  const filters = h('form', { class: 'filters exec-filters', role: 'search', 'aria-label': 'Filter executions',
    onsubmit: (e) => { e.preventDefault(); apply(); } },
  labelled('exec-status', 'Status', statusSel), labelled('exec-range', 'When', rangeSel),
  labelled('exec-job', 'Job', jobInput), labelled('exec-node', 'Executor', nodeInput),
  labelled('exec-q', 'Output contains', qInput));

  const summary = h('p', { class: 'muted summary', id: 'execs-summary', 'aria-live': 'polite' }, ' ');
  const tbody = h('tbody');
  const table = h('table', { class: 'table responsive all-execs-table', 'aria-describedby': 'execs-summary' },
    h('caption', { class: 'sr-only' }, 'Executions'),
    h('thead', {}, h('tr', {}, ['Status', 'Job', 'Started', 'Duration', 'Executor', 'Output'].map((t) => h('th', { scope: 'col' }, t)),
      h('th', { scope: 'col', class: 'col-actions' }, h('span', { class: 'sr-only' }, 'Actions')))),
    tbody);
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of executions' });
  append(ctx.main, h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Executions')),
    filters,
    h('div', { class: 'list-tools' }, summary),
    h('div', { class: 'card card-flush' }, h('div', { class: 'table-wrap' }, table)),
    pager));

  function apply() {
    Object.assign(state, { status: statusSel.value, range: rangeSel.value, job: jobInput.value.trim(),
      node: nodeInput.value.trim(), q: qInput.value.trim(), page: 1 });
    guarded();
  }

  async function load() {
    if (!ctx.alive) return; // a filter typed just before leaving the page
    const seq = ++loadSeq;
    ctx.setQuery({ status: state.status, range: state.range, job: state.job, node: state.node, q: state.q,
      page: state.page > 1 ? state.page : '' });
    const span = RANGE_MS[state.range] || 0;
    const { items, total } = await api.list('/v1/executions', {
      status: state.status, job: state.job, node: state.node, q: state.q,
      since: span ? new Date(Date.now() - span).toISOString() : '',
      _start: (state.page - 1) * PAGE, _end: state.page * PAGE, output_size_limit: SNIPPET_BYTES,
    }, opts);
    if (seq !== loadSeq) return; // a newer filter's answer is coming
    summary.textContent = total ? `${plural(total, 'execution')}${total > PAGE ? `, ${PAGE} a page` : ''}` : '';
    keepFocus(tbody, () => renderRows(items));
    renderPager(total);
  }

  function renderRows(items) {
    clear(tbody);
    if (!items.length) {
      const filtered = state.status || state.range || state.job || state.node || state.q;
      tbody.append(h('tr', { class: 'row-empty' }, h('td', { colspan: 7 }, filtered
        ? emptyState('search', 'No execution matches', 'Change or clear the filters to see more.')
        : emptyState('clock', 'No executions yet', 'They appear here as soon as a job runs.'))));
      return;
    }
    for (const e of items) {
      const status = executionStatus(e);
      const jobHref = `#/jobs/${encodeURIComponent(e.job_name)}`;
      const exit = e.exit_code !== null && e.exit_code !== undefined && status !== 'success' ? `exit ${e.exit_code}` : '';
      const line = lastLine(e.output) || e.reason; // the reason (e.g. the exit code) when it printed nothing
      tbody.append(h('tr', { dataset: { exec: e.id } },
        h('td', { 'data-label': 'Status' }, statusBadge(status, exit)),
        h('td', { 'data-label': 'Job' }, h('a', { class: 'job-link', href: jobHref }, e.job_name)),
        h('td', { 'data-label': 'Started' }, timeAgo(e.started_at, { withAbs: true, empty: status === 'pending' ? 'not yet' : '—' })),
        h('td', { 'data-label': 'Duration' }, executionDuration(e)),
        h('td', { 'data-label': 'Executor', class: 'mono' }, e.node_name || '—'),
        h('td', { 'data-label': 'Output', class: 'output-snippet mono' }, line || h('span', { class: 'muted' }, '(no output)')),
        h('td', { class: 'col-actions' },
          h('a', { class: 'btn btn-small', href: `${jobHref}?exec=${encodeURIComponent(e.id)}`, dataset: { key: `open-${e.id}` } },
            icon('terminal'), h('span', {}, 'Output'), h('span', { class: 'sr-only' }, ` of ${e.job_name}, ${e.id}`)))));
    }
  }

  function renderPager(total) {
    executionsPager(pager, state.page, Math.max(1, Math.ceil(total / PAGE)), (page) => {
      state.page = page;
      guarded();
    });
  }

  const guarded = () => load().catch((error) => {
    if (error.name === 'AbortError' || error.status === 401) return;
    append(clear(tbody), h('tr', {}, h('td', { colspan: 7 }, errorBox(error, guarded))));
  });
  tbody.append(h('tr', {}, h('td', { colspan: 7 }, spinner('Loading executions…'))));
  await guarded();
  ctx.every(10_000, () => state.page === 1 && guarded());
}
