// Jobs list: search, filters, sorting and pages done by the API (_start/_end/_sort/_order, X-Total-Count), so
// it stays fast with any number of jobs; bulk run, enable/disable and delete.

import { api, can, jobPath } from '../api.js';
import { describeSchedule } from '../cron.js';
import { loadPause } from '../pause.js';
import {
  announce, append, button, clear, confirmDialog, debounce, emptyState, errorBox, fmtNumber, h, icon, keepFocus,
  linkButton, plural, pool, spinner, statusBadge, timeAgo, toast,
} from '../dom.js';

const PAGE_SIZES = [25, 50, 100];
const STATUSES = [
  ['', 'Any status'], ['success', 'Succeeded'], ['failed', 'Failed'], ['partially_failed', 'Partly failed'],
  ['running', 'Running'], ['untriggered', 'Never run'],
];
const COLUMNS = [
  { key: 'name', label: 'Name', sort: 'name', first: 'ASC' },
  { key: 'status', label: 'Status' },
  { key: 'schedule', label: 'Schedule', sort: 'schedule', first: 'ASC' },
  { key: 'next', label: 'Next run', sort: 'next', first: 'ASC' },
  { key: 'last_success', label: 'Last success', sort: 'last_success', first: 'DESC' },
  { key: 'last_error', label: 'Last failure', sort: 'last_error', first: 'DESC' },
  { key: 'success_count', label: 'Succeeded', sort: 'success_count', first: 'DESC', num: true },
  { key: 'error_count', label: 'Failed', sort: 'error_count', first: 'DESC', num: true },
];
const SORTS = new Set(COLUMNS.filter((c) => c.sort).map((c) => c.sort));

function readState(query) {
  const size = Number(query.get('size'));
  const page = Number(query.get('page'));
  const sort = query.get('sort') || 'name';
  return {
    q: query.get('q') || '',
    status: query.get('status') || '',
    disabled: ['true', 'false'].includes(query.get('disabled')) ? query.get('disabled') : '',
    meta: query.get('meta') || '',
    sort: SORTS.has(sort) ? sort : 'name',
    order: query.get('order') === 'DESC' ? 'DESC' : 'ASC',
    page: Number.isInteger(page) && page > 0 ? page : 1,
    size: PAGE_SIZES.includes(size) ? size : 25,
  };
}

