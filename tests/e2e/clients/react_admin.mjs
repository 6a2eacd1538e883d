// react-admin's JSON-server data provider (ra-data-json-server, as Dkron's UI uses it) driven against a gateway.
// Usage: node react_admin.mjs <api url> < calls.json   where calls.json is [{"method", "resource", "params"}, ...]
// Prints one JSON line per call: {"data", "total"} or {"error", "status"}. The executions of a job come through
// getManyReference the way Dkron's UI asks for them: /jobs/<id>/executions with jobs=<id> and output_size_limit.
import { fetchUtils } from 'ra-core';
import jsonServerProvider from 'ra-data-json-server';
import { stringify } from 'query-string';

const apiUrl = process.argv[2];
const httpClient = (url, options = {}) => {
  options.headers = new Headers({ Accept: 'application/json' });
  if (process.env.TOKEN) options.headers.set('Authorization', `Bearer ${process.env.TOKEN}`);
  return fetchUtils.fetchJson(url, options);
};
const base = jsonServerProvider(apiUrl, httpClient);

async function getManyReference(resource, params) {
  const { page, perPage } = params.pagination;
  const { field, order } = params.sort;
  const query = {
    ...fetchUtils.flattenObject(params.filter),
    [params.target]: params.id,
    _sort: field,
    _order: order,
    _start: (page - 1) * perPage,
    _end: page * perPage,
    output_size_limit: 200,
  };
  const { headers, json } = await httpClient(`${apiUrl}/${params.target}/${params.id}/${resource}?${stringify(query)}`);
  if (!headers.has('x-total-count')) throw new Error('The X-Total-Count header is missing');
  return { data: json, total: parseInt(headers.get('x-total-count').split('/').pop(), 10) };
}

async function call({ method, resource, params }) {
  if (method === 'getManyReference') return getManyReference(resource, params);
  if (method === 'fetch') {  // what the UI's buttons and dashboard fetch by hand (run, toggle, stats)
    const { json, status } = await httpClient(`${apiUrl}/${resource}`, { method: params.method || 'GET' });
    return { data: json, status };
  }
  return base[method](resource, params);
}

const calls = JSON.parse(await new Promise((resolve) => {
  let text = '';
  process.stdin.on('data', (chunk) => { text += chunk; });
  process.stdin.on('end', () => resolve(text));
}));
for (const c of calls) {
  try {
    process.stdout.write(JSON.stringify(await call(c)) + '\n');
  } catch (error) {
    process.stdout.write(JSON.stringify({ error: String(error.message || error), status: error.status ?? null }) + '\n');
  }
}
