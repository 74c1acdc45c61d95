/**
 * React views of the sidebar: function components fed by props; they never fetch.
 */
import * as React from 'react';

import { SIDEBAR_TITLE } from './constants';
import {
  clusterLabel,
  clusterNotebooks,
  fileName,
  formatBytes,
  formatCost,
  formatDuration,
  formatSeconds,
  idleLabel,
  wholeNumber
} from './format';
import { IElasticState } from './model';
import { TimelineChart } from './timeline';
import { ICluster, IHistoryRow, IWorkerDetail } from './types';

/** Actions the panel offers; the widget wires them to the model and dialogs. */
export interface IPanelActions {
  /** Start a cluster on the default backend. */
  onCreate: () => void;
  /** Scale to a fixed number of workers. */
  onScale: (cluster: ICluster, n: number) => void;
  /** Scale adaptively within bounds. */
  onAdapt: (cluster: ICluster, minimum: number, maximum: number) => void;
  /** Stop (after confirmation, done by the widget). */
  onStop: (cluster: ICluster) => void;
  /** Hide the error banner. */
  onDismissError: () => void;
}

/** Props of `ElasticPanel`. */
export interface IPanelProps extends IPanelActions {
  /** What the model last saw. */
  state: IElasticState;
  /** Backend the "New cluster" button uses. */
  defaultBackend: string;
  /** Shown between the clusters and the cell history (the detached jobs). */
  jobs?: React.ReactNode;
}

/** The whole sidebar: usage, the last hour, errors, clusters and cell history. */
export function ElasticPanel(props: IPanelProps): JSX.Element {
  const { state } = props;
  const currency = state.usage?.currency ?? 'USD';
  const clusterCost = state.clusters.reduce(
    (sum, c) => sum + (c.usage?.cost ?? 0),
    0
  );
  const notebooks = clusterNotebooks(state.history);
  return (
    <div className="elastic-Panel">
      <header className="elastic-Panel-header">
        <h2 className="elastic-Panel-title">{SIDEBAR_TITLE}</h2>
        <button
          className="elastic-Button jp-mod-accept"
          onClick={props.onCreate}
          disabled={state.busy.includes('new')}
          title={`Start a cluster on the ${props.defaultBackend} backend`}
        >
          {state.busy.includes('new') ? 'Starting…' : 'New cluster'}
        </button>
      </header>
      <div className="elastic-Panel-summary" aria-label="Usage">
        <span>
          {state.clusters.length} cluster
          {state.clusters.length === 1 ? '' : 's'}
        </span>
        <span title="Cost so far of the clusters listed here">
          running cost {formatCost(clusterCost, currency)}
        </span>
        {state.usage && (
          <span title="Cost of the %%gpu cells recorded below">
            cells {formatCost(state.usage.cells.cost, currency)}
          </span>
        )}
      </div>
      <TimelineChart
        timeline={state.timeline}
        rows={state.history}
        currency={currency}
      />
      {state.error && (
        <div className="elastic-Panel-error" role="alert">
          <span className="elastic-Panel-errorText">{state.error}</span>
          <button
            className="elastic-LinkButton"
            onClick={props.onDismissError}
            aria-label="Dismiss error"
          >
            ✕
          </button>
        </div>
      )}
      <section className="elastic-Panel-section">
        <h3 className="elastic-Panel-sectionTitle">Clusters</h3>
        {state.clusters.length === 0 ? (
          <p className="elastic-Panel-empty">
            {state.loaded
              ? 'No clusters. Run a %%gpu cell or press "New cluster".'
              : 'Loading…'}
          </p>
        ) : (
          state.clusters.map(cluster => (
            <ClusterCard
              key={cluster.id}
              cluster={cluster}
              notebook={notebooks.get(cluster.id) ?? null}
              busy={state.busy.includes(cluster.id)}
              currency={cluster.currency ?? currency}
              onScale={props.onScale}
              onAdapt={props.onAdapt}
              onStop={props.onStop}
            />
          ))
        )}
      </section>
      {props.jobs}
      <section className="elastic-Panel-section">
        <h3 className="elastic-Panel-sectionTitle">%%gpu cells</h3>
        <HistoryTable rows={state.history} currency={currency} />
      </section>
    </div>
  );
}

/** Props of `ClusterCard`. */
export interface IClusterCardProps {
  cluster: ICluster;
  /** The path of the notebook whose cells ran on it, when known. */
  notebook?: string | null;
  busy: boolean;
  currency: string;
  onScale: IPanelActions['onScale'];
  onAdapt: IPanelActions['onAdapt'];
  onStop: IPanelActions['onStop'];
}

/**
 * One cluster: its notebook (or name), status, backend and sizing, counts, cost, the idle
 * clock, workers and controls. Laid out for a 250 px panel.
 */
