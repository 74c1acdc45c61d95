/**
 * Detached cells (`%%gpu --detach`) for the sidebar: `JobsModel` polls `GET jobs` while the
 * sidebar is shown and cancels with `DELETE jobs/{id}`. Kept apart from `ElasticModel`: the
 * jobs are the user's job registry, not the control plane's clusters.
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { RequestFn } from './types';

/** A job as `GET /jupyter-elastic/api/jobs` reports it (docs/rest-api.md). */
export interface IJob {
  id: string;
  name: string | null;
  notebook: string | null;
  state: string;
  started: number | null;
  ended: number | null;
  elapsed: number | null;
  gpu_seconds: number;
  cost: number;
  currency: string;
  error: string | null;
  runs?: number;
  trigger?: Record<string, unknown> | null;
}

/** States in which a job can still be cancelled. */
export const ACTIVE_STATES = ['submitted', 'starting', 'running', 'waiting'];

/** What the jobs section shows. */
export interface IJobsState {
  jobs: IJob[];
  error: string | null;
  cancelling: string[];
}

/** Polls the job list; `setVisible(false)` stops it. */
export class JobsModel {
  constructor(options: {
    request: RequestFn;
    refreshInterval?: number;
    autoStart?: boolean;
    visible?: boolean;
  }) {
    this._request = options.request;
    this._visible = options.visible ?? true;
    this._poll = new Poll({
      auto: options.autoStart ?? true,
      factory: () => this.refresh(),
      frequency: {
        interval: (options.refreshInterval ?? 5) * 1000,
        backoff: true,
        max: 60000
      },
      name: 'jupyter-elastic:jobs',
      standby: () => !this._visible || 'when-hidden'
    });
  }

  get changed(): ISignal<this, IJobsState> {
    return this._changed;
  }

  get state(): IJobsState {
    return this._state;
  }

  /** Shown or not: a hidden sidebar does not poll. */
  setVisible(visible: boolean): void {
    this._visible = visible;
    if (visible) {
      void this._poll.refresh();
    }
  }

  /** Read the job list now. */
  async refresh(): Promise<void> {
    try {
      const reply = await this._request<{ jobs: IJob[] }>('jobs');
      this._set({ jobs: reply.jobs, error: null });
    } catch (error) {
      this._set({ error: (error as Error).message });
    }
  }

  /** Cancel a job (its supervisor interrupts the cell), then refresh. */
  async cancel(id: string): Promise<void> {
    this._set({ cancelling: [...this._state.cancelling, id] });
    try {
      await this._request(`jobs/${encodeURIComponent(id)}`, {
        method: 'DELETE'
      });
      this._state = {
        ...this._state,
        cancelling: this._state.cancelling.filter(c => c !== id)
      };
      await this.refresh();
    } catch (error) {
      this._set({
        error: (error as Error).message,
        cancelling: this._state.cancelling.filter(c => c !== id)
      });
    }
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _set(change: Partial<IJobsState>): void {
    this._state = { ...this._state, ...change };
    this._changed.emit(this._state);
  }

  private _request: RequestFn;
  private _poll: Poll;
  private _visible = true;
  private _state: IJobsState = { jobs: [], error: null, cancelling: [] };
  private _changed = new Signal<this, IJobsState>(this);
}
