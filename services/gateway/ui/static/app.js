// The cronbus web UI: hash routes (#/, #/jobs, #/jobs/NAME, #/jobs/new, #/executions, #/executors, #/busy), the page
// chrome, and the token sign-in that any 401 leads to.

import { ApiError, clearToken, getToken, on, resolveSession, session, setToken } from './api.js';
import { append, button, clear, errorBox, h, icon, refreshTimes, toast } from './dom.js';
import * as busy from './views/busy.js';
import * as cluster from './views/cluster.js';
import * as dashboard from './views/dashboard.js';
import * as executions from './views/executions.js';
import * as form from './views/form.js';
import * as job from './views/job.js';
import * as jobs from './views/jobs.js';
import { loadPause } from './pause.js';

const ROUTES = [
  { pattern: /^\/$/, view: dashboard, nav: 'dashboard' },
  { pattern: /^\/jobs$/, view: jobs, nav: 'jobs' },
  { pattern: /^\/jobs\/new$/, view: form, nav: 'jobs', params: () => ({ mode: 'new' }) },
  { pattern: /^\/jobs\/([^/]+)\/edit$/, view: form, nav: 'jobs', params: (m) => ({ mode: 'edit', name: m[1] }) },
  { pattern: /^\/jobs\/([^/]+)$/, view: job, nav: 'jobs', params: (m) => ({ name: m[1] }) },
  { pattern: /^\/executions$/, view: executions, nav: 'executions' },
  { pattern: /^\/executors$/, view: cluster, nav: 'executors' },
  { pattern: /^\/busy$/, view: busy, nav: 'busy' },
];

const main = document.getElementById('main');
let current = null; // the route being shown: {controller, cleanups}
let signingIn = false;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, search = ''] = raw.split('?');
  let decoded = path;
  try {
    decoded = path.split('/').map(decodeURIComponent).join('/');
  } catch {
    // a malformed escape: route on the raw text
  }
  return { path: decoded.replace(/(.)\/$/, '$1'), query: new URLSearchParams(search) };
}

function stopCurrent() {
  if (!current) return;
  current.controller.abort();
  for (const fn of current.cleanups) {
    try {
      fn();
    } catch (error) {
      console.error(error);
    }
  }
  current = null;
}

function makeContext(params, query) {
  const controller = new AbortController();
  const cleanups = [];
  const ctx = {
    main,
    params,
    query,
    signal: controller.signal,
    controller,
    cleanups,
    onCleanup: (fn) => cleanups.push(fn),
    /** Calls fn every ms while the page is visible (and at once when it becomes visible again). */
    every(ms, fn) {
      const tick = () => {
        if (!document.hidden && !controller.signal.aborted) fn();
      };
      const timer = setInterval(tick, ms);
      const onVisible = () => document.hidden || tick();
      document.addEventListener('visibilitychange', onVisible);
      cleanups.push(() => {
        clearInterval(timer);
        document.removeEventListener('visibilitychange', onVisible);
      });
    },
    /** Replaces the hash's query without re-rendering (filters, pages, the selected execution). */
    setQuery(values) {
      if (controller.signal.aborted) return; // a late call of a page left behind: the hash is another page's now
      const { path } = parseHash();
      const next = new URLSearchParams();
      for (const [key, value] of Object.entries(values)) {
        if (value !== '' && value !== null && value !== undefined) next.set(key, String(value));
      }
      const qs = next.toString();
      const encodedPath = path.split('/').map(encodeURIComponent).join('/');
      history.replaceState(history.state, '', `#${encodedPath}${qs ? `?${qs}` : ''}`);
      ctx.query = next;
    },
    get alive() {
      return !controller.signal.aborted;
    },
  };
  return ctx;
}