export function ClusterCard(props: IClusterCardProps): JSX.Element {
  const { cluster, busy } = props;
  const [n, setN] = React.useState(
    String(cluster.requested_workers ?? cluster.workers)
  );
  const [minimum, setMinimum] = React.useState(
    String(cluster.adapt?.minimum ?? 0)
  );
  const [maximum, setMaximum] = React.useState(
    String(cluster.adapt?.maximum ?? 4)
  );
  // Follow changes made elsewhere (%gpu scale / adapt in a kernel), not every poll.
  React.useEffect(() => {
    if (
      cluster.requested_workers !== null &&
      cluster.requested_workers !== undefined
    ) {
      setN(String(cluster.requested_workers));
    }
  }, [cluster.requested_workers]);
  React.useEffect(() => {
    if (cluster.adapt) {
      setMinimum(String(cluster.adapt.minimum));
      setMaximum(String(cluster.adapt.maximum));
    }
  }, [cluster.adapt?.minimum, cluster.adapt?.maximum]);
  const nValue = wholeNumber(n);
  const minValue = wholeNumber(minimum);
  const maxValue = wholeNumber(maximum);
  const adaptValid =
    minValue !== null && maxValue !== null && minValue <= maxValue;
  const running = cluster.status === 'running';
  const mode = cluster.adapt
    ? `adaptive ${cluster.adapt.minimum}–${cluster.adapt.maximum}`
    : `fixed ${cluster.requested_workers ?? cluster.workers}`;
  return (
    <div
      className="elastic-ClusterCard"
      data-cluster-id={cluster.id}
      data-status={cluster.status}
    >
      <div className="elastic-ClusterCard-head">
        <span
          className="elastic-ClusterCard-name"
          title={
            props.notebook
              ? `${cluster.name} (${props.notebook})`
              : `${cluster.name} (${cluster.id})`
          }
        >
          {clusterLabel(cluster.name, props.notebook)}
        </span>
        <span className={`elastic-ClusterCard-status jp-mod-${cluster.status}`}>
          {cluster.status === 'starting' && cluster.phase
            ? cluster.phase
            : cluster.status}
        </span>
      </div>
      <div className="elastic-ClusterCard-meta" title="Backend · scaling">
        {cluster.backend} · {mode}
      </div>
      <dl className="elastic-ClusterCard-stats">
        <div>
          <dt>Workers</dt>
          <dd className="elastic-ClusterCard-workerCount">{cluster.workers}</dd>
        </div>
        <div>
          <dt>GPUs</dt>
          <dd title={cluster.has_gpu === false ? 'CPU workers' : undefined}>
            {cluster.has_gpu === false ? 'none' : cluster.gpus}
          </dd>
        </div>
        <div>
          <dt>Cost so far</dt>
          <dd className="elastic-ClusterCard-cost">
            {formatCost(cluster.usage?.cost, props.currency)}
          </dd>
        </div>
      </dl>
      <IdleClock cluster={cluster} />
      <WorkerList workers={cluster.worker_details ?? []} />
      <div className="elastic-ClusterCard-controls">
        <form
          className="elastic-ClusterCard-control"
          onSubmit={event => {
            event.preventDefault();
            if (nValue !== null) {
              props.onScale(cluster, nValue);
            }
          }}
        >
          <label>
            Workers
            <input
              className="elastic-Input"
              type="number"
              min={0}
              value={n}
              aria-label="Number of workers"
              onChange={event => setN(event.target.value)}
            />
          </label>
          <button
            className="elastic-Button"
            type="submit"
            disabled={busy || !running || nValue === null}
            title={
              nValue === null
                ? 'Enter a whole number of workers (0 or more)'
                : undefined
            }
          >
            Scale
          </button>
        </form>
        <form
          className="elastic-ClusterCard-control"
          onSubmit={event => {
            event.preventDefault();
            if (adaptValid) {
              props.onAdapt(cluster, minValue as number, maxValue as number);
            }
          }}
        >
          <label>
            Min
            <input
              className="elastic-Input"
              type="number"
              min={0}
              value={minimum}
              aria-label="Minimum workers"
              onChange={event => setMinimum(event.target.value)}
            />
          </label>
          <label>
            Max
            <input
              className="elastic-Input"
              type="number"
              min={0}
              value={maximum}
              aria-label="Maximum workers"
              onChange={event => setMaximum(event.target.value)}
            />
          </label>
          <button
            className="elastic-Button"
            type="submit"
            disabled={busy || !running || !adaptValid}
            title={
              adaptValid
                ? undefined
                : 'Enter whole numbers with Min no larger than Max'
            }
          >
            Adapt
          </button>
        </form>
      </div>
      <div className="elastic-ClusterCard-footer">
        {cluster.dashboard_link ? (
          <a
            className="elastic-ClusterCard-dashboard"
            href={cluster.dashboard_link}
            target="_blank"
            rel="noopener noreferrer"
          >
            Dask dashboard ↗
          </a>
        ) : (
          <span />
        )}
        <button
          className="elastic-Button jp-mod-warn"
          onClick={() => props.onStop(cluster)}
          disabled={busy || cluster.status === 'stopping'}
          aria-label="Stop cluster"
        >
          {busy ? '…' : 'Stop'}
        </button>
      </div>
    </div>
  );
}

