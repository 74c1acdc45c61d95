/**
 * The sidebar's jobs model against a fake REST API.
 */
import { IJob, JobsModel } from '../jobs';
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
