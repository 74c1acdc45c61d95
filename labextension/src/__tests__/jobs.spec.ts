/**
 * The sidebar's jobs model against a fake REST API, and the jobs section's markup.
 */
import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';

import { IJob, JobsModel } from '../jobs';
import { JobsTable } from '../jobsSection';

// The section's UseSignal is not rendered here (apputils ships ES modules jest does not load).
jest.mock('@jupyterlab/apputils', () => ({ UseSignal: () => null }));
import { RequestFn } from '../types';

function job(id: string, state: string): IJob {
  return {
    id,
    name: `n-${id}`,
    notebook: 'work/train.ipynb',
    state,
    started: 1,
    ended: null,
    elapsed: 3,
    gpu_seconds: 0,
    cost: 0,
    currency: 'USD',
    error: null
  };
}

describe('JobsModel', () => {
  it('lists jobs, cancels one with DELETE and refreshes', async () => {
    const calls: string[] = [];
    let jobs = [job('a', 'running'), job('b', 'done')];
    const request = (async (path: string, init?: RequestInit) => {
      calls.push(`${init?.method ?? 'GET'} ${path}`);
      if (init?.method === 'DELETE') {
        jobs = jobs.map(j => (j.id === 'a' ? { ...j, state: 'cancelled' } : j));
        return jobs[0];
      }
      return { jobs };
    }) as RequestFn;
    const model = new JobsModel({ request, autoStart: false });
    const seen: string[][] = [];
    model.changed.connect((_, state) =>
      seen.push(state.jobs.map(j => j.state))
    );
    await model.refresh();
    expect(model.state.jobs.map(j => j.id)).toEqual(['a', 'b']);
    await model.cancel('a');
    expect(calls).toEqual(['GET jobs', 'DELETE jobs/a', 'GET jobs']);
    expect(model.state.jobs[0].state).toBe('cancelled');
    expect(model.state.cancelling).toEqual([]);
    expect(seen[seen.length - 1]).toEqual(['cancelled', 'done']);
    model.dispose();
  });

  it('keeps the server message of a failed request', async () => {
    const request = (async () => {
      throw new Error("no job with id or name 'x'");
    }) as RequestFn;
    const model = new JobsModel({ request, autoStart: false });
    await model.cancel('x');
    expect(model.state.error).toBe("no job with id or name 'x'");
    expect(model.state.cancelling).toEqual([]);
    model.dispose();
  });
});

describe('JobsTable', () => {
  const base: IJob = {
    id: 'j0123456789ab',
    name: 'nightly-fit',
    notebook: 'work/train.ipynb',
    state: 'running',
    started: 1,
    ended: null,
    elapsed: 75,
    gpu_seconds: 0,
    cost: 0,
    currency: 'USD',
    error: null
  };
  const render = (jobs: IJob[], onAttach?: (job: IJob) => void): string =>
    renderToStaticMarkup(
      React.createElement(JobsTable, {
        state: { jobs, error: null, cancelling: [] },
        onCancel: () => undefined,
        onAttach
      })
    );

  it('shows state, notebook, elapsed; cost once priced; buttons by state', () => {
    const html = render(
      [
        { ...base, id: 'jdone', state: 'done', cost: 0.0123, ended: 80 },
        { ...base, id: 'jgone', name: null, state: 'cancelled' },
        base
      ],
      () => undefined
    );
    const [running, cancelled, done] = html.split('<li').slice(1);
    expect(running).toContain('data-state="running"');
    expect(running).toContain('train.ipynb');
    expect(running).toContain('1m 15s');
    expect(running).toContain('>–<'); // not priced before it ends
    expect(running).toContain('Insert attach cell');
    expect(running).toContain('Cancel');
    expect(cancelled).toContain('jgone'); // no name: the id
    expect(cancelled).not.toContain('Insert attach cell');
    expect(cancelled).not.toContain('Cancel');
    expect(done).toContain('$0.012');
    expect(done).toContain('Insert attach cell');
    expect(done).not.toContain('Cancel');
  });

  it('has no attach button without a notebook action, and says when empty', () => {
    expect(render([base])).not.toContain('Insert attach cell');
    expect(render([])).toContain('No detached jobs');
  });
});
