/**
 * Formatting of seconds, money and bytes for the sidebar.
 */
import { IQuotaReport } from './types';

/** `75` → `"1m 15s"`, `3725` → `"1h 2m"`, `0.42` → `"0.42s"`. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '–';
  }
  const s = Math.max(0, seconds);
  if (s < 10) {
    return `${Number(s.toFixed(2))}s`;
  }
  const whole = Math.round(s);
  if (whole < 60) {
    return `${whole}s`;
  }
  if (whole < 3600) {
    const m = Math.floor(whole / 60);
    const rest = whole - m * 60;
    return rest ? `${m}m ${rest}s` : `${m}m`;
  }
  const minutes = Math.round(whole / 60);
  const h = Math.floor(minutes / 60);
  const m = minutes - h * 60;
  return m ? `${h}h ${m}m` : `${h}h`;
}

/**
 * Money in the server's currency, one format everywhere: the currency's usual decimals
 * from one unit up (`$12.50`), two significant digits below (`$0.45`, `$0.012`,
 * `$0.0008`) down to a hundredth of a cent (`<$0.0001` below), `$0.00` for nothing.
 */
export function formatCost(
  amount: number | null | undefined,
  currency = 'USD'
): string {
  const value =
    amount !== null && amount !== undefined && isFinite(amount) ? amount : 0;
  let usual = 2;
  try {
    usual =
      new Intl.NumberFormat('en-US', {
        style: 'currency',
        currency
      }).resolvedOptions().maximumFractionDigits ?? 2;
  } catch {
    // Not an ISO 4217 code: the number, then the code as the server spelled it.
    return `${formatCost(value, 'USD').replace('$', '')} ${currency}`;
  }
  const size = Math.abs(value);
  const floor = Math.pow(10, -(usual + 2)); // a hundredth of a cent
  if (size > 0 && size < floor) {
    return `<${formatCost(value < 0 ? -floor : floor, currency)}`;
  }
  const fraction =
    size === 0 || size >= 1
      ? usual
      : Math.min(20, Math.max(usual, 1 - Math.floor(Math.log10(size))));
  return new Intl.NumberFormat('en-US', {
    style: 'currency',
    currency,
    minimumFractionDigits: usual,
    maximumFractionDigits: fraction
  }).format(value);
}

/** GPU- or CPU-seconds: `1.234` → `"1.23"`, `1234.5` → `"1,235"`, `0.004` → `"<0.01"`. */
export function formatSeconds(seconds: number | null | undefined): string {
  const value =
    seconds !== null && seconds !== undefined && isFinite(seconds)
      ? Math.max(0, seconds)
      : 0;
  if (value > 0 && value < 0.01) {
    return '<0.01';
  }
  return value.toLocaleString('en-US', {
    maximumFractionDigits: value < 10 ? 2 : value < 100 ? 1 : 0
  });
}

/** The file name of a path: `"work/my analysis.ipynb"` → `"my analysis.ipynb"`. */
export function fileName(path: string): string {
  const parts = path.split('/').filter(part => part !== '');
  return parts.length ? parts[parts.length - 1] : path;
}

/**
 * Each cluster's notebook (its path), from the history rows the cluster ran: a cluster
 * `%%gpu` started is named `nb-<slug>-<hash>` after its notebook, and its rows carry the
 * notebook's path. The latest row wins.
 */
export function clusterNotebooks(
  rows: { cluster_id: string | null; notebook?: string | null }[]
): Map<string, string> {
  const found = new Map<string, string>();
  for (const row of rows) {
    if (row.cluster_id && row.notebook) {
      found.set(row.cluster_id, row.notebook);
    }
  }
  return found;
}

/**
 * What a cluster is called in the panel: its notebook's file name when known, else the
 * slug of a notebook cluster's name (`nb-my-analysis-c5e3a1b2` → `my-analysis`), else
 * its name.
 */
export function clusterLabel(name: string, notebook?: string | null): string {
  if (notebook) {
    return fileName(notebook);
  }
  const match = /^nb-(.+)-[0-9a-f]{8}(?:-[a-z]{1,4})?$/.exec(name);
  return match ? match[1] : name;
}

/** `536870912` → `"512 MiB"`. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !isFinite(bytes)) {
    return '–';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${Number(value.toFixed(value < 10 && unit > 0 ? 1 : 0))} ${units[unit]}`;
}

/** What the idle clock of a cluster says: busy, counting down to zero workers, or at zero. */
export function idleLabel(cluster: {
  workers: number;
  idle_seconds: number;
  idle_timeout: number;
  running_cells?: number;
}): string {
  if (cluster.running_cells) {
    return `busy (${cluster.running_cells} cell${cluster.running_cells > 1 ? 's' : ''})`;
  }
  if (cluster.workers === 0) {
    return 'scaled to zero';
  }
  const left = cluster.idle_timeout - cluster.idle_seconds;
  return left > 0 ? `to zero in ${formatDuration(left)}` : 'scaling to zero';
}

/** A whole number >= 0 typed into a field, or null for anything else (empty included). */
export function wholeNumber(text: string): number | null {
  return /^\s*\d+\s*$/.test(text) ? Number(text) : null;
}

/**
 * One short line for the user's quota at a shared hub (fits a 250 px panel):
 * "GPUs 1 of 2 held (group students)"; null where no quota is enforced.
 */
export function quotaLine(report: IQuotaReport | null): string | null {
  if (!report || !report.available || !report.quota) {
    return null;
  }
  const { limits, holding } = report.quota;
  const held = formatNumber(holding.gpus);
  const source =
    limits.source === 'the default for every user' ? 'default' : limits.source;
  return limits.gpus === null
    ? `GPUs ${held} held, no limit (${source})`
    : `GPUs ${held} of ${formatNumber(limits.gpus)} held (${source})`;
}

/** The quota's details for a tooltip: workers, GPU types, who to ask. */
export function quotaTitle(report: IQuotaReport | null): string {
  if (!report || !report.quota) {
    return '';
  }
  const q = report.quota;
  const workers =
    q.limits.workers === null
      ? `${q.holding.workers} workers (no limit)`
      : `${q.holding.workers} of ${q.limits.workers} workers`;
  const types = q.limits.gpu_types ? q.limits.gpu_types.join(', ') : 'any';
  const ask = q.contact ? `; for more ask ${q.contact}` : '';
  return `Quota at the hub's gateway for ${q.user}: ${workers}, GPU types ${types}${ask}`;
}

function formatNumber(value: number): string {
  return isFinite(value) ? String(Math.round(value * 100) / 100) : '?';
}
