/**
 * Pre-warm from the editor: the first `%%gpu` cell typed into a notebook tells the server
 * (`POST /prewarm {path}`), which starts that notebook's scheduler while the user is still
 * typing. A notebook saved with `%%gpu` cells needs no message: the server pre-warms it when
 * its kernel starts.
 */
import { RequestFn } from './types';

/** Whether any of these cell sources opens with the `%%gpu` magic. */
export function hasGpuCell(sources: readonly string[]): boolean {
  return sources.some(source => /^\s*%%gpu(\s|$)/.test(source.slice(0, 200)));
}

/** What the watcher needs of a notebook: its path and its cells' sources. */
export interface IWatchedNotebook {
  /** The notebook's API path (as in `/api/sessions`). */
  path(): string;
  /** The current source of every cell. */
  sources(): string[];
}

/**
 * Sends one `POST /prewarm` per notebook, the first time a `%%gpu` cell appears in a
 * notebook that had none when it was opened. `changed()` is called on every edit; the check
 * waits `delay` ms after the last one, so typing costs one scan per pause, not per key.
 */
export class PrewarmWatcher {
  constructor(
    private readonly request: RequestFn,
    private readonly notebook: IWatchedNotebook,
    private readonly delay = 300
  ) {
    this._done = hasGpuCell(notebook.sources()); // the server saw these at kernel start
  }

  /** Whether the watcher has nothing left to do (sent, or the notebook had `%%gpu` cells). */
  get done(): boolean {
    return this._done;
  }

  /** The notebook changed: check it after a pause in typing. */
  changed(): void {
    if (this._done) {
      return;
    }
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      void this.check();
    }, this.delay);
  }

  /** Send the pre-warm request now if a `%%gpu` cell is present (once). */
  async check(): Promise<void> {
    if (this._done || !hasGpuCell(this.notebook.sources())) {
      return;
    }
    this._done = true;
    try {
      await this.request('prewarm', {
        method: 'POST',
        body: JSON.stringify({ path: this.notebook.path() })
      });
    } catch (reason) {
      // No kernel yet, or pre-warm unavailable: the first cell starts the cluster as usual.
      console.debug('jupyter-elastic: pre-warm not sent', reason);
    }
  }

  /** Stop a pending check. */
  dispose(): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    this._done = true;
  }

  private _done: boolean;
  private _timer: ReturnType<typeof setTimeout> | null = null;
}
