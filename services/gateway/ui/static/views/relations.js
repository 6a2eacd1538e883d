// A job's relations and recent history on its page: the chain of parent and dependent jobs it belongs to, drawn as
// a tree from its first job, and a chart of its recent runs (duration and outcome over time).

import { api, jobPath } from '../api.js';
import { executionStatus, fmtDuration, fmtNumber, h, parseTime, plural, statusBadge, svg } from '../dom.js';

export const RECENT_RUNS = 50;
const MAX_CHAIN = 60; // jobs read to draw a chain: a bigger one is drawn in part, and says so
const OUTCOMES = [
  { key: 'ok', label: 'Succeeded', cls: 'bar-ok', statuses: ['success'] },
  { key: 'bad', label: 'Failed, killed or timed out', cls: 'bar-bad', statuses: ['failed', 'killed', 'timeout'] },
  { key: 'none', label: 'Missed or skipped', cls: 'bar-none', statuses: ['missed', 'skipped'] },
];

const jobHref = (name) => `#/jobs/${encodeURIComponent(name)}`;

/** The job's last RECENT_RUNS finished executions, oldest first.
 * @param {string} name
 * @param {{ signal?: AbortSignal }} opts */
export async function recentRuns(name, opts) {
  const { items } = await api.list(`${jobPath(name)}/executions`,
    { _start: 0, _end: RECENT_RUNS, output_size_limit: 0, status: 'success,failed,killed,timeout,missed,skipped' }, opts);
  return items.slice().reverse();
}

/** A bar per run, oldest on the left: its height the run's duration, its colour the outcome. */
export function runsChart(runs, available = 720) {
  if (!runs.length) return h('p', { class: 'muted' }, 'No finished run yet: the chart fills in as runs end.');
  const outcome = (e) => OUTCOMES.find((o) => o.statuses.includes(executionStatus(e))) || OUTCOMES[1];
  const duration = (e) => {
    const start = parseTime(e.started_at);
    const end = parseTime(e.finished_at);
    return start && end ? Math.max(0, end.getTime() - start.getTime()) : 0;
  };
  const durations = runs.map(duration);
  const longest = Math.max(...durations);
  const top = niceCeil(Math.max(longest, 1));
  const width = Math.max(280, Math.round(available) - 2);
  const height = 150;
  const pad = { left: 52, right: 6, top: 8, bottom: 8 };
  const plotH = height - pad.top - pad.bottom;
  const slot = (width - pad.left - pad.right) / RECENT_RUNS;
  const barW = Math.max(3, slot * 0.7);
  const y = (ms) => pad.top + plotH - (ms / top) * plotH;
  const counts = OUTCOMES.map((o) => runs.filter((e) => outcome(e) === o).length);
  const said = OUTCOMES.map((o, i) => (counts[i] ? `${counts[i]} ${o.label.toLowerCase()}` : '')).filter(Boolean).join(', ');
  const summary = `The last ${plural(runs.length, 'run')}: ${said}; the longest took ${fmtDuration(longest)}.`;
  const chart = svg('svg', { class: 'chart runs-chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': summary },
    [0, top / 2, top].map((t) => [
      svg('line', { class: 'grid', x1: pad.left, x2: width - pad.right, y1: y(t), y2: y(t) }),
      svg('text', { class: 'axis', x: pad.left - 6, y: y(t) + 4, 'text-anchor': 'end' }, t ? fmtDuration(t) : '0'),
    ]),
    runs.map((e, i) => {
      const o = outcome(e);
      const x = pad.left + (RECENT_RUNS - runs.length + i) * slot + (slot - barW) / 2; // the newest at the right edge
      const barH = Math.max(2, y(0) - y(durations[i]));
      const when = parseTime(e.started_at) || parseTime(e.scheduled_at);
      const label = `${when ? when.toLocaleString() : ''}: ${o.label.toLowerCase()}, ${fmtDuration(durations[i])}`;
      return svg('g', { 'data-run': e.id, 'data-outcome': o.key }, svg('title', {}, label),
        svg('rect', { class: o.cls, x, width: barW, y: y(0) - barH, height: barH, rx: 1.5 }),
        svg('rect', { class: 'hit', x: x - (slot - barW) / 2, width: slot, y: pad.top, height: plotH }));
    }));
  const legend = h('ul', { class: 'legend' }, OUTCOMES.map((o, i) => (counts[i] ? h('li', {},
    h('span', { class: `swatch ${o.cls}`, 'aria-hidden': 'true' }), `${o.label}: ${fmtNumber(counts[i])}`) : null)));
  return h('figure', { class: 'chart-figure' }, chart,
    h('figcaption', {}, legend, h('span', { class: 'muted small' }, 'Oldest on the left; height: how long it ran')));
}

