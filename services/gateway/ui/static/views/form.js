// Create, edit and clone a job: every field, editors for the shell and http executors, tags and metadata as
// key/value rows, and the schedule checked by the gateway as you type (POST /v1/schedule/preview).

import { api, can, jobPath } from '../api.js';
import { describeSchedule } from '../cron.js';
import {
  append, button, clear, debounce, emptyState, field, h, icon, isValidZone, kvEditor, linkButton, nextId, parseTime,
  setFieldError, spinner, toast, viewerZone,
} from '../dom.js';
import { firesTable } from './job.js';
import { onPause, pauseState } from '../pause.js';

const READ_ONLY = ['id', 'success_count', 'error_count', 'last_success', 'last_error', 'dependent_jobs', 'status', 'next', 'created_at', 'disabled_reason'];
const NAME_RE = /^[\p{Ll}0-9_-]+$/u;
const PRESETS = [
  ['Every minute', '* * * * *'],
  ['Every 15 min', '*/15 * * * *'],
  ['Hourly', '@hourly'],
  ['Daily 03:00', '0 3 * * *'],
  ['Weekdays 09:30', '30 9 * * 1-5'],
  ['Every 10 s', '@every 10s'],
  ['By hand only', '@manually'],
];
const SHELL_KEYS = ['command', 'shell', 'env', 'cwd', 'timeout', 'mem_limit', 'su', 'payload'];
const HTTP_KEYS = ['method', 'url', 'headers', 'body', 'timeout', 'expectCode', 'expectBody', 'tlsNoVerifyPeer',
  'tlsCertificateFile', 'tlsCertificateKeyFile', 'tlsRootCAsFile'];
const TRUE = new Set(['1', 't', 'T', 'true', 'TRUE', 'True']);

const input = (attrs = {}) => h('input', { autocomplete: 'off', spellcheck: 'false', ...attrs });
const select = (options, value, attrs = {}) => h('select', attrs,
  options.map(([v, l]) => h('option', { value: v, selected: v === value }, l)));
const checkbox = (label, checked, hint = '') => {
  const id = nextId('cb');
  const box = h('input', { type: 'checkbox', id, checked: Boolean(checked), 'aria-describedby': hint ? `${id}-hint` : undefined });
  const wrap = h('div', { class: 'check' }, box, h('label', { for: id }, label), hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null);
  wrap.box = box;
  return wrap;
};

function toLocalInput(value) {
  const date = parseTime(value);
  if (!date) return '';
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 19);
}

