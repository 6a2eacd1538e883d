// The cluster-wide pause of job submissions: a banner on every page with who paused, when and why (until
// resumed), and the pause and resume actions (POST /v1/pause with a note, POST /v1/unpause).

import { api, can } from './api.js';
import { append, button, clear, confirmDialog, h, icon, timeAgo, toast, toastError } from './dom.js';

/** @typedef {{paused: boolean, note?: string, paused_by?: string, paused_at?: string | null}} PauseState */

/** @type {PauseState} */
export const pauseState = { paused: false };
const listeners = /** @type {Array<(state: PauseState) => void>} */ ([]);

/** Calls fn with the pause state whenever it has been read again; returns what stops that. */
export function onPause(fn) {
  listeners.push(fn);
  return () => {
    const at = listeners.indexOf(fn);
    if (at >= 0) listeners.splice(at, 1);
  };
}

function banner() {
  return /** @type {HTMLElement} */ (document.getElementById('pause-banner'));
}

function render() {
  const slot = banner();
  if (!slot) return;
  clear(slot);
  slot.hidden = !pauseState.paused;
  if (!pauseState.paused) return;
  const who = pauseState.paused_by ? ` by ${pauseState.paused_by}` : '';
  append(slot, h('div', { class: 'pause-inner alert alert-warn', role: 'status' }, icon('pause'),
    h('div', {},
      h('strong', {}, 'New job submissions are paused'),
      h('p', { class: 'pause-who' }, `Paused${who} `, timeAgo(pauseState.paused_at, { empty: '' }), '.'),
      pauseState.note ? h('p', { class: 'pause-note' }, pauseState.note) : null,
      h('p', { class: 'small' }, 'Creating or changing jobs is refused until they are resumed; scheduled runs go on.')),
    can('admin') ? button('Resume', { iconName: 'play', onclick: resume, dataset: { key: 'resume' } }) : null));
}

/** Reads the pause state (GET /v1/pause) and shows it; an older gateway without pause shows nothing. */
export async function loadPause(opts = {}) {
  let state;
  try {
    state = await api.get('/v1/pause', {}, { ...opts, quiet: true });
  } catch (error) {
    if (error.name === 'AbortError' || error.status === 401) throw error;
    return pauseState;
  }
  Object.assign(pauseState, { paused: false, note: '', paused_by: '', paused_at: null }, state);
  render();
  for (const fn of listeners) fn(pauseState);
  return pauseState;
}

async function resume() {
  try {
    await api.post('/v1/unpause');
    toast('Job submissions resumed.', 'ok');
    await loadPause();
  } catch (error) {
    toastError('Resume', error);
  }
}

/** Asks for a note (why, who) and pauses job submissions across the cluster. */
export async function pauseWithNote() {
  const note = h('textarea', { id: 'pause-note', rows: 3, maxlength: 1000, placeholder: 'e.g. Consul upgrade, back by 15:00' });
  const by = h('input', { id: 'pause-by', maxlength: 200, autocomplete: 'name', placeholder: 'Your name or team' });
  const ok = await confirmDialog({
    title: 'Pause job submissions?',
    body: h('div', { class: 'pause-form' },
      h('p', {}, 'Every gateway refuses to create or change jobs until they are resumed. Scheduled runs go on. Everyone sees your note.'),
      h('label', { for: 'pause-note' }, 'Why'), note,
      h('label', { for: 'pause-by' }, 'Who'), by),
    confirmLabel: 'Pause submissions',
  });
  if (!ok) return;
  try {
    await api.post('/v1/pause', { note: note.value.trim(), paused_by: by.value.trim() });
    toast('Job submissions paused.', 'ok');
    await loadPause();
  } catch (error) {
    toastError('Pause', error);
  }
}
