// Schedules in words. Only a reading aid: the gateway parses and validates (POST /v1/schedule/preview), and an
// expression this file cannot put into words is shown as it is.

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October',
  'November', 'December'];
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTH_NAMES = Object.fromEntries(MONTHS.map((m, i) => [m.slice(0, 3).toLowerCase(), i + 1]));
const DAY_NAMES = Object.fromEntries(DAYS.map((d, i) => [d.slice(0, 3).toLowerCase(), i]));

const DESCRIPTORS = {
  '@yearly': 'Once a year, at midnight on January 1',
  '@annually': 'Once a year, at midnight on January 1',
  '@monthly': 'At midnight on the first day of every month',
  '@weekly': 'At midnight every Sunday',
  '@daily': 'Every day at midnight',
  '@midnight': 'Every day at midnight',
  '@hourly': 'Every hour, on the hour',
  '@minutely': 'Every minute',
  '@manually': 'Never by itself: only when run by hand',
};

const DURATION_UNITS = { h: 'hour', m: 'minute', s: 'second', ms: 'millisecond', us: 'microsecond', µs: 'microsecond', ns: 'nanosecond' };

function describeDuration(text) {
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/g)];
  if (!parts.length || parts.map((p) => p[0]).join('') !== text) return null;
  return parts.map(([, n, unit]) => `${n} ${DURATION_UNITS[unit]}${Number(n) === 1 ? '' : 's'}`).join(' ');
}

const pad = (n) => String(n).padStart(2, '0');

function listWords(items) {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/** One cron field as {kind, ...}: any, hash, value(s), range, step. Null when not understood. */
function parseField(text, names = {}) {
  const value = (token) => {
    const lower = token.toLowerCase();
    if (lower in names) return names[lower];
    return /^\d+$/.test(token) ? Number(token) : NaN;
  };
  if (text === '*' || text === '?') return { kind: 'any' };
  if (/^[~H]$/.test(text)) return { kind: 'hash' };
  const hashStep = /^[~H](?:\([^)]*\))?\/(\d+)$/.exec(text);
  if (hashStep) return { kind: 'step', step: Number(hashStep[1]), hashed: true };
  if (/^[~H]\(\d+-\d+\)$/.test(text)) return { kind: 'hash' };
  const step = /^(\*|[^/]+)\/(\d+)$/.exec(text);
  if (step) {
    const base = step[1] === '*' ? null : step[1].split('-').map(value);
    if (base && base.some(Number.isNaN)) return null;
    return { kind: 'step', step: Number(step[2]), from: base ? base[0] : null, to: base && base.length > 1 ? base[1] : null };
  }
  const items = text.split(',');
  if (items.length > 1 || !text.includes('-')) {
    const out = [];
    for (const item of items) {
      if (item.includes('-')) {
        const [a, b] = item.split('-').map(value);
        if (Number.isNaN(a) || Number.isNaN(b)) return null;
        out.push([a, b]);
      } else {
        const v = value(item);
        if (Number.isNaN(v)) return null;
        out.push(v);
      }
    }
    return out.every((x) => typeof x === 'number') ? { kind: 'values', values: out } : { kind: 'mixed', items: out };
  }
  const [a, b] = text.split('-').map(value);
  if (Number.isNaN(a) || Number.isNaN(b)) return null;
  return { kind: 'range', from: a, to: b };
}

function ordinal(n) {
  const s = ['th', 'st', 'nd', 'rd'];
  const v = n % 100;
  return n + (s[(v - 20) % 10] || s[v] || s[0]);
}

function unitPhrase(f, unit, show = (v) => String(v)) {
  switch (f.kind) {
    case 'any':
      return `every ${unit}`;
    case 'hash':
      return `at a ${unit} picked from the job name`;
    case 'step': {
      const every = f.step === 1 ? `every ${unit}` : `every ${f.step} ${unit}s`;
      if (f.hashed) return `${every}, offset by the job name`;
      if (f.from === null) return every;
      if (f.to === null) return `${every} starting at ${unit} ${show(f.from)}`;
      return `${every} from ${show(f.from)} through ${show(f.to)}`;
    }
    case 'values':
      return `at ${unit}${f.values.length > 1 ? 's' : ''} ${listWords(f.values.map(show))}`;
    case 'range':
      return `every ${unit} from ${show(f.from)} through ${show(f.to)}`;
    case 'mixed':
      return `at ${unit}s ${listWords(f.items.map((x) => (Array.isArray(x) ? `${show(x[0])}–${show(x[1])}` : show(x))))}`;
    default:
      return '';
  }
}

const dayName = (d) => DAYS[d % 7];