function fromLocalInput(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

const pairsOf = (obj) => Object.entries(obj || {}).map(([k, v]) => [k, String(v)]);
const objOf = (pairs) => (pairs.length ? Object.fromEntries(pairs) : null);

// ---- executor editors: {el, config(), check() -> [control, message] | null} ----

function shellEditor(config) {
  const command = h('textarea', { rows: 3, class: 'mono', spellcheck: 'false', placeholder: 'e.g. /usr/local/bin/backup --all' }, config.command || '');
  command.value = config.command || '';
  const shell = checkbox('Run through /bin/sh -c (pipes, $VARIABLES, &&)', TRUE.has(config.shell || ''),
    'Otherwise the command is split like a shell would and run directly.');
  const env = kvEditor({ pairs: (config.env || '').split(',').filter((s) => s.includes('=')).map((s) => [s.slice(0, s.indexOf('=')), s.slice(s.indexOf('=') + 1)]),
    label: 'Variable', keyLabel: 'Name', valueLabel: 'Value', addLabel: 'Add variable', keyPlaceholder: 'NAME', name: 'env' });
  const cwd = input({ value: config.cwd || '', placeholder: '/srv/app' });
  const timeout = input({ value: config.timeout || '', placeholder: '30m' });
  const mem = input({ value: config.mem_limit || '', placeholder: '512M' });
  const su = input({ value: config.su || '', placeholder: 'user[:group]' });
  const payload = h('textarea', { rows: 2, class: 'mono', spellcheck: 'false', placeholder: 'base64' });
  payload.value = config.payload || '';
  const other = kvEditor({ pairs: pairsOf(config).filter(([k]) => !SHELL_KEYS.includes(k)), label: 'Setting', addLabel: 'Add setting', name: 'shell-other' });
  const el = h('div', { class: 'executor-editor', dataset: { executor: 'shell' } },
    field('Command', command, { wide: true, required: true, id: 'cfg-command' }),
    h('div', { class: 'field field-wide' }, shell),
    h('div', { class: 'field field-wide' }, h('span', { class: 'label' }, 'Environment variables'), env),
    field('Working directory', cwd, { id: 'cfg-cwd' }),
    field('Timeout', timeout, { hint: 'Duration, e.g. 90s or 1h.', id: 'cfg-timeout' }),
    field('Memory limit', mem, { hint: 'Exceeding it kills the process group.', id: 'cfg-mem' }),
    field('Run as', su, { hint: 'When the executor runs as root.', id: 'cfg-su' }),
    field('Standard input (base64)', payload, { wide: true, id: 'cfg-payload' }),
    h('div', { class: 'field field-wide' }, h('span', { class: 'label' }, 'Other settings'), other));
  return {
    el,
    focus: () => command.focus(),
    config() {
      const out = Object.fromEntries(other.getPairs());
      out.command = command.value;
      if (shell.box.checked) out.shell = 'true';
      const envPairs = env.getPairs();
      if (envPairs.length) out.env = envPairs.map(([k, v]) => `${k}=${v}`).join(',');
      for (const [key, control] of [['cwd', cwd], ['timeout', timeout], ['mem_limit', mem], ['su', su], ['payload', payload]]) {
        if (control.value.trim()) out[key] = control.value.trim();
      }
      return out;
    },
    check() {
      if (!command.value.trim()) return [command, 'Enter the command to run.'];
      if (env.getPairs().some(([, v]) => v.includes(','))) return [env.querySelector('.kv-value'), 'Environment values cannot contain commas.'];
      return null;
    },
  };
}

function httpEditor(config) {
  const method = select(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'].map((m) => [m, m]), (config.method || 'GET').toUpperCase());
  const url = input({ type: 'url', value: config.url || '', placeholder: 'https://example.com/hook', inputmode: 'url' });
  let headerPairs = [];
  let rawHeaders = '';
  if (config.headers) {
    try {
      const list = JSON.parse(config.headers);
      headerPairs = list.map((line) => [line.slice(0, line.indexOf(':')).trim(), line.slice(line.indexOf(':') + 1).trim()]);
    } catch {
      rawHeaders = config.headers;
    }
  }
  const headers = kvEditor({ pairs: headerPairs, label: 'Header', keyLabel: 'Name', valueLabel: 'Value', addLabel: 'Add header', keyPlaceholder: 'Content-Type', name: 'headers' });
  const body = h('textarea', { rows: 4, class: 'mono', spellcheck: 'false' });
  body.value = config.body || '';
  const timeout = input({ value: config.timeout || '', placeholder: '30', inputmode: 'decimal' });
  const expectCode = input({ value: config.expectCode || '', placeholder: '200,201' });
  const expectBody = input({ value: config.expectBody || '', placeholder: 'regular expression', class: 'mono' });
  const noVerify = checkbox('Do not verify the server’s TLS certificate', TRUE.has(config.tlsNoVerifyPeer || ''));
  const cert = input({ value: config.tlsCertificateFile || '', placeholder: '/etc/cronbus/client.pem' });
  const key = input({ value: config.tlsCertificateKeyFile || '', placeholder: '/etc/cronbus/client.key' });
  const ca = input({ value: config.tlsRootCAsFile || '', placeholder: '/etc/ssl/ca.pem' });
  const otherPairs = pairsOf(config).filter(([k]) => !HTTP_KEYS.includes(k));
  if (rawHeaders) otherPairs.push(['headers', rawHeaders]);
  const other = kvEditor({ pairs: otherPairs, addLabel: 'Add setting', name: 'http-other' });
  const el = h('div', { class: 'executor-editor', dataset: { executor: 'http' } },
    h('div', { class: 'field-row field-wide' },
      field('Method', method, { id: 'cfg-method' }),
      field('URL', url, { required: true, id: 'cfg-url', wide: true })),
    h('div', { class: 'field field-wide' }, h('span', { class: 'label' }, 'Headers'), headers),
    field('Body', body, { wide: true, id: 'cfg-body' }),
    field('Timeout (seconds)', timeout, { id: 'cfg-http-timeout', hint: 'Default 30.' }),
    field('Expected status codes', expectCode, { id: 'cfg-expect-code', hint: 'Comma-separated; any 2xx when empty.' }),
    field('Expected body', expectBody, { id: 'cfg-expect-body', wide: true, hint: 'The run fails unless the body matches this regular expression.' }),
    h('div', { class: 'field field-wide' }, noVerify),
    field('Client certificate file', cert, { id: 'cfg-cert' }),
    field('Client key file', key, { id: 'cfg-key' }),
    field('CA certificates file', ca, { id: 'cfg-ca' }),
    h('div', { class: 'field field-wide' }, h('span', { class: 'label' }, 'Other settings'), other));
  return {
    el,
    focus: () => url.focus(),
    config() {
      const out = Object.fromEntries(other.getPairs());
      out.method = method.value;
      out.url = url.value.trim();
      const hs = headers.getPairs();
      if (hs.length) out.headers = JSON.stringify(hs.map(([k, v]) => `${k}: ${v}`));
      if (body.value) out.body = body.value;
      if (noVerify.box.checked) out.tlsNoVerifyPeer = 'true';
      for (const [k, control] of [['timeout', timeout], ['expectCode', expectCode], ['expectBody', expectBody],
        ['tlsCertificateFile', cert], ['tlsCertificateKeyFile', key], ['tlsRootCAsFile', ca]]) {
        if (control.value.trim()) out[k] = control.value.trim();
      }
      return out;
    },
    check() {
      const value = url.value.trim();
      if (!value) return [url, 'Enter the URL to call.'];
      if (!/^https?:\/\/\S+$/i.test(value)) return [url, 'The URL must start with http:// or https://.'];
      return null;
    },
  };
}

function genericEditor(executor, config) {
  const kv = kvEditor({ pairs: pairsOf(config), addLabel: 'Add setting', name: 'config' });
  const el = h('div', { class: 'executor-editor', dataset: { executor } },
    h('div', { class: 'field field-wide' }, h('span', { class: 'label' }, 'Settings'), kv,
      executor === 'noop' ? h('p', { class: 'hint' }, 'The noop executor does nothing and succeeds: handy to test schedules and chains.')
        : GENERIC_HINTS[executor] ? h('p', { class: 'hint' }, GENERIC_HINTS[executor]) : null));
  return { el, focus: () => kv.querySelector('button').focus(), config: () => Object.fromEntries(kv.getPairs()), check: () => null };
}

// Dkron's keys of the executors edited as plain settings (docs/executors.md); the server checks them on save.
const GENERIC_HINTS = {
  nats: 'Settings: url (nats://host:4222), subject, message, userName, password.',
  rabbitmq: 'Settings: url (amqp://user:password@host:5672/vhost), queue.name, exchange, queue.create, message.body, message.content_type, message.delivery_mode.',
  grpc: 'Settings: url (host:port/package.Service/Method), body (JSON), headers (["Name: value"]), timeout, expectCode.',
};

const EDITORS = { shell: shellEditor, http: httpEditor };

// ---- the form ----

export async function render(ctx) {
  const editing = ctx.params.mode === 'edit';
  const cloneOf = editing ? '' : ctx.query.get('clone') || '';
  const opts = { signal: ctx.signal };
  document.title = `${editing ? 'Edit job' : 'New job'} · cronbus`;

  let base = { executor: 'shell', concurrency: 'allow', misfire_policy: 'run_once', catchup_window: '1h', trigger_on: 'success', retry_backoff: '5s' };
  if (editing || cloneOf) {
    ctx.main.append(spinner('Loading the job…'));
    try {
      base = await api.get(jobPath(editing ? ctx.params.name : cloneOf), {}, opts);
    } catch (error) {
      if (error.status !== 404) throw error;
      append(clear(ctx.main), h('div', { class: 'page' }, h('h1', {}, 'Job not found'),
        emptyState('search', `There is no job named “${editing ? ctx.params.name : cloneOf}”.`, '', linkButton('Back to jobs', '#/jobs', { iconName: 'left' }))));
      return;
    }
    clear(ctx.main);
    if (cloneOf) {
      base = { ...base, name: `${base.name}-copy`.slice(0, 200), displayname: base.displayname ? `${base.displayname} (copy)` : '' };
    }
  }
  const original = editing ? base.name : '';
  const title = editing ? `Edit ${base.displayname || base.name}` : cloneOf ? `Clone ${cloneOf}` : 'New job';
  document.title = `${title} · cronbus`;

  if (!can('admin')) {
    ctx.main.append(h('div', { class: 'page' }, h('h1', {}, title),
      h('div', { class: 'alert alert-warn', role: 'status' }, icon('key'), h('p', {}, 'Your token’s role cannot create or change jobs (admin is needed).')),
      linkButton('Back', editing ? `#/jobs/${encodeURIComponent(original)}` : '#/jobs', { iconName: 'left' })));
    return;
  }

  // Basics
  const name = input({ value: base.name || '', required: true, maxlength: 200, readonly: editing, class: 'mono', placeholder: 'nightly-backup' });
  const displayname = input({ value: base.displayname || '', placeholder: 'Nightly backup', spellcheck: 'true' });
  const owner = input({ value: base.owner || '', placeholder: 'Platform team' });
  const ownerEmail = input({ type: 'email', value: base.owner_email || '', placeholder: 'platform@example.com' });
  const disabled = checkbox('Disabled', base.disabled, 'Not run on its schedule; it can still be run by hand.');

  // Schedule
  const schedule = input({ value: base.schedule || '', class: 'mono', placeholder: '0 30 9 * * 1-5', 'aria-describedby': '' });
  const zoneList = h('datalist', { id: 'zones' }, ['UTC', ...(Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : [])].map((z) => h('option', { value: z })));
  const timezone = input({ value: base.timezone || '', list: 'zones', placeholder: 'UTC' });
  const useMine = button(`Use mine (${viewerZone})`, { iconName: 'globe', kind: 'ghost', class: 'btn btn-ghost btn-small', onclick: () => {
    timezone.value = viewerZone;
    timezone.dispatchEvent(new Event('input'));
  } });
  const presets = h('div', { class: 'presets', role: 'group', 'aria-label': 'Common schedules' }, PRESETS.map(([label, value]) =>
    h('button', { type: 'button', class: 'chip chip-button', title: value, onclick: () => {
      schedule.value = value;
      schedule.dispatchEvent(new Event('input'));
      schedule.focus();
    } }, label)));
  const preview = h('div', { class: 'preview', id: 'schedule-preview', 'aria-live': 'polite' });
  const parentList = h('datalist', { id: 'parent-jobs' });
  const parent = input({ value: base.parent_job || '', list: 'parent-jobs', class: 'mono', placeholder: 'a job name' });
  const triggerOn = select([['success', 'after it succeeds'], ['failure', 'after it fails'], ['always', 'after every run']], base.trigger_on || 'success');
  const startsAt = input({ type: 'datetime-local', step: 1, value: toLocalInput(base.starts_at) });
  const expiresAt = input({ type: 'datetime-local', step: 1, value: toLocalInput(base.expires_at) });
  const misfire = select([['run_once', 'Run once for all missed slots'], ['run_all', 'Run every missed slot'], ['skip', 'Skip missed slots']], base.misfire_policy || 'run_once');
  const catchup = input({ value: base.catchup_window || '1h', placeholder: '1h' });

  // What to run
  const executors = ['shell', 'http', 'noop', 'nats', 'rabbitmq', 'grpc'];
  if (base.executor && !executors.includes(base.executor)) executors.push(base.executor);
  const executor = select(executors.map((e) => [e, { shell: 'Shell command', http: 'HTTP request', noop: 'No-op (test)', nats: 'NATS message', rabbitmq: 'RabbitMQ message', grpc: 'gRPC call' }[e] || e]), base.executor || 'shell');
  const editorSlot = h('div', { class: 'editor-slot' });
  const editors = {};
  const editorFor = (kind) => {
    if (!editors[kind]) {
      const config = kind === base.executor ? base.executor_config || {} : {};
      editors[kind] = (EDITORS[kind] || ((c) => genericEditor(kind, c)))(config);
    }
    return editors[kind];
  };
  const showEditor = () => append(clear(editorSlot), editorFor(executor.value).el);
  executor.addEventListener('change', showEditor);
  showEditor();
  const jobTimeout = input({ value: base.timeout || '', placeholder: 'e.g. 15m' });

  // Where, how often, labels
  const tags = kvEditor({ pairs: pairsOf(base.tags), label: 'Tag', keyLabel: 'Key', valueLabel: 'Value', addLabel: 'Add tag', keyPlaceholder: 'role', valuePlaceholder: 'web or web:2', name: 'tags' });
  const retries = input({ type: 'number', min: 0, max: 100, step: 1, value: String(base.retries || 0), inputmode: 'numeric' });
  const backoff = input({ value: base.retry_backoff || '5s', placeholder: '5s' });
  const disableAfter = input({ type: 'number', min: 0, max: 1000, step: 1, value: String(base.disable_after_failures || 0), inputmode: 'numeric' });
  const concurrency = select([['allow', 'Allow overlapping runs'], ['forbid', 'Skip a run while one is going'], ['replace', 'Kill the running one, then start']], base.concurrency || 'allow');
  const ephemeral = checkbox('Ephemeral', base.ephemeral, 'Delete the job after its first successful run.');
  const metadata = kvEditor({ pairs: pairsOf(base.metadata), label: 'Label', keyLabel: 'Key', valueLabel: 'Value', addLabel: 'Add label', keyPlaceholder: 'team', valuePlaceholder: 'data', name: 'metadata' });
  const processors = h('textarea', { rows: 4, class: 'mono', spellcheck: 'false', placeholder: '{"log": {}}' });
  processors.value = base.processors && Object.keys(base.processors).length ? JSON.stringify(base.processors, null, 2) : '';
  const runOnCreate = checkbox('Run it once right after saving', false);

  const errorSummary = h('div', { class: 'alert alert-bad', role: 'alert', tabindex: '-1', hidden: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, icon('check'), h('span', {}, editing ? 'Save changes' : 'Create job'));
  const cancelHref = editing ? `#/jobs/${encodeURIComponent(original)}` : cloneOf ? `#/jobs/${encodeURIComponent(cloneOf)}` : '#/jobs';

  const section = (titleText, hint, ...children) => {
    const id = nextId('sec');
    return h('fieldset', { class: 'card form-section', 'aria-labelledby': id },
      h('div', { class: 'card-head' }, h('h2', { id }, titleText), hint ? h('p', { class: 'muted small' }, hint) : null),
      h('div', { class: 'card-body form-grid' }, children));
  };

  // While submissions are paused every gateway refuses the save (503): say so before the user fills the form.
  const pausedWarning = h('div', { class: 'alert alert-warn', role: 'status', id: 'paused-warning', hidden: true });
  const showPaused = () => {
    pausedWarning.hidden = !pauseState.paused;
    if (!pauseState.paused) return;
    append(clear(pausedWarning), icon('pause'), h('div', {},
      h('strong', {}, 'Job submissions are paused: saving will be refused until they are resumed.'),
      h('p', {}, `Paused${pauseState.paused_by ? ` by ${pauseState.paused_by}` : ''}${pauseState.note ? `: ${pauseState.note}` : '.'}`)));
  };
  showPaused();
  ctx.onCleanup(onPause(showPaused));

  const form = h('form', { class: 'job-form', novalidate: true, onsubmit: onSubmit },
    pausedWarning,
    errorSummary,
    section('Basics', '',
      field('Name', name, { required: true, id: 'job-name', hint: editing ? 'A job’s name cannot change; clone it to get a new name.' : 'Lower-case letters, digits, - and _. Up to 200 characters.' }),
      field('Display name', displayname, { id: 'job-displayname', hint: 'Shown instead of the name.' }),
      field('Owner', owner, { id: 'job-owner' }),
      field('Owner email', ownerEmail, { id: 'job-owner-email', hint: 'Receives notifications when mail is configured.' }),
      h('div', { class: 'field field-wide' }, disabled)),
    section('Schedule', 'Checked by the gateway as you type.',
      h('div', { class: 'field field-wide' },
        h('label', { for: 'job-schedule' }, 'Schedule'),
        schedule,
        h('p', { class: 'hint', id: 'job-schedule-hint' }, 'Cron with 5 or 6 fields (seconds first), @every 10s, @daily, @at 2030-01-01T00:00:00Z, @manually. Empty for a job that runs after its parent.'),
        h('p', { class: 'field-error', id: 'job-schedule-error', hidden: true }),
        presets),
      h('div', { class: 'field field-wide' }, h('label', { for: 'job-timezone' }, 'Time zone'),
        h('div', { class: 'input-with-button zone-row' }, timezone, useMine), zoneList,
        h('p', { class: 'hint', id: 'job-timezone-hint' }, 'IANA name, e.g. Europe/Berlin; empty means UTC. Fire times are computed in this zone, daylight saving included.'),
        h('p', { class: 'field-error', id: 'job-timezone-error', hidden: true })),
      h('div', { class: 'field field-wide' }, h('span', { class: 'label', id: 'preview-label' }, 'Next runs'), preview),
      field('Runs after job', parent, { id: 'job-parent', hint: 'Makes this a child job: it runs after that job’s runs.' }),
      field('Trigger', triggerOn, { id: 'job-trigger-on' }),
      field(`Active from (your time, ${viewerZone})`, startsAt, { id: 'job-starts-at' }),
      field(`Active until (your time, ${viewerZone})`, expiresAt, { id: 'job-expires-at' }),
      field('Missed runs', misfire, { id: 'job-misfire', hint: 'What happens to slots that passed while no scheduler was leading.' }),
      field('Catch-up window', catchup, { id: 'job-catchup', hint: 'Missed slots older than this never run, e.g. 1h.' }),
      parentList),
    section('What to run', '',
      field('Executor', executor, { id: 'job-executor' }),
      field('Job timeout', jobTimeout, { id: 'job-timeout', hint: 'Any executor: killed after this long (e.g. 15m).' }),
      h('div', { class: 'field field-wide' }, editorSlot)),
    section('Where to run', 'Every tag must match an executor’s. “value:2” caps the run at 2 executors. Without tags it runs on exactly one executor.',
      h('div', { class: 'field field-wide' }, h('span', { class: 'label' }, 'Target tags'), tags)),
    section('Retries and overlap', '',
      field('Retries', retries, { id: 'job-retries', hint: 'Extra attempts after a failed run.' }),
      field('Retry backoff', backoff, { id: 'job-backoff', hint: 'First wait; doubled each time, at most 5 minutes.' }),
      field('Concurrency', concurrency, { id: 'job-concurrency' }),
      field('Disable after failures', disableAfter, { id: 'job-disable-after', hint: 'Failed runs in a row that disable the job (0: never).' }),
      h('div', { class: 'field field-wide' }, ephemeral)),
    section('Metadata', 'Labels to find jobs by (Jobs › Metadata filter).',
      h('div', { class: 'field field-wide' }, h('span', { class: 'label' }, 'Labels'), metadata)),
    h('details', { class: 'card advanced' }, h('summary', {}, 'Advanced: output processors'),
      h('div', { class: 'card-body' }, field('Processors (JSON)', processors, { wide: true, id: 'job-processors', hint: 'Object of processor name → settings, e.g. {"log": {}}.' }))),
    h('div', { class: 'form-footer' },
      h('a', { class: 'btn btn-ghost', href: cancelHref }, 'Cancel'),
      editing ? null : runOnCreate,
      submit));

  append(ctx.main, h('div', { class: 'page page-narrow' },
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('ol', {}, h('li', {}, h('a', { href: '#/jobs' }, 'Jobs')),
      editing ? h('li', {}, h('a', { href: cancelHref }, original)) : null, h('li', { 'aria-current': 'page' }, editing ? 'Edit' : 'New'))),
    h('div', { class: 'page-head' }, h('h1', {}, title)),
    form));
  schedule.id = 'job-schedule';
  schedule.setAttribute('aria-describedby', 'job-schedule-hint job-schedule-error');
  timezone.id = 'job-timezone';
  timezone.setAttribute('aria-describedby', 'job-timezone-hint job-timezone-error');
  preview.setAttribute('aria-labelledby', 'preview-label');

  // ---- live schedule preview ----

  let previewSeq = 0;
  let previewAbort = null;
  let scheduleValid = true;
  let zoneProblem = ''; // the gateway's word on the time zone field, which is not the schedule's fault
  async function updatePreview() {
    const seq = ++previewSeq;
    if (previewAbort) previewAbort.abort();
    const text = schedule.value.trim();
    const zone = timezone.value.trim();
    const parentName = parent.value.trim();
    triggerOn.disabled = !parentName;
    setFieldError(timezone, zone && !isValidZone(zone) ? `“${zone}” is not a time zone this browser knows; the gateway will check it.` : '');
    if (!text) {
      scheduleValid = Boolean(parentName);
      setFieldError(schedule, '');
      append(clear(preview), h('p', { class: 'muted' }, parentName ? `Runs after ${parentName} (no schedule of its own).` : 'Enter a schedule to see when it runs.'));
      return;
    }
    previewAbort = new AbortController();
    preview.classList.add('is-loading');
    zoneProblem = '';
    try {
      const fires = await api.post('/v1/schedule/preview', { schedule: text, timezone: zone, count: 5, name: name.value.trim() },
        { signal: AbortSignal.any ? AbortSignal.any([ctx.signal, previewAbort.signal]) : previewAbort.signal, quiet: true });
      if (seq !== previewSeq) return;
      scheduleValid = true;
      setFieldError(schedule, '');
      const words = describeSchedule(text, { parentJob: parentName });
      const shownZone = /^(?:CRON_TZ|TZ)=(\S+)/.exec(text)?.[1] || zone || 'UTC';
      append(clear(preview), words ? h('p', { class: 'schedule-words' }, words) : null, firesTable(fires, isValidZone(shownZone) ? shownZone : 'UTC'));
    } catch (error) {
      if (error.name === 'AbortError' || seq !== previewSeq) return;
      // A zone the gateway does not know is the time zone field's error (unless the schedule names it itself).
      const aboutZone = error.status === 400 && /time ?zone|unknown zone/i.test(error.message) && zone
        && !/^(?:CRON_TZ|TZ)=/.test(text);
      scheduleValid = error.status !== 400 || aboutZone;
      if (aboutZone) {
        zoneProblem = error.message.replace(/^can't parse job schedule: /, '');
        setFieldError(timezone, zoneProblem);
        setFieldError(schedule, '');
        append(clear(preview), h('p', { class: 'muted' }, 'No preview until the time zone is valid.'));
      } else if (error.status === 400) {
        setFieldError(schedule, error.message);
        append(clear(preview), h('p', { class: 'muted' }, 'No preview until the schedule is valid.'));
      } else {
        append(clear(preview), h('p', { class: 'muted' }, `Preview unavailable: ${error.message}`));
      }
    } finally {
      if (seq === previewSeq) preview.classList.remove('is-loading');
    }
  }
  const debouncedPreview = debounce(updatePreview, 300);
  ctx.onCleanup(() => debouncedPreview.cancel());
  for (const control of [schedule, timezone, parent]) control.addEventListener('input', debouncedPreview);
  name.addEventListener('input', () => {
    if (/[~H]/.test(schedule.value)) debouncedPreview(); // hashed fields depend on the name
    setFieldError(name, '');
  });

  const suggestParents = debounce(async () => {
    const q = parent.value.trim();
    if (!q) return;
    try {
      const { items } = await api.list('/v1/jobs', { q, _start: 0, _end: 10 }, opts);
      append(clear(parentList), items.filter((j) => j.name !== name.value.trim()).map((j) => h('option', { value: j.name }, j.displayname || j.name)));
    } catch {
      // suggestions are a convenience
    }
  }, 250);
  parent.addEventListener('input', suggestParents);
  updatePreview();

  // ---- submit ----

  function fail(control, message) {
    setFieldError(control, message);
    return [control, message];
  }

  function collect() {
    const problems = [];
    const jobName = name.value.trim();
    if (!jobName) problems.push(fail(name, 'Enter a name.'));
    else if (!NAME_RE.test(jobName)) problems.push(fail(name, 'Use only lower-case letters, digits, - and _.'));
    else if (jobName.length > 200) problems.push(fail(name, 'At most 200 characters.'));
    if (!schedule.value.trim() && !parent.value.trim()) problems.push(fail(schedule, 'Enter a schedule, or the job it runs after.'));
    else if (!scheduleValid && schedule.value.trim()) problems.push([schedule, document.getElementById('job-schedule-error')?.textContent || 'The schedule is not valid.']);
    if (zoneProblem) problems.push([timezone, zoneProblem]);
    const editor = editorFor(executor.value);
    const configProblem = editor.check();
    if (configProblem) problems.push(fail(...configProblem));
    const retriesValue = Number(retries.value || 0);
    if (!Number.isInteger(retriesValue) || retriesValue < 0) problems.push(fail(retries, 'A whole number, 0 or more.'));
    const disableAfterValue = Number(disableAfter.value || 0);
    if (!Number.isInteger(disableAfterValue) || disableAfterValue < 0 || disableAfterValue > 1000) {
      problems.push(fail(disableAfter, 'A whole number from 0 (never) to 1000.'));
    }
    let processorsValue = null;
    if (processors.value.trim()) {
      try {
        processorsValue = JSON.parse(processors.value);
        if (typeof processorsValue !== 'object' || Array.isArray(processorsValue)) throw new Error('not an object');
        setFieldError(processors, '');
      } catch (error) {
        problems.push(fail(processors, `Not a JSON object (${error.message}).`));
      }
    }
    const starts = fromLocalInput(startsAt.value);
    const expires = fromLocalInput(expiresAt.value);
    if (starts === undefined) problems.push(fail(startsAt, 'Not a date and time.'));
    if (expires === undefined) problems.push(fail(expiresAt, 'Not a date and time.'));
    if (starts && expires && expires <= starts) problems.push(fail(expiresAt, 'Must be after “Active from”.'));
    const job = { ...base };
    for (const key of READ_ONLY) delete job[key];
    Object.assign(job, {
      name: jobName,
      displayname: displayname.value.trim(),
      timezone: timezone.value.trim(),
      schedule: schedule.value.trim(),
      owner: owner.value.trim(),
      owner_email: ownerEmail.value.trim(),
      disabled: disabled.box.checked,
      tags: objOf(tags.getPairs()),
      metadata: objOf(metadata.getPairs()),
      retries: retriesValue,
      disable_after_failures: disableAfterValue,
      parent_job: parent.value.trim(),
      processors: processorsValue,
      concurrency: concurrency.value,
      executor: executor.value,
      executor_config: editor.config(),
      ephemeral: ephemeral.box.checked,
      starts_at: starts || null,
      expires_at: expires || null,
      misfire_policy: misfire.value,
      catchup_window: catchup.value.trim() || '1h',
      trigger_on: triggerOn.value,
      timeout: jobTimeout.value.trim(),
      retry_backoff: backoff.value.trim() || '5s',
    });
    return { job, problems };
  }

  async function onSubmit(event) {
    event.preventDefault();
    errorSummary.hidden = true;
    for (const el of form.querySelectorAll('[aria-invalid]')) if (el !== schedule && el !== timezone) setFieldError(el, '');
    const { job, problems } = collect();
    if (problems.length) {
      append(clear(errorSummary), icon('warn'), h('div', {}, h('strong', {}, problems.length === 1 ? 'Fix this before saving:' : `Fix these ${problems.length} things before saving:`),
        h('ul', {}, problems.map(([control, message]) => h('li', {}, h('a', { href: `#${control.id}`, onclick: (e) => {
          e.preventDefault();
          control.focus();
        } }, `${labelOf(control)}: ${message}`))))));
      errorSummary.hidden = false;
      problems[0][0].focus();
      return;
    }
    submit.disabled = true;
    submit.setAttribute('aria-busy', 'true');
    try {
      const query = !editing && runOnCreate.box.checked ? '?runoncreate=true' : '';
      const saved = editing
        ? await api.put(`${jobPath(original)}${query}`, job)
        : await api.post(`/v1/jobs${query}`, job);
      toast(editing ? `Saved ${saved.name}.` : `Created ${saved.name}.`, 'ok');
      location.hash = `#/jobs/${encodeURIComponent(saved.name)}`;
    } catch (error) {
      if (error.name === 'AbortError') return;
      append(clear(errorSummary), icon('warn'), h('div', {},
        h('strong', {}, error.status === 403 ? 'Not allowed' : error.status ? `The gateway refused the job (${error.status})` : 'Not saved'),
        h('p', {}, error.message)));
      errorSummary.hidden = false;
      errorSummary.focus();
    } finally {
      submit.disabled = false;
      submit.removeAttribute('aria-busy');
    }
  }

  if (!editing) name.focus();
  else displayname.focus();
}

function labelOf(control) {
  const label = control.id ? document.querySelector(`label[for="${CSS.escape(control.id)}"]`) : null;
  return (label ? label.textContent : control.getAttribute('aria-label') || 'Field').replace(/\s*\*$/, '');
}
