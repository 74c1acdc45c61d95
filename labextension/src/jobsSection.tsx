/**
 * The sidebar's "Detached jobs" section: a table fed by `JobsModel`'s state, with Cancel
 * for jobs still running (or waiting for their trigger).
 */
import { UseSignal } from '@jupyterlab/apputils';
import * as React from 'react';

import { formatCost, formatDuration } from './format';
import { ACTIVE_STATES, IJob, IJobsState, JobsModel } from './jobs';

/** Props of `JobsTable`. */
export interface IJobsTableProps {
  state: IJobsState;
  onCancel: (job: IJob) => void;
}

/** One row per job: name (or id), notebook, state, elapsed, cost. */
export function JobsTable(props: IJobsTableProps): JSX.Element {
  const { jobs, error, cancelling } = props.state;
  return (
    <div className="elastic-Jobs">
      {error && <div className="elastic-Jobs-error">{error}</div>}
      {jobs.length === 0 ? (
        <p className="elastic-Panel-empty">
          No detached jobs; start one with %%gpu --detach.
        </p>
      ) : (
        <table className="elastic-HistoryTable elastic-JobsTable">
          <thead>
            <tr>
              <th>job</th>
              <th>notebook</th>
              <th>state</th>
              <th>elapsed</th>
              <th>cost</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {jobs.map(job => (
              <tr
                key={job.id}
                className={`elastic-HistoryTable-row jp-mod-${job.state}`}
                title={job.error ?? job.id}
              >
                <td>{job.name ?? job.id}</td>
                <td>{(job.notebook ?? '').split('/').pop() || '-'}</td>
                <td>
                  {job.state}
                  {job.trigger ? ` (${job.runs ?? 0} runs)` : ''}
                </td>
                <td>{formatDuration(job.elapsed)}</td>
                <td>{formatCost(job.cost, job.currency || undefined)}</td>
                <td>
                  {ACTIVE_STATES.includes(job.state) && (
                    <button
                      className="elastic-Button elastic-JobsTable-cancel"
                      disabled={cancelling.includes(job.id)}
                      onClick={() => props.onCancel(job)}
                    >
                      Cancel
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

/** The section, following the model. */
export function JobsSection(props: { model: JobsModel }): JSX.Element {
  return (
    <section className="elastic-Panel-section elastic-JobsSection">
      <h3 className="elastic-Panel-sectionTitle">Detached jobs</h3>
      <UseSignal signal={props.model.changed} initialArgs={props.model.state}>
        {(_, state?: IJobsState) => (
          <JobsTable
            state={state ?? props.model.state}
            onCancel={job => void props.model.cancel(job.id)}
          />
        )}
      </UseSignal>
    </section>
  );
}
