/**
 * Formatting of seconds, money and bytes for the sidebar.
 */

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

/** Money with the currency code: `0.0123, "USD"` → `"$0.0123"`; small amounts keep 4 places. */
export function formatCost(
  amount: number | null | undefined,
  currency = 'USD'
): string {
  const value = amount ?? 0;
  const digits = value !== 0 && Math.abs(value) < 1 ? 4 : 2;
  try {
    return new Intl.NumberFormat('en-US', {
      style: 'currency',
      currency,
      minimumFractionDigits: digits,
      maximumFractionDigits: digits
    }).format(value);
  } catch {
    return `${value.toFixed(digits)} ${currency}`;
  }
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
