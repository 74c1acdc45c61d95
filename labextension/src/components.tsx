/**
 * React views of the sidebar: function components fed by props; they never fetch.
 */
import * as React from 'react';

import { SIDEBAR_TITLE } from './constants';
import {
  formatBytes,
  formatCost,
  formatDuration,
  idleLabel,
  wholeNumber
} from './format';
import { IElasticState } from './model';
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
}

/** The whole sidebar: usage, errors, clusters and cell history. */
export function ElasticPanel(props: IPanelProps): JSX.Element {
  const { state } = props;
  const currency = state.usage?.currency ?? 'USD';
  const clusterCost = state.clusters.reduce(
    (sum, c) => sum + (c.usage?.cost ?? 0),
    0
  );
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
              busy={state.busy.includes(cluster.id)}
              currency={cluster.currency ?? currency}
              onScale={props.onScale}
              onAdapt={props.onAdapt}
              onStop={props.onStop}
            />
          ))
        )}
      </section>
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
  busy: boolean;
  currency: string;
  onScale: IPanelActions['onScale'];
  onAdapt: IPanelActions['onAdapt'];
  onStop: IPanelActions['onStop'];
}

/** One cluster: status, counts, idle clock, cost, workers and controls. */
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
        <span className="elastic-ClusterCard-name" title={cluster.id}>
          {cluster.name}
        </span>
        <span className={`elastic-ClusterCard-status jp-mod-${cluster.status}`}>
          {cluster.status === 'starting' && cluster.phase
            ? cluster.phase
            : cluster.status}
        </span>
      </div>
      <dl className="elastic-ClusterCard-stats">
        <div>
          <dt>Backend</dt>
          <dd>{cluster.backend}</dd>
        </div>
        <div>
          <dt>Workers</dt>
          <dd className="elastic-ClusterCard-workerCount">{cluster.workers}</dd>
        </div>
        <div>
          <dt>GPUs</dt>
          <dd>{cluster.has_gpu === false ? 'none (CPU)' : cluster.gpus}</dd>
        </div>
        <div>
          <dt>Scaling</dt>
          <dd>{mode}</dd>
        </div>
        <div>
          <dt>Idle</dt>
          <dd className="elastic-ClusterCard-idle">{idleLabel(cluster)}</dd>
        </div>
        <div>
          <dt>Cost so far</dt>
          <dd className="elastic-ClusterCard-cost">
            {formatCost(cluster.usage?.cost, props.currency)}
          </dd>
        </div>
      </dl>
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

/** Props of `HistoryTable`. */
export interface IHistoryTableProps {
  rows: IHistoryRow[];
  currency: string;
  /** Most rows shown (newest first); default 25. */
  limit?: number;
}

/** The latest `%%gpu` cells: when, how long, GPU-seconds, cost, outcome. */
export function HistoryTable(props: IHistoryTableProps): JSX.Element {
  const rows = props.rows.slice(-(props.limit ?? 25)).reverse();
  if (rows.length === 0) {
    return <p className="elastic-Panel-empty">No %%gpu cells yet.</p>;
  }
  return (
    <table className="elastic-HistoryTable">
      <thead>
        <tr>
          <th>Cell</th>
          <th>Time</th>
          <th title="Wall-clock duration">Took</th>
          <th title="GPU-seconds (CPU-seconds on CPU workers)">GPU·s</th>
          <th>Cost</th>
        </tr>
      </thead>
      <tbody>
        {rows.map(row => (
          <tr
            key={row.id}
            className={`elastic-HistoryTable-row jp-mod-${row.status}`}
            title={
              row.error
                ? `${row.status}: ${row.error}`
                : `${row.device} · ${row.status}`
            }
          >
            <td>
              {row.status === 'ok' ? '' : '⚠ '}
              {row.cell === null ? '–' : `[${row.cell}]`}
            </td>
            <td>{timeOf(row.started)}</td>
            <td>{formatDuration(row.seconds)}</td>
            <td>
              {row.device === 'gpu'
                ? formatDuration(row.gpu_seconds)
                : `${row.device}`}
            </td>
            <td>{formatCost(row.cost, props.currency)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
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