/** The chain `job` belongs to (its first job, everything that runs after it, transitively) as a tree, `job`
 * marked; null when it has neither a parent nor dependents.
 * @param {any} job
 * @param {{ signal?: AbortSignal }} opts */
export async function chainTree(job, opts) {
  if (!job.parent_job && !(job.dependent_jobs || []).length) return null;
  const jobs = new Map([[job.name, job]]);
  const read = async (name) => {
    if (!jobs.has(name)) jobs.set(name, await api.get(jobPath(name), {}, opts).catch((error) => {
      if (error.status === 404) return { name, missing: true }; // deleted since the job naming it was read
      throw error;
    }));
    return jobs.get(name);
  };
  let root = job;
  let lostParent = ''; // a parent named but not found: the tree starts below it
  let partial = false;
  const above = new Set([job.name]);
  while (root.parent_job && !above.has(root.parent_job)) {
    if (jobs.size >= MAX_CHAIN) {
      partial = true;
      break;
    }
    above.add(root.parent_job);
    const parent = await read(root.parent_job);
    if (parent.missing) {
      lostParent = parent.name;
      break;
    }
    root = parent;
  }
  const children = new Map();
  const queue = [root];
  while (queue.length) {
    const parent = queue.shift();
    const kids = [];
    for (const d of parent.dependent_jobs || []) {
      if (children.has(d)) continue; // met before: a cycle the API refuses, written in Consul by hand
      if (jobs.size >= MAX_CHAIN && !jobs.has(d)) {
        partial = true;
        continue;
      }
      const kid = await read(d);
      kids.push(kid);
      queue.push(kid);
    }
    children.set(parent.name, kids);
  }
  const node = (j) => h('li', {},
    h('div', { class: `chain-node${j.name === job.name ? ' chain-self' : ''}`, dataset: { chainJob: j.name } },
      j.missing ? h('span', { class: 'mono muted' }, `${j.name} (not found)`)
        : j.name === job.name ? h('strong', { class: 'mono', 'aria-current': 'page' }, j.name)
          : h('a', { class: 'mono', href: jobHref(j.name) }, j.name),
      j.missing ? null : statusBadge(j.status),
      j.parent_job && j !== root ? h('span', { class: 'muted small' }, `after ${j.trigger_on || 'success'}`) : null,
      j.disabled ? h('span', { class: 'badge badge-neutral' }, 'Disabled') : null),
    (children.get(j.name) || []).length ? h('ul', {}, children.get(j.name).map(node)) : null);
  return h('div', {},
    lostParent ? h('p', { class: 'muted small' }, `It runs after ${lostParent}, which was not found (deleted meanwhile?).`) : null,
    h('ul', { class: 'chain-tree', 'aria-label': `Chain of ${plural(jobs.size, 'job')}, from ${root.name}` }, node(root)),
    partial ? h('p', { class: 'muted small' }, `Drawn in part: only the first ${MAX_CHAIN} jobs of the chain are read.`) : null);
}

function niceCeil(ms) {
  for (const step of [100, 250, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    900_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000]) {
    if (step >= ms) return step;
  }
  return Math.ceil(ms / 86_400_000) * 86_400_000;
}