/** Props of `WorkerList`. */
export interface IWorkerListProps {
  workers: IWorkerDetail[];
}

/** Per-worker GPU and memory, as far as the workers report them. */
export function WorkerList(props: IWorkerListProps): JSX.Element | null {
  if (props.workers.length === 0) {
    return null;
  }
  return (
    <ul className="elastic-WorkerList">
      {[...props.workers]
        .sort((a, b) =>
          a.name.localeCompare(b.name, undefined, { numeric: true })
        )
        .map(worker => (
          <li
            key={worker.name}
            className="elastic-WorkerList-item"
            data-worker={worker.name}
          >
            <span className="elastic-WorkerList-name" title={worker.address}>
              {worker.name}
            </span>
            <span className="elastic-WorkerList-gpu">{gpuLabel(worker)}</span>
            <span className="elastic-WorkerList-memory" title="Memory limit">
              {formatBytes(worker.memory)}
            </span>
          </li>
        ))}
    </ul>
  );
}

function gpuLabel(worker: IWorkerDetail): string {
  if (!worker.gpus) {
    return 'no GPU';
  }
  const parts = [`${worker.gpus} GPU`];
  if (worker.gpu_utilization !== null && worker.gpu_utilization !== undefined) {
    parts.push(`${Math.round(worker.gpu_utilization)}%`);
  }
  if (worker.gpu_memory !== null && worker.gpu_memory !== undefined) {
    parts.push(formatBytes(worker.gpu_memory));
  }
  return parts.join(' · ');
}

/** The idle clock: busy, counting down to zero workers (with a bar), or at zero. */
export function IdleClock(props: { cluster: ICluster }): JSX.Element {
  const { cluster } = props;
  const counting =
    !cluster.running_cells && cluster.workers > 0 && cluster.idle_timeout > 0;
  const left = counting
    ? Math.max(0, 1 - cluster.idle_seconds / cluster.idle_timeout)
    : 0;
  return (
    <div className="elastic-ClusterCard-idleRow">
      <span className="elastic-ClusterCard-idleLabel">Idle</span>
      <span className="elastic-ClusterCard-idle">{idleLabel(cluster)}</span>
      {counting && (
        <span
          className="elastic-ClusterCard-idleBar"
          role="meter"
          aria-label="Idle time left before scaling to zero"
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={Math.round(left * 100)}
        >
          <span style={{ width: `${Math.round(left * 100)}%` }} />
        </span>
      )}
    </div>
  );
}

/** Props of `HistoryTable`. */
export interface IHistoryTableProps {
  rows: IHistoryRow[];
  currency: string;
  /** Most rows shown (newest first); default 25. */
  limit?: number;
}

/**
 * The latest `%%gpu` cells, newest first, two lines each (a 250 px panel has no room for
 * six columns): notebook and cell, cost; then when, how long, and the GPU- or
 * CPU-seconds it used.
 */
export function HistoryTable(props: IHistoryTableProps): JSX.Element {
  const rows = props.rows.slice(-(props.limit ?? 25)).reverse();
  if (rows.length === 0) {
    return <p className="elastic-Panel-empty">No %%gpu cells yet.</p>;
  }
  return (
    <ol className="elastic-History">
      {rows.map(row => (
        <li
          key={row.id}
          className={`elastic-History-row jp-mod-${row.status}`}
          data-status={row.status}
          title={row.error ? `${row.status}: ${row.error}` : row.status}
        >
          <div className="elastic-History-main">
            <span
              className="elastic-History-notebook"
              title={
                row.notebook ?? 'no notebook (not started by a Jupyter server)'
              }
            >
              {row.notebook ? fileName(row.notebook) : '–'}
            </span>
            <span className="elastic-History-cell">
              {row.status === 'ok' ? '' : '⚠ '}
              {row.cell === null ? '' : `[${row.cell}]`}
            </span>
            <span className="elastic-History-cost">
              {formatCost(row.cost, props.currency)}
            </span>
          </div>
          <div className="elastic-History-detail">
            <span title={row.started}>{timeOf(row.started)}</span>
            <span title="Wall-clock duration">
              took {formatDuration(row.seconds)}
            </span>
            <span className="elastic-History-usage">{usageOf(row)}</span>
          </div>
        </li>
      ))}
    </ol>
  );
}

/** What a cell used: GPU-seconds, CPU-seconds, or nothing billed (`--local`). */
export function usageOf(row: IHistoryRow): string {
  if (row.device === 'gpu') {
    return `${formatSeconds(row.gpu_seconds)} GPU·s`;
  }
  if (row.device === 'cpu') {
    return `${formatSeconds(row.cpu_seconds)} CPU·s`;
  }
  return 'local, not billed';
}

function timeOf(iso: string): string {
  const date = new Date(iso);
  return isNaN(date.getTime())
    ? iso
    : date.toLocaleTimeString([], {
        hour: '2-digit',
        minute: '2-digit',
        second: '2-digit'
      });
}
