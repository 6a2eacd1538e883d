// Dashboard: job totals (counted by the API, never by listing every job), the leader and healthy executors,
// recent failures, and an SVG chart of executions per day (GET /v1/stats).

import { api, can } from '../api.js';
import { loadPause } from '../pause.js';
import {
  append, clear, emptyState, errorBox, fmtNumber, h, icon, keepFocus, kvChips, linkButton, parseTime, spinner,
  statusBadge, svg, timeAgo,
} from '../dom.js';

const DAYS = 14;

const TOTALS = [
  { key: 'all', label: 'Jobs', query: {}, href: '#/jobs', tone: '' },
  { key: 'success', label: 'Succeeded', query: { status: 'success' }, href: '#/jobs?status=success', tone: 'ok', iconName: 'okCircle' },
  { key: 'failed', label: 'Failed', query: { status: 'failed' }, href: '#/jobs?status=failed', tone: 'bad', iconName: 'badCircle' },
  { key: 'untriggered', label: 'Never run', query: { status: 'untriggered' }, href: '#/jobs?status=untriggered', tone: 'neutral', iconName: 'minus' },
  { key: 'running', label: 'Running now', query: { status: 'running' }, href: '#/busy', tone: 'info', iconName: 'dot' },
];

export async function render(ctx) {
  document.title = 'Dashboard · cronbus';
  const totalsEl = h('section', { class: 'stats', 'aria-labelledby': 'totals-h' },
    h('h2', { id: 'totals-h', class: 'sr-only' }, 'Totals'),
    TOTALS.map((t) => h('a', { class: `stat stat-${t.tone || 'plain'}`, href: t.href, dataset: { stat: t.key } },
      h('span', { class: 'stat-label' }, t.iconName ? icon(t.iconName) : icon('list'), t.label),
      h('span', { class: 'stat-value' }, '…'),
      h('span', { class: 'stat-note' }, ''))));
  const clusterBody = h('div', { class: 'card-body' }, spinner('Loading the cluster…'));
  const failuresBody = h('div', { class: 'card-body' }, spinner('Loading failures…'));
  const chartBody = h('div', { class: 'card-body' }, spinner('Loading executions…'));
  const chartNote = h('p', { class: 'card-note muted' });
  const newJob = can('admin') ? linkButton('New job', '#/jobs/new', { iconName: 'plus', kind: 'primary' }) : null;

  append(ctx.main, h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Dashboard'), h('div', { class: 'actions' }, newJob)),
    totalsEl,
    h('div', { class: 'grid-2' },
      h('section', { class: 'card', 'aria-labelledby': 'cluster-h' },
        h('div', { class: 'card-head' }, h('h2', { id: 'cluster-h' }, 'Cluster'), h('a', { href: '#/executors' }, 'All members')),
        clusterBody),
      h('section', { class: 'card', 'aria-labelledby': 'failures-h' },
        h('div', { class: 'card-head' }, h('h2', { id: 'failures-h' }, 'Recent failures'),
          h('div', { class: 'card-links' },
            h('a', { href: '#/executions?status=failed%2Ctimeout%2Ckilled&range=24h', dataset: { key: 'failed-runs' } }, 'Failed runs, 24 h'),
            h('a', { href: '#/jobs?status=failed&sort=last_error&order=DESC' }, 'Failing jobs'))),
        failuresBody)),
    h('section', { class: 'card', 'aria-labelledby': 'chart-h' },
      h('div', { class: 'card-head' }, h('h2', { id: 'chart-h' }, `Executions, last ${DAYS} days`)),
      chartBody, chartNote)));

  const opts = { signal: ctx.signal };

  // One request for the totals and the chart: GET /v1/stats (its `jobs` counts are cronbus's), whatever the
  // number of jobs. With the cluster, the failures and the pause state, a refresh is four requests.
  async function loadStats() {
    const stats = await api.get('/v1/stats', { days: DAYS }, opts);
    showTotals(stats.jobs || {});
    chartData = {
      buckets: (stats.stats || []).map((d) => ({ start: parseTime(d.date).getTime(), success: d.success_count || 0, failed: d.failed_count || 0 })),
      note: 'Runs that finished each day (UTC), counted by the cluster as they end; missed and skipped slots are not runs.',
    };
    drawChart();
  }

  function showTotals(jobs) {
    const { total: all = 0, success = 0, failed = 0, untriggered: never = 0, running = 0, partially_failed: partial = 0, disabled = 0 } = jobs;
    const values = { all, success, failed: failed + partial, untriggered: never, running };
    const notes = {
      all: disabled ? `${fmtNumber(disabled)} disabled` : 'all enabled',
      failed: partial ? `${fmtNumber(partial)} partly` : 'last run failed',
      success: 'last run succeeded',
      untriggered: 'no execution yet',
      running: running === 1 ? 'job running' : 'jobs running',
    };
    for (const el of totalsEl.querySelectorAll('[data-stat]')) {
      el.querySelector('.stat-value').textContent = fmtNumber(values[el.dataset.stat]);
      el.querySelector('.stat-note').textContent = notes[el.dataset.stat];
    }
  }

  async function loadCluster() {
    const members = await api.list('/v1/members', {}, opts);
    const leader = members.items.find((m) => m.Tags && m.Tags.role === 'scheduler' && m.Tags.leader === 'true');
    const executors = members.items.filter((m) => m.Tags && m.Tags.role === 'executor');
    const healthy = executors.filter((m) => m.Status === 1);
    const leaderEl = leader
      ? h('p', { class: 'leader-line' }, h('span', { class: 'badge badge-ok' }, icon('crown'), 'Leader'), h('strong', {}, leader.Name),
        h('span', { class: 'muted' }, `${leader.Addr}${leader.Port ? `:${leader.Port}` : ''}`))
      : h('div', { class: 'alert alert-bad' }, icon('warn'), h('p', {}, 'No scheduler leads: nothing is being scheduled.'));
    const list = healthy.length
      ? h('ul', { class: 'plain-list' }, healthy.map((m) => h('li', { class: 'member-line' },
        h('span', { class: 'badge badge-ok' }, icon('okCircle'), 'Healthy'),
        h('strong', {}, m.Tags.node || m.Name),
        Object.keys(m.Tags).some((k) => !['role', 'node', 'hostname', 'dc', 'leader'].includes(k))
          ? kvChips(m.Tags, { skip: ['role', 'node', 'hostname', 'dc', 'leader'] }) : null)))
      : h('div', { class: 'alert alert-bad' }, icon('warn'), h('p', {}, 'No healthy executor: runs cannot start.'));
    append(clear(clusterBody), leaderEl,
      h('h3', { class: 'sub-h' }, `Healthy executors: ${healthy.length} of ${executors.length}`), list);
  }

  async function loadFailures() {
    const { items } = await api.list('/v1/jobs', { _sort: 'last_error', _order: 'DESC', _start: 0, _end: 6 }, opts);
    const failing = items.filter((j) => parseTime(j.last_error));
    keepFocus(failuresBody, () => renderFailures(failing));
  }

  function renderFailures(failing) {
    clear(failuresBody);
    if (!failing.length) {
      failuresBody.append(emptyState('okCircle', 'No failures', 'No job has failed yet.'));
      return;
    }
    failuresBody.append(h('ul', { class: 'plain-list failure-list' }, failing.map((j) => h('li', {},
      h('div', { class: 'failure-main' },
        h('a', { href: `#/jobs/${encodeURIComponent(j.name)}`, dataset: { key: `fail-${j.name}` } }, j.displayname || j.name),
        h('span', { class: 'muted' }, 'failed ', timeAgo(j.last_error))),
      h('div', { class: 'failure-side' }, h('span', { class: 'muted small' }, 'now'), statusBadge(j.status))))));
  }

  let chartData = null;
  let chartWidth = 0;
  const drawChart = () => {
    if (!chartData) return;
    chartWidth = chartBody.clientWidth;
    append(clear(chartBody), chart(chartData.buckets, chartWidth));
    chartNote.textContent = chartData.note;
  };
  // Drawn at the card's real width, so labels keep their size from phone to desktop.
  const resize = new ResizeObserver(() => {
    if (Math.abs(chartBody.clientWidth - chartWidth) > 24) drawChart();
  });
  resize.observe(chartBody);
  ctx.onCleanup(() => resize.disconnect());

  const guard = (body, fn) => fn().catch((error) => {
    if (error.name === 'AbortError' || error.status === 401) return;
    append(clear(body), errorBox(error));
  });
  const refresh = (first = false) => Promise.all([
    guard(chartBody, loadStats), first ? null : loadPause(opts).catch(() => {}), guard(clusterBody, loadCluster),
    guard(failuresBody, loadFailures),
  ]);
  await refresh(true); // the route has just read the pause state
  ctx.every(10000, refresh);
}

