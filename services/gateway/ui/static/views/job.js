// One job: its definition, the schedule in words with the next fire times (job's zone and the viewer's),
// its executions, the output of any of them (live for a running one, over server-sent events), and actions.

import { api, can, execPath, jobPath, streamUrl } from '../api.js';
import { describeSchedule } from '../cron.js';
import {
  absTime, announce, append, button, chip, clear, confirmDialog, emptyState, errorBox, executionDuration,
  executionStatus, executionsPager, fmtNumber, h, icon, isRunning, keepFocus, kvChips, linkButton, parseTime, plural, spinner,
  statusBadge, timeAgo, toast, toastError, viewerZone,
} from '../dom.js';
import { STATUSES } from './executions.js';
import { chainTree, recentRuns, runsChart } from './relations.js';

const PAGE = 20;
const MAX_OUTPUT_CHARS = 1_000_000;
const STATUS_WORDS = { success: 'succeeded', failed: 'failed', killed: 'was killed', timeout: 'timed out', missed: 'was missed', skipped: 'was skipped' };

const jobHref = (name) => `#/jobs/${encodeURIComponent(name)}`;

export async function render(ctx) {
  const name = ctx.params.name;
  document.title = `${name} · cronbus`;
  const opts = { signal: ctx.signal };
  ctx.main.append(spinner('Loading the job…'));
  let job;
  try {
    job = await api.get(jobPath(name), {}, opts);
  } catch (error) {
    if (error.status !== 404) throw error;
    append(clear(ctx.main), h('div', { class: 'page' }, breadcrumbs(name),
      h('h1', {}, 'Job not found'),
      emptyState('search', `There is no job named “${name}”.`, 'It may have been deleted, or the link is wrong.',
        linkButton('Back to jobs', '#/jobs', { iconName: 'left' }))));
    document.title = 'Job not found · cronbus';
    return;
  }

  const state = {
    page: Math.max(1, Number(ctx.query.get('epage')) || 1),
    selected: ctx.query.get('exec') || '',
    status: STATUSES.some(([v]) => v === ctx.query.get('estatus')) ? ctx.query.get('estatus') : '',
    total: 0,
    executions: [],
    known: null, // execution ids seen so far (to follow the run that "Run now" starts)
    followSince: 0,
  };

  const headEl = h('div', { class: 'page-head job-head' });
  const actionsEl = h('div', { class: 'actions job-actions', role: 'group', 'aria-label': 'Job actions' });
  const scheduleBody = h('div', { class: 'card-body' });
  const definitionBody = h('div', { class: 'card-body' });
  const execSummary = h('p', { class: 'muted small', id: 'exec-summary' });
  const execStatus = h('select', { id: 'exec-status-filter', class: 'select-small', onchange: async () => {
    state.status = execStatus.value;
    state.page = 1;
    syncQuery();
    await loadExecutions();
  } }, STATUSES.map(([v, label]) => h('option', { value: v, selected: v === state.status }, label)));
  const execTbody = h('tbody');
  const execTable = h('table', { class: 'table responsive exec-table', 'aria-describedby': 'exec-summary' },
    h('caption', { class: 'sr-only' }, `Executions of ${name}`),
    h('thead', {}, h('tr', {}, ['Status', 'Started', 'Duration', 'Node', 'Attempt', 'Scheduled for'].map((t) => h('th', { scope: 'col' }, t)),
      h('th', { scope: 'col', class: 'col-actions' }, h('span', { class: 'sr-only' }, 'Actions')))),
    execTbody);
  const execWrap = h('div', { class: 'table-wrap' }, execTable);
  const execPager = h('nav', { class: 'pager', 'aria-label': 'Pages of executions' });
  const outputSection = h('section', { class: 'card output-card', id: 'output-panel', 'aria-labelledby': 'output-h', hidden: true });
  // The panel sits in a row right under the execution it shows; under the table when that one is on another page.
  const outputCell = h('td', { colspan: 7 });
  const outputRow = h('tr', { class: 'output-row' }, outputCell);
  const outputHome = h('div', {}, outputSection);
  const runsBody = h('div', { class: 'card-body' });
  const chainBody = h('div', { class: 'card-body' });
  const chainSection = h('section', { class: 'card', 'aria-labelledby': 'chain-h', hidden: true },
    h('div', { class: 'card-head' }, h('h2', { id: 'chain-h' }, 'Chain')), chainBody);

  append(clear(ctx.main), h('div', { class: 'page' },
    breadcrumbs(name),
    headEl,
    actionsEl,
    h('div', { class: 'grid-2' },
      h('section', { class: 'card', 'aria-labelledby': 'schedule-h' },
        h('div', { class: 'card-head' }, h('h2', { id: 'schedule-h' }, 'Schedule')), scheduleBody),
      h('section', { class: 'card', 'aria-labelledby': 'definition-h' },
        h('div', { class: 'card-head' }, h('h2', { id: 'definition-h' }, 'Definition')), definitionBody)),
    h('section', { class: 'card', 'aria-labelledby': 'runs-h' },
      h('div', { class: 'card-head' }, h('h2', { id: 'runs-h' }, 'Recent runs')), runsBody),
    chainSection,
    h('section', { class: 'card', 'aria-labelledby': 'executions-h' },
      h('div', { class: 'card-head' }, h('h2', { id: 'executions-h' }, 'Executions'), execSummary,
        h('label', { class: 'sr-only', for: 'exec-status-filter' }, 'Show executions with status'), execStatus),
      execWrap, execPager),
    outputHome));

  // ---- header, actions, definition ----

  function renderHead() {
    document.title = `${job.displayname || job.name} · cronbus`;
    append(clear(headEl), h('div', { class: 'title-block' },
      h('h1', {}, job.displayname || job.name),
      job.displayname ? h('p', { class: 'mono muted' }, job.name) : null,
      h('div', { class: 'badges' }, statusBadge(job.status),
        job.disabled ? h('span', { class: 'badge badge-neutral' }, icon('power'), 'Disabled') : h('span', { class: 'badge badge-ok badge-soft' }, icon('power'), 'Enabled'),
        job.ephemeral ? chip('ephemeral') : null,
        job.parent_job ? h('span', { class: 'chip chip-parent' }, h('span', {}, 'child of'), h('a', { href: jobHref(job.parent_job) }, job.parent_job)) : null)));
    if (job.disabled && job.disabled_reason) {
      headEl.append(h('p', { class: 'alert alert-warn', role: 'status', dataset: { key: 'disabled-reason' } }, icon('power'),
        `Disabled by the cluster ${job.disabled_reason.replace(/^disabled /, '')}. Enable it once the cause is fixed.`));
    }
    keepFocus(actionsEl, () => {
      append(clear(actionsEl),
        can('operator') ? button('Run now', { iconName: 'play', kind: 'primary', onclick: runNow, dataset: { key: 'run' } }) : null,
        can('operator') ? button(job.disabled ? 'Enable' : 'Disable', { iconName: 'power', onclick: toggle, dataset: { key: 'toggle' } }) : null,
        can('admin') ? linkButton('Edit', `${jobHref(job.name)}/edit`, { iconName: 'edit' }) : null,
        can('admin') ? linkButton('Clone', `#/jobs/new?clone=${encodeURIComponent(job.name)}`, { iconName: 'copy' }) : null,
        can('admin') ? button('Clear history', { iconName: 'refresh', kind: 'ghost', onclick: clearHistory, dataset: { key: 'clear' } }) : null,
        can('admin') ? button('Delete', { iconName: 'trash', kind: 'danger', onclick: remove, dataset: { key: 'delete' } }) : null);
    });
    actionsEl.hidden = !actionsEl.childElementCount;
  }

  function renderDefinition() {
    const config = job.executor_config || {};
    const main = job.executor === 'http' ? [config.method || 'GET', config.url].filter(Boolean).join(' ') : config.command;
    const rest = Object.fromEntries(Object.entries(config).filter(([k]) => !['command', 'url', 'method'].includes(k)));
    const rows = [
      ['Name', h('span', { class: 'mono' }, job.name)],
      ['Owner', job.owner || job.owner_email
        ? h('span', {}, job.owner || '', job.owner_email ? [' ', h('a', { href: `mailto:${job.owner_email}` }, job.owner_email)] : null)
        : null],
      ['Executor', h('span', {}, chip(job.executor || 'none'))],
      [job.executor === 'http' ? 'Request' : 'Command', main ? h('pre', { class: 'code-block' }, main) : null],
      ['Executor settings', Object.keys(rest).length ? kvChips(rest) : null],
      ['Target tags', kvChips(job.tags)],
      ['Metadata', kvChips(job.metadata)],
      ['Concurrency', job.concurrency || 'allow'],
      ['Retries', job.retries ? `${job.retries} (backoff from ${job.retry_backoff || '5s'})` : 'none'],
      ['Disables itself', job.disable_after_failures ? `after ${plural(job.disable_after_failures, 'failed run')} in a row` : null],
      ['Timeout', job.timeout || null],
      ['Runs after', job.parent_job ? h('span', {}, h('a', { href: jobHref(job.parent_job) }, job.parent_job), ` on ${job.trigger_on || 'success'}`) : null],
      ['Dependent jobs', job.dependent_jobs && job.dependent_jobs.length
        ? h('span', { class: 'chips' }, job.dependent_jobs.map((d) => h('a', { class: 'chip', href: jobHref(d) }, d))) : null],
      ['Missed runs', `${(job.misfire_policy || 'run_once').replace('_', ' ')}, within ${job.catchup_window || '1h'}`],
      ['Active from', parseTime(job.starts_at) ? timeAgo(job.starts_at, { withAbs: true }) : null],
      ['Active until', parseTime(job.expires_at) ? timeAgo(job.expires_at, { withAbs: true }) : null],
      ['Ephemeral', job.ephemeral ? 'deleted after its first successful run' : null],
      ['Processors', job.processors && Object.keys(job.processors).length ? Object.keys(job.processors).map((p) => chip(p)) : null],
      ['Runs', h('span', {}, h('span', { class: 'text-ok' }, `${fmtNumber(job.success_count || 0)} succeeded`), ' · ',
        h('span', { class: job.error_count ? 'text-bad' : '' }, `${fmtNumber(job.error_count || 0)} failed`))],
      ['Last success', timeAgo(job.last_success, { withAbs: true, empty: 'never' })],
      ['Last failure', timeAgo(job.last_error, { withAbs: true, empty: 'never' })],
    ].filter(([, v]) => v !== null && v !== undefined && v !== '');
    append(clear(definitionBody),
      h('dl', { class: 'deflist' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      h('details', { class: 'raw' }, h('summary', {}, 'Job as JSON'), h('pre', { class: 'code-block' }, JSON.stringify(job, null, 2))));
  }

  async function renderSchedule() {
    const words = describeSchedule(job.schedule, { parentJob: job.parent_job });
    const zone = job.timezone || 'UTC';
    const scheduleZone = /^(?:CRON_TZ|TZ)=(\S+)/.exec(job.schedule || '')?.[1] || zone;
    append(clear(scheduleBody),
      h('p', { class: 'schedule-expr' }, job.schedule ? h('code', {}, job.schedule) : h('span', { class: 'muted' }, 'No schedule of its own')),
      words ? h('p', { class: 'schedule-words' }, words) : null,
      h('p', { class: 'muted small' }, icon('globe'), ` Job’s time zone: ${scheduleZone} · yours: ${viewerZone}`));
    const slot = h('div', { class: 'next-fires' }, spinner('Computing the next runs…'));
    scheduleBody.append(h('h3', { class: 'sub-h' }, 'Next 5 runs'), slot);
    if (!job.schedule) {
      append(clear(slot), h('p', { class: 'muted' }, job.parent_job ? `Runs after each ${job.trigger_on === 'always' ? '' : `${job.trigger_on || 'successful'} `}run of ${job.parent_job}.` : 'It never runs by itself.'));
      return;
    }
    try {
      const fires = await api.get(`${jobPath(job.name)}/next`, { count: 5 }, opts);
      const manual = /^@manually$/i.test(job.schedule.trim());
      append(clear(slot), fires.length || !manual
        ? firesTable(fires, scheduleZone, { disabled: job.disabled })
        : h('p', { class: 'muted' }, 'It never runs by itself: use Run now, the API or a parent job.'));
    } catch (error) {
      if (error.name === 'AbortError') return;
      append(clear(slot), h('p', { class: 'field-error' }, error.message));
    }
  }

  // ---- recent runs and chain ----

  async function renderRelations() {
    try {
      const [runs, tree] = await Promise.all([recentRuns(name, opts), chainTree(job, opts)]);
      append(clear(runsBody), runsChart(runs, runsBody.clientWidth));
      chainSection.hidden = !tree;
      if (tree) append(clear(chainBody), tree);
    } catch (error) {
      if (error.name === 'AbortError') return;
      append(clear(runsBody), h('p', { class: 'field-error' }, error.message));
    }
  }

  // ---- executions ----

  async function loadExecutions() {
    const { items, total } = await api.list(`${jobPath(name)}/executions`,
      { _start: (state.page - 1) * PAGE, _end: state.page * PAGE, output_size_limit: 0, status: state.status }, opts);
    const fresh = state.known ? items.filter((e) => !state.known.has(e.id)) : [];
    state.known = new Set([...(state.known || []), ...items.map((e) => e.id)]);
    state.executions = items;
    state.total = total;
    if (state.followSince && fresh.length && state.page === 1) {
      state.followSince = 0;
      const newest = fresh[0];
      announce(`A new execution started on ${newest.node_name || 'an executor'}.`);
      if (!outputSection.contains(document.activeElement)) selectExecution(newest.id, { focus: false });
    }
    renderExecutions();
    const shown = state.selected ? items.find((e) => e.id === state.selected) : null;
    if (shown && output.id === shown.id && output.status) {
      const status = executionStatus(shown);
      if (!isRunning(status) && status !== output.status && !output.stream) {
        openOutput(shown.id); // it ended while we were not streaming: show the final output
      } else if (output.status === 'pending' && status === 'running') {
        output.status = status; // it started: its node and start time, while the stream goes on
        renderOutputPanel(shown, false);
      }
    }
  }

  /** Puts the output panel under its execution's row (moved only when its place changes, so focus and the
   * output's scroll position stay). */
  function placeOutput() {
    const row = state.selected && !outputSection.hidden
      ? execTbody.querySelector(`tr[data-exec="${CSS.escape(state.selected)}"]`) : null;
    if (row) {
      if (outputSection.parentNode !== outputCell) outputCell.append(outputSection);
      if (row.nextElementSibling !== outputRow) row.after(outputRow);
    } else {
      outputRow.remove();
      if (outputSection.parentNode !== outputHome) outputHome.append(outputSection);
    }
  }

  function renderExecutions() {
    execSummary.textContent = state.total ? plural(state.total, 'execution') : '';
    keepFocus(execTbody, () => {
      for (const child of [...execTbody.children]) if (child !== outputRow) child.remove();
      if (!state.executions.length) {
        placeOutput();
        execTbody.append(h('tr', { class: 'row-empty' }, h('td', { colspan: 7 }, state.status
          ? emptyState('search', 'No execution with this status', 'Choose another status to see more.') :
          emptyState('clock', 'No executions yet', job.disabled ? 'The job is disabled; run it by hand to try it.' : 'They appear here as soon as the job runs.',
            can('operator') ? button('Run it once now', { iconName: 'play', onclick: runNow }) : null))));
        return;
      }
      // Rows up to the selected one go above the panel's row, the others below it.
      let above = outputRow.parentNode === execTbody && state.executions.some((e) => e.id === state.selected);
      for (const e of state.executions) {
        const status = executionStatus(e);
        const selected = e.id === state.selected;
        const tr = h('tr', { class: selected ? 'row-selected' : '', dataset: { exec: e.id } },
          h('td', { 'data-label': 'Status' }, statusBadge(status, e.exit_code !== null && e.exit_code !== undefined && status !== 'success' ? `exit ${e.exit_code}` : '')),
          h('td', { 'data-label': 'Started' }, timeAgo(e.started_at, { withAbs: true, empty: status === 'pending' ? 'not yet' : '—' })),
          h('td', { 'data-label': 'Duration' }, executionDuration(e)),
          h('td', { 'data-label': 'Node', class: 'mono' }, e.node_name || '—'),
          h('td', { 'data-label': 'Attempt' }, String(e.attempt || 1)),
          h('td', { 'data-label': 'Scheduled for' }, e.manual ? h('span', { class: 'muted' }, 'run by hand') : timeAgo(e.scheduled_at, { zone: job.timezone })),
          h('td', { class: 'col-actions' },
            h('button', {
              type: 'button', class: `btn btn-small${selected ? ' btn-selected' : ''}`, 'aria-controls': 'output-panel',
              'aria-expanded': String(selected), dataset: { key: `out-${e.id}` },
              onclick: () => (selected ? closeOutput() : selectExecution(e.id, { focus: true })),
            }, icon('terminal'), h('span', {}, isRunning(status) ? 'Live output' : 'Output'),
            h('span', { class: 'sr-only' }, ` of the run started ${e.started_at ? absTime(e.started_at) : ''}`)),
            isRunning(status) && can('operator') ? h('button', {
              type: 'button', class: 'btn btn-small btn-danger', dataset: { key: `kill-${e.id}` }, onclick: () => kill(e),
            }, icon('stop'), h('span', {}, 'Kill')) : null));
        if (above) execTbody.insertBefore(tr, outputRow);
        else execTbody.append(tr);
        if (selected) above = false;
      }
      placeOutput();
    });
    executionsPager(execPager, state.page, Math.max(1, Math.ceil(state.total / PAGE)), async (page) => {
      state.page = page;
      syncQuery();
      await loadExecutions();
    });
  }

  function syncQuery() {
    ctx.setQuery({ exec: state.selected, epage: state.page > 1 ? state.page : '', estatus: state.status });
  }

  // ---- output ----

  const output = { id: '', status: '', stream: null, poll: 0, text: '', wrap: true };
  const pre = h('pre', { class: 'output', tabindex: '0', 'aria-label': 'Execution output' });
  ctx.onCleanup(() => stopOutput());

  function stopOutput() {
    if (output.stream) output.stream.close();
    output.stream = null;
    clearInterval(output.poll);
    output.poll = 0;
  }

  function closeOutput() {
    stopOutput();
    const id = state.selected;
    state.selected = '';
    output.id = '';
    outputSection.hidden = true;
    syncQuery();
    renderExecutions();
    const opener = execTbody.querySelector(`[data-key="${CSS.escape(`out-${id}`)}"]`);
    if (opener) opener.focus();
  }

  function selectExecution(id, { focus }) {
    state.selected = id;
    outputSection.hidden = false;
    syncQuery();
    renderExecutions();
    openOutput(id, { focus });
  }

  function setOutput(text) {
    output.text = text.length > MAX_OUTPUT_CHARS ? text.slice(-MAX_OUTPUT_CHARS) : text;
    pre.textContent = output.text;
    pre.classList.toggle('output-empty', !output.text);
    if (!output.text) pre.textContent = isRunning(output.status) ? 'Waiting for output…' : '(no output)';
  }

  function appendOutput(chunk) {
    const nearBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
    if (!output.text || output.text.length + chunk.length > MAX_OUTPUT_CHARS) {
      setOutput(output.text + chunk);
    } else {
      output.text += chunk;
      pre.append(chunk);
    }
    if (nearBottom) pre.scrollTop = pre.scrollHeight;
  }

  async function openOutput(id, { focus = false } = {}) {
    stopOutput();
    output.id = id;
    output.status = '';
    outputSection.hidden = false;
    placeOutput();
    append(clear(outputSection), h('div', { class: 'card-head' }, h('h2', { id: 'output-h', tabindex: '-1' }, 'Output')), spinner('Loading the output…'));
    if (focus) {
      outputSection.scrollIntoView({ block: 'nearest' });
      outputSection.querySelector('h2').focus({ preventScroll: true });
    }
    let e;
    try {
      e = await api.get(execPath(name, id), {}, opts);
    } catch (error) {
      if (error.name === 'AbortError' || output.id !== id) return;
      append(clear(outputSection), h('div', { class: 'card-head' }, h('h2', { id: 'output-h' }, 'Output')), errorBox(error, () => openOutput(id)));
      return;
    }
    if (output.id !== id) return;
    output.status = executionStatus(e);
    renderOutputPanel(e, focus);
    setOutput(e.output || '');
    if (isRunning(output.status)) startStream(e);
  }

  function renderOutputPanel(e, focus) {
    const status = executionStatus(e);
    const exit = e.exit_code !== null && e.exit_code !== undefined ? `exit code ${e.exit_code}` : '';
    const headingId = 'output-h';
    const wrapBtn = h('button', {
      type: 'button', class: 'btn btn-ghost btn-small', 'aria-pressed': String(output.wrap), dataset: { key: 'wrap' },
      onclick: () => {
        output.wrap = !output.wrap;
        wrapBtn.setAttribute('aria-pressed', String(output.wrap));
        pre.classList.toggle('nowrap', !output.wrap);
      },
    }, icon('wrap'), h('span', {}, 'Wrap lines'));
    pre.classList.toggle('nowrap', !output.wrap);
    const copyBtn = button('Copy', { iconName: 'copy', kind: 'ghost', class: 'btn btn-ghost btn-small', onclick: async () => {
      try {
        await navigator.clipboard.writeText(output.text);
        toast('Output copied.', 'ok');
      } catch {
        toast('Copying is not allowed here; select the text instead.', 'warn');
      }
    } });
    const liveEl = h('span', { class: 'live-indicator', id: 'live-indicator', hidden: !isRunning(status) }, h('span', { class: 'live-dot', 'aria-hidden': 'true' }), 'Live');
    keepFocus(outputSection, () => {
      append(clear(outputSection),
        h('div', { class: 'card-head output-head' },
          h('div', {},
            h('h2', { id: headingId, tabindex: '-1' }, `Output of attempt ${e.attempt || 1}${e.node_name ? ` on ${e.node_name}` : ''}`),
            h('p', { class: 'muted small mono' }, e.id)),
          h('div', { class: 'actions' },
            isRunning(status) && can('operator') ? button('Kill', { iconName: 'stop', kind: 'danger', class: 'btn btn-danger btn-small', onclick: () => kill(e), dataset: { key: 'panel-kill' } }) : null,
            wrapBtn, copyBtn,
            h('button', { type: 'button', class: 'btn btn-ghost btn-small', onclick: closeOutput, dataset: { key: 'close' } }, icon('x'), h('span', {}, 'Close')))),
        h('div', { class: 'output-meta', id: 'output-meta' },
          h('span', { id: 'output-status' }, statusBadge(status, exit)), liveEl,
          h('span', {}, 'Started ', timeAgo(e.started_at, { withAbs: true, empty: 'not yet' })),
          h('span', {}, 'Duration ', executionDuration(e)),
          e.reason ? h('span', { class: 'text-bad' }, e.reason) : null),
        pre);
    });
    if (focus) outputSection.querySelector('h2').focus({ preventScroll: true });
  }

  function startStream(e) {
    const es = new EventSource(streamUrl(name, e.id));
    output.stream = es;
    es.addEventListener('open', () => {
      // Every (re)connection starts with all the output so far.
      if (output.stream === es) setOutput('');
    });
    es.addEventListener('output', (event) => {
      if (output.stream !== es) return;
      appendOutput(JSON.parse(event.data));
    });
    es.addEventListener('end', async (event) => {
      es.close();
      if (output.stream !== es) return;
      output.stream = null;
      const end = JSON.parse(event.data);
      output.status = end.status;
      announce(`The execution ${STATUS_WORDS[end.status] || `ended (${end.status})`}${end.exit_code !== null && end.exit_code !== undefined ? `, exit code ${end.exit_code}` : ''}.`);
      try {
        const final = await api.get(execPath(name, e.id), {}, opts);
        if (output.id !== e.id) return;
        renderOutputPanel(final, false);
        if ((final.output || '').length >= output.text.length) setOutput(final.output || '');
      } catch (error) {
        if (error.name !== 'AbortError') console.warn('final record unavailable', error);
      }
      refresh();
    });
    es.addEventListener('error', () => {
      if (output.stream !== es || es.readyState !== EventSource.CLOSED) return; // CONNECTING: it retries by itself
      output.stream = null;
      pollOutput(e); // refused (auth, no leader): fall back to polling the running executions
    });
  }

  function pollOutput(e) {
    const note = h('p', { class: 'muted small' }, 'Live stream unavailable; refreshing every 2 seconds.');
    outputSection.querySelector('#output-meta')?.append(note);
    const tick = async () => {
      try {
        const { items } = await api.list('/v1/busy', {}, opts);
        const running = items.find((x) => x.id === e.id);
        if (running) {
          if ((running.output || '') !== output.text) setOutput(running.output || '');
          return;
        }
        clearInterval(output.poll);
        output.poll = 0;
        if (output.id === e.id) openOutput(e.id);
      } catch (error) {
        if (error.name !== 'AbortError') note.textContent = `Live output unavailable: ${error.message}`;
      }
    };
    output.poll = setInterval(tick, 2000);
    tick();
  }

  // ---- actions ----

  async function runNow() {
    try {
      await api.post(`${jobPath(name)}/run`);
      toast(`Run requested for ${name}.`, 'ok');
      state.followSince = Date.now();
      if (state.page !== 1) {
        state.page = 1;
        syncQuery();
      }
      refresh();
    } catch (error) {
      toastError('Run', error);
    }
  }

  async function toggle() {
    try {
      job = await api.post(`${jobPath(name)}/toggle`);
      toast(job.disabled ? `${name} is disabled: it will not run on schedule.` : `${name} is enabled.`, 'ok');
      renderHead();
      renderDefinition();
      renderSchedule();
    } catch (error) {
      toastError('Toggle', error);
    }
  }

  async function kill(e) {
    const ok = await confirmDialog({
      title: 'Kill this execution?',
      body: h('p', {}, `The process group on ${e.node_name || 'its executor'} gets SIGTERM, then SIGKILL after a grace period.`),
      confirmLabel: 'Kill',
      danger: true,
    });
    if (!ok) return;
    try {
      await api.post(`${execPath(name, e.id)}/kill`);
      toast('Kill requested.', 'ok');
      refresh();
    } catch (error) {
      toastError('Kill', error);
    }
  }

  async function clearHistory() {
    const ok = await confirmDialog({
      title: 'Clear the history?',
      body: h('p', {}, `Every finished execution of ${name} is deleted and its counters reset. Running executions keep going.`),
      confirmLabel: 'Clear history',
      danger: true,
    });
    if (!ok) return;
    try {
      job = await api.del(`${jobPath(name)}/executions`);
      toast('History cleared.', 'ok');
      state.page = 1;
      if (state.selected) closeOutput();
      renderHead();
      renderDefinition();
      await loadExecutions();
    } catch (error) {
      toastError('Clearing the history', error);
    }
  }

  async function remove() {
    const dependents = job.dependent_jobs || [];
    if (dependents.length) {
      // The gateway refuses (409) while children exist: say so, and offer no button that would fail.
      await confirmDialog({
        title: `${name} cannot be deleted yet`,
        body: h('div', {}, h('p', {}, `It has ${plural(dependents.length, 'dependent job')}, which ${dependents.length === 1 ? 'runs' : 'run'} after it. Delete them first, or make them run after another job:`),
          h('ul', { class: 'name-list' }, dependents.map((d) => h('li', {}, h('a', { class: 'mono', href: jobHref(d) }, d))))),
        confirmLabel: '',
      });
      return;
    }
    const ok = await confirmDialog({
      title: `Delete ${name}?`,
      body: h('p', {}, 'The job and its execution history are removed. This cannot be undone.'),
      confirmLabel: 'Delete job',
      danger: true,
    });
    if (!ok) return;
    try {
      await api.del(jobPath(name));
      toast(`Deleted ${name}.`, 'ok');
      location.hash = '#/jobs';
    } catch (error) {
      toastError('Delete', error);
    }
  }

  async function refresh() {
    try {
      const fresh = await api.get(jobPath(name), {}, opts);
      const scheduleChanged = fresh.schedule !== job.schedule || fresh.timezone !== job.timezone || fresh.disabled !== job.disabled;
      const changed = JSON.stringify(fresh) !== JSON.stringify(job);
      job = fresh;
      if (changed) { // a run that ended changes the counters: the chart and the chain's statuses follow
        renderHead();
        renderDefinition();
        renderRelations();
      }
      if (scheduleChanged) renderSchedule();
      await loadExecutions();
    } catch (error) {
      if (error.name === 'AbortError' || error.status === 401) return;
      if (error.status === 404) {
        toast(`${name} was deleted.`, 'warn');
        location.hash = '#/jobs';
      }
    }
  }

  renderHead();
  renderDefinition();
  renderSchedule();
  renderRelations();
  try {
    await loadExecutions();
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    append(clear(execTbody), h('tr', {}, h('td', { colspan: 7 }, errorBox(error, refresh))));
  }
  if (state.selected) openOutput(state.selected);
  ctx.every(3000, refresh);
}

function breadcrumbs(name) {
  return h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
    h('ol', {}, h('li', {}, h('a', { href: '#/jobs' }, 'Jobs')), h('li', { 'aria-current': 'page' }, name)));
}

/** Fire times in the job's zone and the viewer's (one column when they are the same). */
export function firesTable(fires, zone, { disabled = false } = {}) {
  if (!fires || !fires.length) return h('p', { class: 'muted' }, 'No upcoming runs (the schedule has no future fire time).');
  const same = (zone || 'UTC') === viewerZone;
  return h('div', {},
    disabled ? h('p', { class: 'alert alert-warn small' }, icon('power'), 'Disabled: it will not run at these times until enabled.') : null,
    h('div', { class: 'table-wrap' }, h('table', { class: 'table fires responsive' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, same ? `Time (${zone})` : `Job’s zone (${zone})`),
        same ? null : h('th', { scope: 'col' }, `Your zone (${viewerZone})`),
        h('th', { scope: 'col' }, 'When'))),
      h('tbody', {}, fires.map((t) => h('tr', {},
        h('td', { class: 'tabular', 'data-label': same ? zone : 'Job’s zone' }, absTime(t, zone, { compact: true })),
        same ? null : h('td', { class: 'tabular', 'data-label': 'Your zone' }, absTime(t, viewerZone, { compact: true })),
        h('td', { 'data-label': 'When' }, timeAgo(t))))))));
}