/** "team=data, env=prod" → {team: "data", env: "prod"}; throws on an entry without "=". */
function parseMeta(text) {
  const out = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf('=');
    if (at <= 0) throw new Error(`"${part}" is not key=value`);
    out[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return out;
}

export async function render(ctx) {
  document.title = 'Jobs · cronbus';
  const state = readState(ctx.query);
  const selection = new Map(); // name -> job as last seen, kept across pages
  let rows = [];
  let total = 0;
  let loadSeq = 0;
  let inflight = null;

  // ---- filters ----
  const search = h('input', { id: 'job-search', type: 'search', value: state.q, placeholder: 'Name or display name', autocomplete: 'off', spellcheck: 'false' });
  const statusSel = h('select', { id: 'job-status' }, STATUSES.map(([v, l]) => h('option', { value: v, selected: v === state.status }, l)));
  const disabledSel = h('select', { id: 'job-disabled' },
    [['', 'Enabled and disabled'], ['false', 'Enabled only'], ['true', 'Disabled only']]
      .map(([v, l]) => h('option', { value: v, selected: v === state.disabled }, l)));
  const metaInput = h('input', { id: 'job-meta', value: state.meta, placeholder: 'team=data, env=prod', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'job-meta-error' });
  const metaError = h('p', { class: 'field-error', id: 'job-meta-error', hidden: true });
  const clearBtn = button('Clear filters', { iconName: 'x', kind: 'ghost', onclick: () => {
    search.value = '';
    statusSel.value = '';
    disabledSel.value = '';
    metaInput.value = '';
    applyFilters();
    search.focus();
  } });
  const filters = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs', onsubmit: (e) => { e.preventDefault(); applyFilters(); } },
    h('div', { class: 'field field-search' }, h('label', { for: 'job-search' }, 'Search'),
      h('div', { class: 'input-icon' }, icon('search'), search)),
    h('div', { class: 'field' }, h('label', { for: 'job-status' }, 'Status'), statusSel),
    h('div', { class: 'field' }, h('label', { for: 'job-disabled' }, 'Enabled'), disabledSel),
    h('div', { class: 'field field-meta' }, h('label', { for: 'job-meta' }, 'Metadata'), metaInput, metaError),
    h('div', { class: 'field field-end' }, clearBtn));

  // ---- table ----
  const summary = h('p', { class: 'muted summary', id: 'jobs-summary' }, ' ');
  const selectAll = h('input', { type: 'checkbox', 'aria-label': 'Select every job on this page', dataset: { key: 'select-all' }, onchange: () => {
    for (const job of rows) {
      if (selectAll.checked) selection.set(job.name, job);
      else selection.delete(job.name);
    }
    renderRows();
    renderBulk();
  } });
  const headRow = h('tr');
  const tbody = h('tbody');
  const table = h('table', { class: 'table responsive jobs-table', 'aria-describedby': 'jobs-summary' },
    h('caption', { class: 'sr-only' }, 'Jobs'), h('thead', {}, headRow), tbody);
  const bodySlot = h('div', { class: 'table-wrap' }, table);
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of jobs' });
  const bulkBar = h('div', { class: 'bulkbar', role: 'region', 'aria-label': 'Bulk actions', hidden: true });
  const pageSize = h('select', { id: 'job-size', onchange: () => {
    state.size = Number(pageSize.value);
    state.page = 1;
    load({ user: true });
  } }, PAGE_SIZES.map((n) => h('option', { value: String(n), selected: n === state.size }, `${n} per page`)));

  append(ctx.main, h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Jobs'),
      h('div', { class: 'actions' }, can('admin') ? linkButton('New job', '#/jobs/new', { iconName: 'plus', kind: 'primary' }) : null)),
    filters,
    h('div', { class: 'list-tools' }, summary, h('label', { class: 'sr-only', for: 'job-size' }, 'Jobs per page'), pageSize),
    bulkBar,
    h('div', { class: 'card card-flush' }, bodySlot),
    pager));

  function renderHead() {
    keepFocus(headRow, () => append(clear(headRow),
      h('th', { class: 'col-check', scope: 'col' }, selectAll),
      COLUMNS.map((c) => {
        if (!c.sort) return h('th', { scope: 'col' }, c.label);
        const active = state.sort === c.sort;
        const ariaSort = active ? (state.order === 'ASC' ? 'ascending' : 'descending') : 'none';
        return h('th', { scope: 'col', 'aria-sort': ariaSort, class: c.num ? 'num' : '' },
          h('button', { type: 'button', class: `sort${active ? ' sort-active' : ''}`, onclick: () => {
            if (active) state.order = state.order === 'ASC' ? 'DESC' : 'ASC';
            else Object.assign(state, { sort: c.sort, order: c.first });
            state.page = 1;
            load({ user: true });
          }, dataset: { key: `sort-${c.sort}` } }, c.label, h('span', { class: 'sort-arrow', 'aria-hidden': 'true' }, active ? (state.order === 'ASC' ? '▲' : '▼') : '↕')));
      }),
      h('th', { scope: 'col', class: 'col-actions' }, h('span', { class: 'sr-only' }, 'Actions'))));
  }

  function renderRows() {
    keepFocus(tbody, () => fillRows());
    syncSelectAll();
  }

  function fillRows() {
    clear(tbody);
    for (const job of rows) {
      const href = `#/jobs/${encodeURIComponent(job.name)}`;
      const checkbox = h('input', { type: 'checkbox', checked: selection.has(job.name), 'aria-label': `Select ${job.name}`, dataset: { key: `sel-${job.name}` }, onchange: () => {
        if (checkbox.checked) selection.set(job.name, job);
        else selection.delete(job.name);
        renderBulk();
        syncSelectAll();
      } });
      const words = describeSchedule(job.schedule, { parentJob: job.parent_job });
      tbody.append(h('tr', { dataset: { job: job.name }, class: job.disabled ? 'row-disabled' : '' },
        h('td', { class: 'col-check' }, checkbox),
        h('td', { class: 'col-name', 'data-label': 'Name' },
          h('a', { href, class: 'job-link' }, job.displayname || job.name),
          job.displayname ? h('span', { class: 'mono muted small' }, job.name) : null,
          job.disabled ? h('span', { class: 'badge badge-neutral' }, icon('power'), 'Disabled') : null),
        h('td', { 'data-label': 'Status' }, statusBadge(job.status)),
        h('td', { 'data-label': 'Schedule' },
          job.schedule ? h('code', {}, job.schedule) : h('span', { class: 'muted' }, job.parent_job ? `after ${job.parent_job}` : '—'),
          words && job.schedule ? h('span', { class: 'muted small block' }, words) : null),
        h('td', { 'data-label': 'Next run' }, timeAgo(job.next, { zone: job.timezone, empty: job.disabled ? 'disabled' : '—' })),
        h('td', { 'data-label': 'Last success' }, timeAgo(job.last_success, { empty: 'never' })),
        h('td', { 'data-label': 'Last failure' }, timeAgo(job.last_error, { empty: 'never' })),
        h('td', { class: 'num', 'data-label': 'Succeeded' }, fmtNumber(job.success_count || 0)),
        h('td', { class: `num${job.error_count ? ' text-bad' : ''}`, 'data-label': 'Failed' }, fmtNumber(job.error_count || 0)),
        h('td', { class: 'col-actions' }, can('operator')
          ? h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': `Run ${job.name} now`, title: 'Run now', dataset: { key: `run-${job.name}` },
            onclick: () => runJobs([job.name]) }, icon('play'))
          : null)));
    }
  }

  function syncSelectAll() {
    const onPage = rows.filter((j) => selection.has(j.name)).length;
    selectAll.checked = rows.length > 0 && onPage === rows.length;
    selectAll.indeterminate = onPage > 0 && onPage < rows.length;
    selectAll.disabled = rows.length === 0;
  }

  function renderBulk() {
    clear(bulkBar);
    bulkBar.hidden = selection.size === 0;
    if (!selection.size) return;
    const names = [...selection.keys()];
    append(bulkBar,
      h('strong', {}, `${plural(selection.size, 'job')} selected`),
      h('div', { class: 'actions' },
        can('operator') ? button('Run', { iconName: 'play', onclick: () => runJobs(names) }) : null,
        can('operator') ? button('Enable', { iconName: 'power', onclick: () => setEnabled(names, true) }) : null,
        can('operator') ? button('Disable', { iconName: 'power', onclick: () => setEnabled(names, false) }) : null,
        can('admin') ? button('Delete', { iconName: 'trash', kind: 'danger', onclick: () => deleteJobs(names) }) : null,
        button('Clear selection', { iconName: 'x', kind: 'ghost', onclick: () => {
          selection.clear();
          renderRows();
          renderBulk();
          selectAll.focus();
        } })));
  }

  function renderPager() {
    const pages = Math.max(1, Math.ceil(total / state.size));
    const go = (page) => () => {
      state.page = page;
      load({ user: true });
    };
    const nav = (label, iconName, page, disabled) => h('button', { type: 'button', class: 'btn btn-icon', 'aria-label': label, title: label, disabled, onclick: go(page), dataset: { key: label } }, icon(iconName));
    keepFocus(pager, () => append(clear(pager),
      nav('First page', 'first', 1, state.page <= 1),
      nav('Previous page', 'left', state.page - 1, state.page <= 1),
      h('span', { class: 'pager-label' }, `Page ${fmtNumber(state.page)} of ${fmtNumber(pages)}`),
      nav('Next page', 'right', state.page + 1, state.page >= pages),
      nav('Last page', 'last', pages, state.page >= pages)));
    pager.hidden = total <= state.size && state.page === 1;
  }

  function filtersActive() {
    return Boolean(state.q || state.status || state.disabled || state.meta);
  }

  function applyFilters() {
    let meta = {};
    try {
      meta = parseMeta(metaInput.value);
      metaError.hidden = true;
      metaInput.removeAttribute('aria-invalid');
    } catch (error) {
      metaError.textContent = `Metadata: ${error.message}. Use key=value, separated by commas.`;
      metaError.hidden = false;
      metaInput.setAttribute('aria-invalid', 'true');
      return;
    }
    Object.assign(state, { q: search.value.trim(), status: statusSel.value, disabled: disabledSel.value, meta: metaInput.value.trim(), page: 1 });
    state.metaObj = meta;
    load({ user: true });
  }
  const debouncedFilters = debounce(applyFilters, 250);
  search.addEventListener('input', debouncedFilters);
  metaInput.addEventListener('input', debouncedFilters);
  statusSel.addEventListener('change', applyFilters);
  disabledSel.addEventListener('change', applyFilters);
  ctx.onCleanup(() => debouncedFilters.cancel());

  async function load({ user = false } = {}) {
    const seq = ++loadSeq;
    if (inflight) inflight.abort();
    inflight = new AbortController();
    const signal = AbortSignal.any ? AbortSignal.any([ctx.signal, inflight.signal]) : inflight.signal;
    ctx.setQuery({
      q: state.q, status: state.status, disabled: state.disabled, meta: state.meta,
      sort: state.sort === 'name' ? '' : state.sort, order: state.order === 'ASC' ? '' : state.order,
      page: state.page === 1 ? '' : state.page, size: state.size === 25 ? '' : state.size,
    });
    clearBtn.hidden = !filtersActive();
    renderHead();
    table.setAttribute('aria-busy', 'true');
    bodySlot.classList.add('is-loading');
    if (!rows.length && !tbody.firstChild) tbody.append(h('tr', {}, h('td', { colspan: COLUMNS.length + 2 }, spinner('Loading jobs…'))));
    const query = { _sort: state.sort, _order: state.order, _start: (state.page - 1) * state.size, _end: state.page * state.size };
    if (state.q) query.q = state.q;
    if (state.status) query.status = state.status;
    if (state.disabled) query.disabled = state.disabled;
    for (const [k, v] of Object.entries(state.metaObj || {})) query[`metadata[${k}]`] = v;
    try {
      const result = await api.list('/v1/jobs', query, { signal });
      if (seq !== loadSeq) return;
      total = result.total;
      rows = result.items;
      const pages = Math.max(1, Math.ceil(total / state.size));
      if (state.page > pages) {
        state.page = pages;
        load({ user });
        return;
      }
      // Keep selected jobs' view of themselves fresh (their disabled flag decides enable/disable).
      for (const job of rows) if (selection.has(job.name)) selection.set(job.name, job);
      renderBody();
      renderPager();
      renderBulk();
      const first = total ? (state.page - 1) * state.size + 1 : 0;
      const last = Math.min(total, state.page * state.size);
      summary.textContent = total ? `Showing ${fmtNumber(first)}–${fmtNumber(last)} of ${plural(total, 'job')}` : 'No jobs to show';
      if (user) announce(summary.textContent);
    } catch (error) {
      if (error.name === 'AbortError' || seq !== loadSeq || error.status === 401) return;
      append(clear(tbody), h('tr', {}, h('td', { colspan: COLUMNS.length + 2 }, errorBox(error, () => load({ user: true })))));
    } finally {
      if (seq === loadSeq) {
        table.removeAttribute('aria-busy');
        bodySlot.classList.remove('is-loading');
      }
    }
  }

  function renderBody() {
    if (rows.length) {
      renderRows();
      return;
    }
    clear(tbody);
    syncSelectAll();
    const cell = h('td', { colspan: COLUMNS.length + 2 });
    tbody.append(h('tr', { class: 'row-empty' }, cell));
    if (filtersActive()) {
      cell.append(emptyState('search', 'No jobs match these filters', 'Try another search, or clear the filters.', button('Clear filters', { onclick: () => clearBtn.click() })));
    } else {
      cell.append(emptyState('inbox', 'No jobs yet', 'Jobs you create run on your executors on their schedule.',
        can('admin') ? linkButton('Create your first job', '#/jobs/new', { iconName: 'plus', kind: 'primary' }) : null));
    }
  }

  // ---- actions ----

  function report(verb, results) {
    const failed = results.filter((r) => !r.ok);
    const done = results.length - failed.length;
    if (!failed.length) {
      toast(`${verb}: ${plural(done, 'job')}.`, 'ok');
      return;
    }
    const first = failed.slice(0, 3).map((r) => `${r.item}: ${r.error.message}`).join('; ');
    toast(`${verb}: ${done} of ${results.length} done. Failed ${first}${failed.length > 3 ? ` and ${failed.length - 3} more` : ''}.`, 'bad');
  }

  async function runJobs(names) {
    const results = await pool(names, 4, (name) => api.post(`${jobPath(name)}/run`));
    report(names.length === 1 ? `Run requested for ${names[0]}` : 'Runs requested', results);
    await load();
  }

  async function setEnabled(names, enable) {
    const todo = names.filter((n) => Boolean(selection.get(n)?.disabled) === enable);
    if (!todo.length) {
      toast(`Every selected job is already ${enable ? 'enabled' : 'disabled'}.`, 'info');
      return;
    }
    const results = await pool(todo, 4, (name) => api.post(`${jobPath(name)}/toggle`));
    for (const r of results) if (r.ok) selection.set(r.item, r.value);
    report(enable ? 'Enabled' : 'Disabled', results);
    await load();
  }

  async function deleteJobs(names) {
    const shown = names.slice(0, 8);
    const ok = await confirmDialog({
      title: `Delete ${plural(names.length, 'job')}?`,
      body: h('div', {}, h('p', {}, 'Their definitions and execution history are removed. This cannot be undone.'),
        h('ul', { class: 'name-list' }, shown.map((n) => h('li', { class: 'mono' }, n)),
          names.length > shown.length ? h('li', { class: 'muted' }, `and ${names.length - shown.length} more`) : null)),
      confirmLabel: `Delete ${plural(names.length, 'job')}`,
      danger: true,
    });
    if (!ok) return;
    let results = await pool(names, 4, (name) => api.del(jobPath(name)));
    // A parent refuses deletion while its children exist: once they are gone, try it again.
    const blocked = results.filter((r) => !r.ok && r.error.status === 409).map((r) => r.item);
    if (blocked.length && blocked.length < results.length) {
      const retried = await pool(blocked, 4, (name) => api.del(jobPath(name)));
      results = results.map((r) => retried.find((x) => x.item === r.item) || r);
    }
    for (const r of results) if (r.ok) selection.delete(r.item);
    report('Deleted', results);
    renderBulk();
    await load();
  }

  state.metaObj = (() => {
    try {
      return parseMeta(state.meta);
    } catch {
      return {};
    }
  })();
  await load();
  ctx.every(10000, () => {
    load();
    loadPause({ signal: ctx.signal }).catch(() => {});
  });
}