// ---- executions over time --------------------------------------------------------------------------------

const SERIES = [
  { key: 'success', label: 'Succeeded', cls: 'bar-ok' },
  { key: 'failed', label: 'Failed, killed or timed out', cls: 'bar-bad' },
];

function chart(buckets, available) {
  const total = buckets.reduce((n, b) => n + b.success + b.failed, 0);
  // The days are UTC days (the cluster counts them so): labelled in UTC, not shifted into the viewer's zone.
  const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });
  const legend = h('ul', { class: 'legend' }, SERIES.map((s) => h('li', {},
    h('span', { class: `swatch ${s.cls}`, 'aria-hidden': 'true' }), `${s.label}: ${fmtNumber(buckets.reduce((n, b) => n + b[s.key], 0))}`)));
  if (!total) {
    return h('div', {}, emptyState('activity', 'No executions in this period', 'Runs will show up here as they finish.'));
  }
  const max = Math.max(...buckets.map((b) => b.success + b.failed));
  const niceMax = niceCeil(max);
  const width = Math.max(280, Math.round(available || 720) - 2);
  const height = width < 500 ? 180 : 220;
  const pad = { left: 36, right: 6, top: 10, bottom: 26 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const slot = plotW / buckets.length;
  const barW = Math.max(4, slot * 0.64);
  const y = (v) => pad.top + plotH - (v / niceMax) * plotH;
  const ticks = [0, niceMax / 2, niceMax];
  const summary = `${fmtNumber(total)} executions in the last ${DAYS} days; the busiest day had ${fmtNumber(max)}.`;
  const chartSvg = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': summary },
    ticks.map((t) => [
      svg('line', { class: 'grid', x1: pad.left, x2: width - pad.right, y1: y(t), y2: y(t) }),
      svg('text', { class: 'axis', x: pad.left - 6, y: y(t) + 4, 'text-anchor': 'end' }, fmtNumber(Math.round(t))),
    ]),
    buckets.map((b, i) => {
      const x = pad.left + i * slot + (slot - barW) / 2;
      let base = 0;
      const rects = SERIES.map((s) => {
        const v = b[s.key];
        if (!v) return null;
        const rect = svg('rect', { class: s.cls, x, width: barW, y: y(base + v), height: Math.max(1, y(base) - y(base + v)), rx: 2 });
        base += v;
        return rect;
      });
      const label = `${dayFmt.format(new Date(b.start))} (UTC): ${b.success} succeeded, ${b.failed} failed`;
      const every = Math.max(1, Math.ceil(42 / slot));
      const showLabel = (buckets.length - 1 - i) % every === 0;
      return svg('g', {}, svg('title', {}, label), rects,
        svg('rect', { class: 'hit', x: pad.left + i * slot, width: slot, y: pad.top, height: plotH }),
        showLabel ? svg('text', { class: 'axis', x: pad.left + i * slot + slot / 2, y: height - 8, 'text-anchor': 'middle' },
          dayFmt.format(new Date(b.start))) : null);
    }));
  const table = h('div', { class: 'sr-only' }, h('table', {},
    h('caption', {}, 'Executions per day (UTC)'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Hour'), SERIES.map((s) => h('th', { scope: 'col' }, s.label)))),
    h('tbody', {}, buckets.map((b) => h('tr', {}, h('th', { scope: 'row' }, dayFmt.format(new Date(b.start))),
      SERIES.map((s) => h('td', {}, String(b[s.key]))))))));
  return h('figure', { class: 'chart-figure' }, chartSvg, h('figcaption', {}, legend, h('span', { class: 'muted small' }, 'Days in UTC')), table);
}

function niceCeil(v) {
  if (v <= 4) return 4;
  const magnitude = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= v) return step * magnitude;
  }
  return 10 * magnitude;
}