function dayPart(dom, month, dow) {
  const parts = [];
  const domText = dom.kind === 'any' ? '' : dom.kind === 'values'
    ? `on the ${listWords(dom.values.map(ordinal))} of the month`
    : dom.kind === 'range' ? `on days ${dom.from} through ${dom.to} of the month`
      : dom.kind === 'hash' ? 'on a day of the month picked from the job name'
        : `${unitPhrase(dom, 'day')} of the month`;
  let dowText = '';
  if (dow.kind === 'range') {
    dowText = dow.from === 1 && dow.to === 5 ? 'on weekdays' : `on ${dayName(dow.from)} through ${dayName(dow.to)}`;
  } else if (dow.kind === 'values') {
    const sorted = [...new Set(dow.values.map((d) => d % 7))].sort();
    dowText = sorted.join(',') === '0,6' ? 'on weekends' : `on ${listWords(sorted.map(dayName))}`;
  } else if (dow.kind === 'mixed') {
    dowText = `on ${listWords(dow.items.map((x) => (Array.isArray(x) ? `${dayName(x[0])}–${dayName(x[1])}` : dayName(x))))}`;
  } else if (dow.kind !== 'any') {
    dowText = unitPhrase(dow, 'weekday', dayName);
  }
  if (domText && dowText) parts.push(`${domText} or ${dowText}`);
  else if (domText || dowText) parts.push(domText || dowText);
  if (month.kind !== 'any') {
    const show = (m) => MONTHS[(m - 1) % 12] || String(m);
    if (month.kind === 'values') parts.push(`in ${listWords(month.values.map(show))}`);
    else if (month.kind === 'range') parts.push(`from ${show(month.from)} through ${show(month.to)}`);
    else parts.push(unitPhrase(month, 'month', show));
  }
  return parts.join(', ');
}

function timePart(sec, min, hour) {
  const fixed = (f) => f.kind === 'values';
  if (fixed(sec) && fixed(min) && fixed(hour)) {
    const times = [];
    for (const hh of hour.values) for (const mm of min.values) for (const ss of sec.values) times.push([hh, mm, ss]);
    if (times.length <= 6) {
      const anySeconds = times.some(([, , ss]) => ss !== 0);
      return `at ${listWords(times.map(([hh, mm, ss]) => `${pad(hh)}:${pad(mm)}${anySeconds ? `:${pad(ss)}` : ''}`))}`;
    }
  }
  const parts = [];
  const secondsMatter = !(fixed(sec) && sec.values.length === 1 && sec.values[0] === 0);
  if (!secondsMatter && min.kind === 'hash' && hour.kind === 'any') return 'every hour, at a minute picked from the job name';
  if (!secondsMatter && fixed(min) && min.values.length === 1) {
    const m = min.values[0];
    const at = m === 0 ? 'on the hour' : `at minute ${m}`;
    if (hour.kind === 'any') return m === 0 ? 'every hour, on the hour' : `at minute ${m} past every hour`;
    if (hour.kind === 'step' && hour.from === null && !hour.hashed) return `every ${hour.step} hours, ${at}`;
    if (hour.kind === 'range') return `every hour ${at}, between ${pad(hour.from)}:00 and ${pad(hour.to)}:59`;
  }
  if (secondsMatter) parts.push(unitPhrase(sec, 'second'));
  if (fixed(min) && !secondsMatter && min.values.length === 1) {
    parts.push(min.values[0] === 0 ? 'on the hour' : `at minute ${min.values[0]}`);
  } else if (!(secondsMatter && min.kind === 'any' && hour.kind === 'any')) {
    parts.push(min.kind === 'any' && secondsMatter ? 'of every minute' : unitPhrase(min, 'minute'));
  }
  if (hour.kind === 'any') {
    if (!(min.kind === 'any' || (min.kind === 'step' && !min.from))) parts.push('past every hour');
  } else if (hour.kind === 'values') {
    parts.push(hour.values.length === 1 ? `during the ${pad(hour.values[0])}:00 hour` : `past hours ${listWords(hour.values.map(pad))}`);
  } else if (hour.kind === 'range') {
    parts.push(`between ${pad(hour.from)}:00 and ${pad(hour.to)}:59`);
  } else {
    parts.push(`past ${unitPhrase(hour, 'hour', pad).replace(/^at /, '')}`);
  }
  return parts.join(', ');
}

/** "At 09:30 on weekdays", "Every 15 minutes", ... or null when the expression is not understood. */
export function describeSchedule(schedule, { parentJob = '' } = {}) {
  let text = (schedule || '').trim();
  if (!text) return parentJob ? `After ${parentJob} runs` : 'No schedule';
  let zone = '';
  const tz = /^(?:CRON_TZ|TZ)=(\S+)\s+(.*)$/.exec(text);
  if (tz) {
    zone = tz[1];
    text = tz[2].trim();
  }
  const inZone = zone ? ` (${zone})` : '';
  const lower = text.toLowerCase();
  if (lower in DESCRIPTORS) return DESCRIPTORS[lower] + inZone;
  if (lower.startsWith('@every ')) {
    const words = describeDuration(text.slice(7).trim());
    return words ? `Every ${words}` : null;
  }
  if (lower.startsWith('@at ')) return `Once, at ${text.slice(4).trim()}`;
  const fields = text.split(/\s+/);
  if (fields.length !== 5 && fields.length !== 6) return null;
  const [sec, min, hour, dom, month, dow] = fields.length === 6 ? fields : ['0', ...fields];
  const parsed = [
    parseField(sec), parseField(min), parseField(hour), parseField(dom), parseField(month, MONTH_NAMES),
    parseField(dow, DAY_NAMES),
  ];
  if (parsed.some((f) => f === null)) return null;
  const time = timePart(parsed[0], parsed[1], parsed[2]);
  const days = dayPart(parsed[3], parsed[4], parsed[5]);
  const everyDay = !days && /^at \d/.test(time) ? 'every day' : '';
  const sentence = [time, days || everyDay].filter(Boolean).join(' ');
  return sentence.charAt(0).toUpperCase() + sentence.slice(1) + inZone;
}
