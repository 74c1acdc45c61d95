/**
 * The editor's pre-warm message against a fake REST API.
 */
import { hasGpuCell, PrewarmWatcher } from '../prewarm';
import { RequestFn } from '../types';

function fakeApi(fail = false) {
  const calls: string[] = [];
  const request = (async (path: string, init?: RequestInit) => {
    calls.push(`${init?.method ?? 'GET'} ${path} ${init?.body ?? ''}`);
    if (fail) {
      throw new Error('404 no kernel is open');
    }
    return { cluster: 'nb-a-1', started: true };
  }) as RequestFn;
  return { calls, request };
}

describe('hasGpuCell', () => {
  it('finds only cells that open with the magic', () => {
    expect(hasGpuCell(['x = 1', '\n  %%gpu --timeout 5m\ny = 2'])).toBe(true);
    expect(hasGpuCell(['%%gpu'])).toBe(true);
    expect(hasGpuCell(["print('%%gpu')", '%%gpux', '# %%gpu'])).toBe(false);
    expect(hasGpuCell([])).toBe(false);
  });
});

describe('PrewarmWatcher', () => {
  it('posts once when the first %%gpu cell is typed', async () => {
    const { calls, request } = fakeApi();
    const sources = ['import numpy as np'];
    const watcher = new PrewarmWatcher(
      request,
      { path: () => 'work/a.ipynb', sources: () => sources },
      0
    );
    await watcher.check();
    expect(calls).toEqual([]);
    sources.push('%%g');
    await watcher.check();
    expect(calls).toEqual([]);
    sources[1] = '%%gpu\nx = np.ones(3)';
    await watcher.check();
    await watcher.check();
    expect(calls).toEqual(['POST prewarm {"path":"work/a.ipynb"}']);
    expect(watcher.done).toBe(true);
  });

  it('sends nothing for a notebook opened with %%gpu cells, and survives a refusal', async () => {
    const opened = fakeApi();
    const watcher = new PrewarmWatcher(opened.request, {
      path: () => 'b.ipynb',
      sources: () => ['%%gpu\nx = 1']
    });
    await watcher.check();
    expect(opened.calls).toEqual([]);

    const refused = fakeApi(true);
    const sources = ['x = 1'];
    const other = new PrewarmWatcher(refused.request, {
      path: () => 'c.ipynb',
      sources: () => sources
    });
    sources.push('%%gpu');
    await other.check(); // resolves: the first cell starts the cluster as usual
    expect(refused.calls).toHaveLength(1);
  });

  it('checks after a pause in typing, not on every key', async () => {
    jest.useFakeTimers();
    const { calls, request } = fakeApi();
    const sources = ['x = 1'];
    const watcher = new PrewarmWatcher(
      request,
      { path: () => 'd.ipynb', sources: () => sources },
      300
    );
    sources.push('%%gpu');
    watcher.changed();
    jest.advanceTimersByTime(200);
    watcher.changed();
    jest.advanceTimersByTime(200);
    expect(calls).toEqual([]);
    jest.advanceTimersByTime(150);
    jest.useRealTimers();
    await Promise.resolve();
    expect(calls).toHaveLength(1);
    watcher.dispose();
  });
});