function setNav(active) {
  for (const link of document.querySelectorAll('a[data-nav]')) {
    if (!(link instanceof HTMLElement)) continue;
    if (link.dataset.nav === active) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

async function route({ focus = false } = {}) {
  if (signingIn) return;
  stopCurrent();
  const { path, query } = parseHash();
  let match = null;
  let found = null;
  for (const candidate of ROUTES) {
    match = candidate.pattern.exec(path);
    if (match) {
      found = candidate;
      break;
    }
  }
  const ctx = makeContext(found && found.params ? found.params(match) : {}, query);
  current = ctx;
  loadPause().catch(() => {}); // the banner, on every page; a 401 is handled by the route's own requests
  setNav(found ? found.nav : '');
  clear(main);
  main.setAttribute('aria-busy', 'true');
  window.scrollTo(0, 0);
  try {
    if (!found) {
      renderNotFound(path);
    } else {
      await found.view.render(ctx);
    }
  } catch (error) {
    if (error.name === 'AbortError' || !ctx.alive || (error instanceof ApiError && error.status === 401)) return;
    console.error(error);
    append(clear(main), errorBox(error, () => route()));
  } finally {
    main.removeAttribute('aria-busy');
  }
  if (focus && ctx.alive) {
    const heading = main.querySelector('h1');
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      heading.focus({ preventScroll: true });
    }
  }
}

function renderNotFound(path) {
  document.title = 'Not found · cronbus';
  main.append(h('div', { class: 'page' },
    h('h1', {}, 'Page not found'),
    h('p', { class: 'muted' }, `Nothing lives at #${path}.`),
    h('a', { class: 'btn btn-primary', href: '#/' }, 'Go to the dashboard')));
}

// ---- the signed-in user ----------------------------------------------------------------------------------

const ROLE_WORDS = { read: 'Read only', operator: 'Operator', admin: 'Admin' };

function renderUser() {
  const el = document.getElementById('user');
  clear(el);
  if (!session.auth) return;
  append(el,
    h('span', { class: 'role-chip', title: 'What your token may do' }, icon('key'), h('span', { class: 'sr-only' }, 'Role: '),
      ROLE_WORDS[session.role] || session.role),
    button('Sign out', { iconName: 'logout', kind: 'ghost', class: 'btn btn-ghost signout', onclick: signOut }),
  );
}

function signOut() {
  clearToken();
  Object.assign(session, { role: 'read', auth: true });
  renderUser();
  showSignIn('You are signed out.');
}

function showSignIn(message = '') {
  stopCurrent();
  signingIn = true;
  document.body.classList.add('signed-out');
  document.getElementById('toasts').replaceChildren();
  document.getElementById('pause-banner').hidden = true; // shown again, to whoever signs in, by the next route
  setNav('');
  document.title = 'Sign in · cronbus';
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
    'aria-describedby': 'token-hint token-error',
  });
  const error = h('p', { class: 'field-error', id: 'token-error', role: 'alert', hidden: !message || message.startsWith('You are') },
    message);
  const note = message.startsWith('You are') ? h('p', { class: 'alert alert-info', role: 'status' }, message) : null;
  const reveal = h('button', {
    type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': 'Show token', 'aria-pressed': 'false',
    onclick: () => {
      const shown = input.type === 'text';
      input.type = shown ? 'password' : 'text';
      reveal.setAttribute('aria-pressed', String(!shown));
    },
  }, icon('eye'));
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Sign in');
  const formEl = h('form', {
    class: 'signin-form',
    onsubmit: async (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) {
        error.textContent = 'Enter your API token.';
        error.hidden = false;
        input.setAttribute('aria-invalid', 'true');
        input.focus();
        return;
      }
      submit.disabled = true;
      submit.textContent = 'Signing in…';
      setToken(token);
      try {
        await resolveSession();
      } catch (failure) {
        clearToken();
        submit.disabled = false;
        submit.textContent = 'Sign in';
        error.textContent = failure.status === 401 ? 'That token was not accepted. Check it and try again.' : failure.message;
        error.hidden = false;
        input.setAttribute('aria-invalid', 'true');
        input.focus();
        input.select();
        return;
      }
      signingIn = false;
      document.body.classList.remove('signed-out');
      renderUser();
      toast(`Signed in (${ROLE_WORDS[session.role] || session.role}).`, 'ok');
      await route({ focus: true });
    },
  },
  h('label', { for: 'token' }, 'API token'),
  h('div', { class: 'input-with-button' }, input, reveal),
  h('p', { class: 'hint', id: 'token-hint' }, 'Kept in this browser tab only (session storage) and sent as a bearer token.'),
  error,
  submit);
  append(clear(main), h('div', { class: 'signin' },
    h('div', { class: 'signin-card' },
      h('div', { class: 'signin-mark', 'aria-hidden': 'true' }, icon('key')),
      h('h1', {}, 'Sign in to cronbus'),
      h('p', { class: 'muted' }, 'This gateway requires an API token. Ask your cronbus administrator for one.'),
      note,
      formEl)));
  input.focus();
}

// ---- start -----------------------------------------------------------------------------------------------

on('unauthorized', () => {
  if (signingIn) return;
  const hadToken = Boolean(getToken());
  clearToken();
  showSignIn(hadToken ? 'Your token is no longer accepted. Sign in again.' : '');
});

async function start() {
  setInterval(() => refreshTimes(main), 1000);
  // "#main" would be taken for a route: move focus without touching the hash.
  document.querySelector('.skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    main.focus();
    main.scrollIntoView();
  });
  window.addEventListener('hashchange', () => {
    if (signingIn) signingIn = !getToken() && session.auth;
    route({ focus: true });
  });
  try {
    await resolveSession();
  } catch (error) {
    if (error.status === 401) {
      showSignIn(getToken() ? 'Your token is no longer accepted. Sign in again.' : '');
      return;
    }
    append(clear(main), h('div', { class: 'page' }, h('h1', {}, 'cronbus'), errorBox(error, () => location.reload())));
    return;
  }
  renderUser();
  await route();
}

start();
