/**
 * The sidebar's model: one `Poll` that reads clusters, history, usage and the timeline from
 * the server, and the actions (start, scale, adapt, stop) the panel offers. Views listen to
 * `changed` and say whether they are shown with `setVisible()`; they never write the
 * model's state.
 */
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  ICluster,
  IClusterList,
  ICreateCluster,
  IHistoryRow,
  IQuotaReport,
  ITimeline,
  IUsageReport,
  RequestFn
} from './types';

/** Everything the sidebar shows, as the model last saw it. */
export interface IElasticState {
  clusters: ICluster[];
  history: IHistoryRow[];
  usage: IUsageReport | null;
  /** The last hour of workers, GPUs, cost and busy intervals, as the server sampled it. */
  timeline: ITimeline | null;
  /** This user's quota at a shared hub's gateway (null until read, or where none). */
  quota: IQuotaReport | null;
  /** The last error from the server (a refresh or an action), shown in the panel. */
  error: string | null;
  /** Ids of clusters with an action (scale, adapt, stop) in flight. */
  busy: string[];
  /** Whether at least one refresh has completed. */
  loaded: boolean;
}

/** The one request for the clusters: the list, each cluster with its `worker_details`. */
export const CLUSTERS_WITH_DETAILS = 'clusters?details=1';

/** The quota asks the hub's gateway: read at most this often (not on every refresh). */
export const QUOTA_INTERVAL_MS = 30 * 1000;

/** Longest wait between refreshes while the server keeps failing (backoff ceiling). */
const MAX_INTERVAL_MS = 60 * 1000;

/**
 * Poll the server for clusters, history, usage and the timeline, and emit `changed` on
 * every update.
 */
export class ElasticModel implements IDisposable {
  /**
   * Create the model; it starts polling unless `autoStart` is false.
   */
  constructor(options: ElasticModel.IOptions) {
    this._request = options.request;
    this._visible = options.visible ?? true;
    this._poll = new Poll({
      auto: options.autoStart ?? true,
      factory: () => this._fetch(),
      frequency: {
        interval: secondsToMs(options.refreshInterval ?? 2),
        backoff: true,
        max: MAX_INTERVAL_MS
      },
      name: 'jupyter-elastic:model',
      // Idle while the page is hidden, and while no view shows the model.
      standby: () => !this._visible || 'when-hidden'
    });
  }

  /** Emitted with the new state after every refresh or action. */
  get changed(): ISignal<this, IElasticState> {
    return this._changed;
  }

  /** The state as last seen. */
  get state(): IElasticState {
    return this._state;
  }

  /** Whether the model is disposed. */
  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Seconds between refreshes. */
  get refreshInterval(): number {
    return this._poll.frequency.interval / 1000;
  }

  set refreshInterval(seconds: number) {
    this._poll.frequency = {
      ...this._poll.frequency,
      interval: secondsToMs(seconds)
    };
  }

  /** Whether a view shows the model (it polls only then). */
  get isVisible(): boolean {
    return this._visible;
  }

  /**
   * Tell the model whether its view is shown. Hidden, it stops polling; shown again, it
   * refreshes at once, then polls as usual.
   */
  setVisible(visible: boolean): void {
    if (visible === this._visible) {
      return;
    }
    this._visible = visible;
    if (visible) {
      void this.refresh();
    }
  }

  /** Refresh now; resolves once the new state has been emitted. */
  async refresh(): Promise<void> {
    if (this._isDisposed) {
      return;
    }
    await this._fetch().catch(() => undefined);
  }

  /** Start a cluster (`POST /clusters`). */
  async create(body: ICreateCluster): Promise<ICluster | null> {
    return this._act('new', () =>
      this._request<ICluster>('clusters', {
        method: 'POST',
        body: JSON.stringify(body)
      })
    );
  }

  /** Scale a cluster to a fixed `n` workers. */
  async scale(id: string, n: number): Promise<ICluster | null> {
    return this._act(id, () =>
      this._request<ICluster>(`clusters/${encodeURIComponent(id)}/scale`, {
        method: 'POST',
        body: JSON.stringify({ n })
      })
    );
  }

  /** Let a cluster scale adaptively between `minimum` and `maximum` workers. */
  async adapt(
    id: string,
    minimum: number,
    maximum: number
  ): Promise<ICluster | null> {
    return this._act(id, () =>
      this._request<ICluster>(`clusters/${encodeURIComponent(id)}/adapt`, {
        method: 'POST',
        body: JSON.stringify({ minimum, maximum })
      })
    );
  }

