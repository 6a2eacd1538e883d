// The gateway's HTTP API (Dkron v1 + cronbus extensions): fetch with the session's token, plain-text errors,
// X-Total-Count for lists, and what the signed-in token may do.

const TOKEN_KEY = 'cronbus.token';
const ROLE_RANK = { read: 0, operator: 1, admin: 2 };
const PROBE_JOB = '~role-probe~'; // '~' is illegal in job names, so this job can never exist

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const getToken = () => sessionStorage.getItem(TOKEN_KEY) || '';
export const setToken = (token) => sessionStorage.setItem(TOKEN_KEY, token);
export const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

const listeners = { unauthorized: [], forbidden: [] };
export function on(event, fn) {
  listeners[event].push(fn);
}

export const jobPath = (name) => `/v1/jobs/${encodeURIComponent(name)}`;
export const execPath = (job, id) => `${jobPath(job)}/executions/${encodeURIComponent(id)}`;

function buildUrl(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === '') continue;
    params.append(key, String(value));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/** @typedef {{body?: unknown, query?: Record<string, unknown>, signal?: AbortSignal, quiet?: boolean}} RequestOptions */

/** One request. Resolves {data, total, status}; rejects with ApiError (status 0: the gateway is unreachable).
 * @param {string} method
 * @param {string} path
 * @param {RequestOptions} [options]
 * @returns {Promise<{data: any, total: number, status: number}>} */
export async function request(method, path, { body, query, signal, quiet = false } = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  /** @type {RequestInit} */
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(buildUrl(path, query), init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'Cannot reach the gateway. Check that it is running and try again.');
  }
  if (!response.ok) {
    let text = '';
    try {
      text = (await response.text()).trim();
    } catch {
      // a body cut short says nothing more than the status
    }
    if (text.startsWith('"') && text.endsWith('"')) text = JSON.parse(text);
    const error = new ApiError(response.status, text || response.statusText || `HTTP ${response.status}`);
    if (!quiet && response.status === 401) listeners.unauthorized.forEach((fn) => fn(error));
    if (!quiet && response.status === 403) listeners.forbidden.forEach((fn) => fn(error));
    throw error;
  }
  const type = response.headers.get('content-type') || '';
  const data = type.includes('json') ? await response.json() : await response.text();
  const total = Number.parseInt(response.headers.get('X-Total-Count') || '', 10);
  return { data, total: Number.isFinite(total) ? total : Array.isArray(data) ? data.length : 0, status: response.status };
}

export const api = {
  get: async (path, query, opts = {}) => (await request('GET', path, { query, ...opts })).data,
  /** A list endpoint: {items, total} with total from X-Total-Count. */
  list: async (path, query, opts = {}) => {
    const { data, total } = await request('GET', path, { query, ...opts });
    return { items: Array.isArray(data) ? data : [], total };
  },
  /** Only the count of a filtered list (an empty slice: _start=0&_end=0). */
  count: async (path, query = {}, opts = {}) =>
    (await request('GET', path, { query: { ...query, _start: 0, _end: 0 }, ...opts })).total,
  post: async (path, body, opts = {}) => (await request('POST', path, { body, ...opts })).data,
  put: async (path, body, opts = {}) => (await request('PUT', path, { body, ...opts })).data,
  del: async (path, opts = {}) => (await request('DELETE', path, opts)).data,
};

/** The live output stream URL. EventSource cannot send headers, so the token rides in the query. */
export function streamUrl(job, id) {
  const token = getToken();
  return `${execPath(job, id)}/stream${token ? `?token=${encodeURIComponent(token)}` : ''}`;
}

// ---- who am I --------------------------------------------------------------------------------------------

export const session = {
  role: 'admin', // what the UI shows buttons for; the API still decides (403 is handled where it happens)
  auth: false, // whether the gateway asks for tokens
  source: '', // 'whoami' | 'probe'
};

export const can = (role) => ROLE_RANK[session.role] >= ROLE_RANK[role];

async function probe(method, path) {
  try {
    await request(method, path, { quiet: true });
    return 200;
  } catch (error) {
    if (error.status === 0) throw error;
    return error.status;
  }
}

/** Finds the token's role: GET /v1/whoami ({"role": ..., "auth": bool}) when the gateway has it, else by
 * probing routes that need more than read on a job that cannot exist (403 = not allowed, 404 = allowed;
 * nothing is changed either way). Rejects with a 401 ApiError when a token is needed. */
export async function resolveSession() {
  try {
    const me = await request('GET', '/v1/whoami', { quiet: true });
    const role = me.data && ROLE_RANK[me.data.role] !== undefined ? me.data.role : 'read';
    Object.assign(session, { role, auth: me.data.auth ?? Boolean(getToken()), source: 'whoami' });
    return session;
  } catch (error) {
    if (error.status === 401 || error.status === 0) throw error;
  }
  await request('GET', '/v1', { quiet: true }); // 401 here: a token is needed
  if (!getToken()) {
    Object.assign(session, { role: 'admin', auth: false, source: 'probe' });
    return session;
  }
  const toggle = await probe('POST', `${jobPath(PROBE_JOB)}/toggle`);
  let role = 'read';
  if (toggle !== 403 && toggle !== 401) {
    const remove = await probe('DELETE', jobPath(PROBE_JOB));
    role = remove === 403 ? 'operator' : 'admin';
  }
  Object.assign(session, { role, auth: true, source: 'probe' });
  return session;
}
