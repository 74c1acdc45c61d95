/**
 * The sidebar's "Detached jobs" section, fed by `JobsModel`'s state: one entry per job,
 * three short lines each (a 250 px panel has no room for a six-column table): name, state
 * and cost (known once it ends); notebook and elapsed time; then "Insert attach cell" (a
 * `%gpu attach` cell in the current notebook; not for cancelled or lost jobs) and, while the
 * job runs or waits for its trigger, "Cancel".
 */
import { UseSignal } from '@jupyterlab/apputils';
import * as React from 'react';

import { formatCost, formatDuration } from './format';
import { ACTIVE_STATES, IJob, IJobsState, JobsModel } from './jobs';

/** Props of `JobsTable`. */
export interface IJobsTableProps {
  state: IJobsState;
  onCancel: (job: IJob) => void;
  /** Insert a `%gpu attach ID` cell; no "Attach" button without it. */
  onAttach?: (job: IJob) => void;
}

/** What a job's state line says: the state, the runs of a triggered job. */
function stateText(job: IJob): string {
  const runs = job.runs ?? 0;
  return job.trigger
    ? `${job.state} · ${runs} run${runs === 1 ? '' : 's'}`
    : job.state;
}

/** Final states without results or output to follow. */
const NOTHING_TO_ATTACH = ['cancelled', 'lost'];

/** Whether the job's cost is known: it is priced when it (or a triggered run) ends. */
function priced(job: IJob): boolean {
  return !ACTIVE_STATES.includes(job.state) || (job.runs ?? 0) > 0;
}

/** The jobs, newest first. */
export function JobsTable(props: IJobsTableProps): JSX.Element {
  const { jobs, error, cancelling } = props.state;
  const newest = [...jobs].reverse();
  return (
    <div className="elastic-Jobs">
      {error && (
        <div className="elastic-Jobs-error" role="alert">
          {error}
        </div>
      )}
      {newest.length === 0 ? (
        <p className="elastic-Panel-empty">
          No detached jobs; run a cell with %%gpu --detach.
        </p>
      ) : (
        <ol className="elastic-Jobs-list">
          {newest.map(job => (
            <li
              key={job.id}
              className={`elastic-Jobs-row jp-mod-${job.state}`}
              data-job-id={job.id}
              data-state={job.state}
              title={job.error ? `${job.state}: ${job.error}` : job.id}
            >
              <div className="elastic-Jobs-main">
                <span className="elastic-Jobs-name">{job.name ?? job.id}</span>
                <span className="elastic-Jobs-state">{stateText(job)}</span>
                {priced(job) ? (
                  <span className="elastic-Jobs-cost" title="Cost">
                    {formatCost(job.cost, job.currency || undefined)}
                  </span>
                ) : (
                  <span
                    className="elastic-Jobs-cost"
                    title="Priced when the job ends"
                  >
                    –
                  </span>
                )}
              </div>
              <div className="elastic-Jobs-detail">
                <span
                  className="elastic-Jobs-notebook"
                  title={job.notebook ?? 'no notebook'}
                >
                  {(job.notebook ?? '').split('/').pop() || '–'}
                </span>
                <span className="elastic-Jobs-elapsed" title="Elapsed">
                  {formatDuration(job.elapsed)}
                </span>
              </div>
              <div className="elastic-Jobs-actions">
                {props.onAttach && !NOTHING_TO_ATTACH.includes(job.state) && (
                  <button
                    className="elastic-Button elastic-Jobs-attach"
                    title={`Insert a cell with %gpu attach ${job.id} into the current notebook`}
                    onClick={() => props.onAttach?.(job)}
                  >
                    Insert attach cell
                  </button>
                )}
                {ACTIVE_STATES.includes(job.state) && (
                  <button
                    className="elastic-Button jp-mod-warn elastic-Jobs-cancel"
                    disabled={cancelling.includes(job.id)}
                    onClick={() => props.onCancel(job)}
                  >
                    Cancel
                  </button>
                )}
              </div>
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}

/** The section, following the model. */
export function JobsSection(props: {
  model: JobsModel;
  onAttach?: (job: IJob) => void;
}): JSX.Element {
  return (
    <section className="elastic-Panel-section elastic-JobsSection">
      <h3 className="elastic-Panel-sectionTitle">Detached jobs</h3>
      <UseSignal signal={props.model.changed} initialArgs={props.model.state}>
        {(_, state?: IJobsState) => (
          <JobsTable
            state={state ?? props.model.state}
            onCancel={job => void props.model.cancel(job.id)}
            onAttach={props.onAttach}
          />
        )}
      </UseSignal>
    </section>
  );
}