  /** Stop a cluster (the caller asks the user first). */
  async stop(id: string): Promise<boolean> {
    const done = await this._act(id, async () => {
      await this._request<void>(`clusters/${encodeURIComponent(id)}`, {
        method: 'DELETE'
      });
      return true;
    });
    return done === true;
  }

  /** Forget the error shown in the panel. */
  dismissError(): void {
    this._update({ error: null });
  }

  /** Stop polling and disconnect every listener. */
  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._poll.dispose();
    Signal.clearData(this);
  }

  /**
   * Run an action on a cluster: mark it busy, show a failure in the panel, refresh after.
   */
  private async _act<T>(
    id: string,
    action: () => Promise<T>
  ): Promise<T | null> {
    this._update({ busy: [...this._state.busy, id], error: null });
    let result: T | null = null;
    try {
      result = await action();
    } catch (error) {
      this._update({ error: errorMessage(error) });
    } finally {
      this._update({ busy: this._state.busy.filter(b => b !== id) });
    }
    await this.refresh();
    return result;
  }

  /**
   * One refresh: four requests in parallel, however many clusters there are. The
   * clusters come with their workers in one list (`?details=1`); history, usage and the
   * timeline are separate endpoints, read on every refresh too.
   */
  private async _fetch(): Promise<void> {
    // A reply that arrives after a newer one was shown is stale (a cluster stopped in
    // between would reappear): drop it.
    const seq = ++this._fetchSeq;
    try {
      const [list, history, usage, timeline, quota] = await Promise.all([
        this._request<IClusterList>(CLUSTERS_WITH_DETAILS),
        this._request<IHistoryRow[]>('history'),
        this._request<IUsageReport>('usage'),
        this._request<ITimeline>('timeline'),
        this._fetchQuota()
      ]);
      if (this._isDisposed || seq < this._appliedSeq) {
        return;
      }
      this._appliedSeq = seq;
      this._update({
        clusters: list.clusters,
        history,
        usage,
        timeline,
        quota,
        loaded: true,
        error: this._refreshFailed ? null : this._state.error
      });
      this._refreshFailed = false;
    } catch (error) {
      if (!this._isDisposed && seq >= this._appliedSeq) {
        this._refreshFailed = true;
        this._update({
          error: `Could not refresh: ${errorMessage(error)}`,
          loaded: true
        });
      }
      throw error; // let the Poll back off
    }
  }

  /**
   * The quota, read again once `QUOTA_INTERVAL_MS` has passed (it costs a call to the
   * hub's gateway); a failure keeps the last one and does not fail the refresh.
   */
  private async _fetchQuota(): Promise<IQuotaReport | null> {
    const now = Date.now();
    if (this._quotaAt !== null && now - this._quotaAt < QUOTA_INTERVAL_MS) {
      return this._state.quota;
    }
    this._quotaAt = now;
    try {
      return await this._request<IQuotaReport>('quota');
    } catch {
      return this._state.quota;
    }
  }

  private _update(change: Partial<IElasticState>): void {
    if (this._isDisposed) {
      return;
    }
    this._state = { ...this._state, ...change };
    this._changed.emit(this._state);
  }

  private _request: RequestFn;
  private _poll: Poll;
  private _visible: boolean;
  private _isDisposed = false;
  private _fetchSeq = 0;
  private _appliedSeq = 0;
  private _refreshFailed = false;
  private _quotaAt: number | null = null;
  private _state: IElasticState = {
    clusters: [],
    history: [],
    usage: null,
    timeline: null,
    quota: null,
    error: null,
    busy: [],
    loaded: false
  };
  private _changed = new Signal<this, IElasticState>(this);
}

/**
 * A namespace for `ElasticModel` statics.
 */
export namespace ElasticModel {
  /**
   * Options of an `ElasticModel`.
   */
  export interface IOptions {
    /** How to reach the REST API (`requestAPI` bound to the app's settings, or a fake). */
    request: RequestFn;
    /** Seconds between refreshes (default 2). */
    refreshInterval?: number;
    /** Start polling at once (default true; tests pass false and call `refresh()`). */
    autoStart?: boolean;
    /**
     * Whether a view shows the model from the start (default true). A sidebar that
     * starts collapsed passes false and calls `setVisible()` when it is shown.
     */
    visible?: boolean;
  }
}

/** The message of an error thrown by `requestAPI` (or anything else). */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

function secondsToMs(seconds: number): number {
  return Math.max(500, Math.round((Number(seconds) || 2) * 1000));
}
