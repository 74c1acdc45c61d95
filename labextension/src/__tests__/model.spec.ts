/**
 * The sidebar model against a fake REST API (an in-memory `RequestFn`).
 */
import { ElasticModel, IElasticState } from '../model';
import {
  ICluster,
  IHistoryRow,
  IQuotaReport,
  ITimeline,
  RequestFn
} from '../types';
import { formatCost, formatDuration, idleLabel, wholeNumber } from '../format';

function cluster(id: string, extra: Partial<ICluster> = {}): ICluster {
  return {
    id,
    name: `c-${id}`,
    backend: 'local',
    status: 'running',
    workers: 1,
    gpus: 0,
    idle_seconds: 3,
    idle_timeout: 90,
    dashboard_link: '/proxy/8787/status',
    owner: 'me',
    created: '2026-11-29T05:00:00+00:00',
    usage: { gpu_seconds: 0, cpu_seconds: 4, idle_seconds: 1, cost: 0.0001 },
    adapt: { minimum: 0, maximum: 4 },
    ...extra
  };
}

const ROW: IHistoryRow = {
  id: 'r1',
  cell: 2,
  started: '2026-11-29T05:00:00+00:00',
  backend: 'local',
  cluster_id: 'a',
  worker: 'w0',
  device: 'gpu',
  seconds: 1.5,
  compute_seconds: 1.2,
  gpus: 1,
  gpu_seconds: 1.2,
  cpu_seconds: 0,
  cost: 0.0008,
  status: 'ok'
};

const QUOTA: IQuotaReport = {
  backend: 'gateway',
  available: true,
  quota: {
    user: 'alice',
    groups: ['students'],
    limits: {
      gpus: 2,
      workers: 3,
      gpu_types: ['t4'],
      source: 'group students'
    },
    holding: { gpus: 1, workers: 1 },
    clusters: [{ name: 'c1', workers: 1, gpus: 1 }],
    contact: 'hub-admins@example.org'
  }
};

const TIMELINE: ITimeline = {
  now: '2026-11-29T05:10:00+00:00',
  interval: 10,
  window: 3600,
  samples: [
    {
      time: '2026-11-29T05:09:50+00:00',
      workers: 1,
      gpus: 0,
      cost: 0.0001,
      busy: false
    }
  ]
};

class ResponseError extends Error {}

/** A fake server: records calls, answers from `clusters`, fails where told to. */
class FakeServer {
  clusters: ICluster[] = [cluster('a')];
  history: IHistoryRow[] = [ROW];
  calls: string[] = [];
  fail: Record<string, string> = {};
  /** Ids of clusters whose workers the server cannot read (listed without details). */
  noDetails = new Set<string>();

  /** A cluster as `GET /clusters/{id}` returns it: with one detail per worker. */
  withDetails(found: ICluster): ICluster {
    if (this.noDetails.has(found.id)) {
      return { ...found };
    }
    return {
      ...found,
      worker_details: Array.from({ length: found.workers }, (_, i) => ({
        name: `w${i}`,
        gpus: 0,
        memory: 1 << 30,
        gpu_utilization: null,
        gpu_memory: null
      }))
    };
  }

  request: RequestFn = async <T>(
    path: string,
    init: RequestInit = {}
  ): Promise<T> => {
    const method = init.method ?? 'GET';
    this.calls.push(`${method} ${path}${init.body ? ' ' + init.body : ''}`);
    const failure = this.fail[`${method} ${path}`];
    if (failure) {
      throw new ResponseError(failure);
    }
    const body = init.body ? JSON.parse(init.body as string) : {};
    const match = /^clusters\/([^/]+)(?:\/(scale|adapt))?$/.exec(path);
    if (method === 'GET' && path === 'clusters') {
      return { clusters: this.clusters.map(c => ({ ...c })) } as T;
    }
    if (method === 'GET' && path === 'clusters?details=1') {
      return { clusters: this.clusters.map(c => this.withDetails(c)) } as T;
    }
    if (method === 'GET' && path === 'history') {
      return this.history as T;
    }
    if (method === 'GET' && path === 'timeline') {
      return TIMELINE as T;
    }
    if (method === 'GET' && path === 'quota') {
      return QUOTA as T;
    }
    if (method === 'GET' && path === 'usage') {
      return {
        clusters: {
          gpu_seconds: 0,
          cpu_seconds: 4,
          idle_seconds: 1,
          cost: 0.0001
        },
        cells: {
          count: 1,
          seconds: 1.5,
          gpu_seconds: 1.2,
          cpu_seconds: 0,
          cost: 0.0008
        },
        currency: 'USD',
        pricing: { gpu_hour: 2.5, cpu_hour: 0.05 }
      } as T;
    }
    if (method === 'POST' && path === 'clusters') {
      const made = cluster('new1', { backend: body.backend });
      this.clusters.push(made);
      return made as T;
    }
    const found =
      match && this.clusters.find(c => c.id === decodeURIComponent(match[1]));
    if (!found) {
      throw new ResponseError(
        `no cluster with id '${match ? match[1] : path}'`
      );
    }
    if (method === 'GET') {
      return this.withDetails(found) as T;
    }
    if (method === 'DELETE') {
      this.clusters = this.clusters.filter(c => c !== found);
      return undefined as T;
    }
    if (match![2] === 'scale') {
      found.workers = body.n;
      found.requested_workers = body.n;
      found.adapt = null;
    } else {
      found.adapt = { minimum: body.minimum, maximum: body.maximum };
    }
    return found as T;
  };
}

describe('ElasticModel', () => {
  let server: FakeServer;
  let model: ElasticModel;
  let emitted: IElasticState[];

  beforeEach(() => {
    server = new FakeServer();
    model = new ElasticModel({ request: server.request, autoStart: false });
    emitted = [];
    model.changed.connect((_, state) => emitted.push(state));
  });

  afterEach(() => {
    model.dispose();
  });

  it('starts empty and not loaded', () => {
    expect(model.state).toEqual({
      clusters: [],
      history: [],
      usage: null,
      timeline: null,
      quota: null,
      error: null,
      busy: [],
      loaded: false
    });
  });

  it('refresh reads clusters with worker details, history, usage and the timeline, and emits', async () => {
    await model.refresh();
    expect(emitted).toHaveLength(1);
    const state = model.state;
    expect(state.loaded).toBe(true);
    expect(state.clusters.map(c => c.id)).toEqual(['a']);
    expect(state.clusters[0].worker_details!.map(w => w.name)).toEqual(['w0']);
    expect(state.history).toEqual([ROW]);
    expect(state.usage!.cells.count).toBe(1);
    expect(state.timeline).toEqual(TIMELINE);
    expect(state.quota).toEqual(QUOTA);
    expect([...server.calls].sort()).toEqual([
      'GET clusters?details=1',
      'GET history',
      'GET quota',
      'GET timeline',
      'GET usage'
    ]);
  });

  it('reads the quota at most every 30 s, and keeps it when it fails', async () => {
    await model.refresh();
    server.calls = [];
    server.fail['GET quota'] = 'the gateway is down';
    await model.refresh();
    expect(server.calls).not.toContain('GET quota');
    expect(model.state.quota).toEqual(QUOTA);
    const now = Date.now();
    const spy = jest.spyOn(Date, 'now').mockReturnValue(now + 31 * 1000);
    try {
      await model.refresh();
      expect(server.calls).toContain('GET quota');
      expect(model.state.quota).toEqual(QUOTA); // the failure kept the last one
      expect(model.state.error).toBeNull(); // and did not fail the refresh
    } finally {
      spy.mockRestore();
    }
  });

  it('a refresh makes the same four requests whatever the number of clusters', async () => {
    await model.refresh(); // the first also reads the quota
    for (const n of [0, 1, 5]) {
      server.clusters = Array.from({ length: n }, (_, i) =>
        cluster(`c${i}`, { workers: 2 })
      );
      server.calls = [];
      await model.refresh();
      expect(server.calls).toHaveLength(4);
      expect([...server.calls].sort()).toEqual([
        'GET clusters?details=1',
        'GET history',
        'GET timeline',
        'GET usage'
      ]);
      expect(model.state.clusters).toHaveLength(n);
      for (const c of model.state.clusters) {
        expect(c.worker_details).toHaveLength(2);
      }
    }
  });

  it('scale sends n, then refreshes: the new worker count is in the state', async () => {
    await model.refresh();
    const result = await model.scale('a', 2);
    expect(result!.workers).toBe(2);
    expect(server.calls).toContain('POST clusters/a/scale {"n":2}');
    expect(model.state.clusters[0].worker_details).toHaveLength(2);
    expect(model.state.busy).toEqual([]);
    // busy was set while the request was in flight
    expect(emitted.some(s => s.busy.includes('a'))).toBe(true);
  });

  it('adapt sends the bounds', async () => {
    await model.adapt('a', 1, 3);
    expect(server.calls).toContain(
      'POST clusters/a/adapt {"minimum":1,"maximum":3}'
    );
    expect(model.state.clusters[0].adapt).toEqual({ minimum: 1, maximum: 3 });
  });

  it('stop deletes the cluster and it disappears from the state', async () => {
    await model.refresh();
    expect(await model.stop('a')).toBe(true);
    expect(server.calls).toContain('DELETE clusters/a');
    expect(model.state.clusters).toEqual([]);
  });

  it('create posts the backend', async () => {
    const made = await model.create({ backend: 'local' });
    expect(made!.id).toBe('new1');
    expect(server.calls).toContain('POST clusters {"backend":"local"}');
    expect(model.state.clusters.map(c => c.id)).toEqual(['a', 'new1']);
  });

  it('shows a failed action as an error and does not throw', async () => {
    server.fail['POST clusters/a/scale'] =
      'n=9 is above max-workers=4; raise jupyter-elastic.max-workers';
    const result = await model.scale('a', 9);
    expect(result).toBeNull();
    expect(model.state.error).toContain('max-workers=4');
    expect(model.state.busy).toEqual([]);
    model.dismissError();
    expect(model.state.error).toBeNull();
  });

  it('shows a failed refresh, keeps the last data, and clears the error once it recovers', async () => {
    await model.refresh();
    server.fail['GET clusters?details=1'] = 'Forbidden';
    await model.refresh();
    expect(model.state.error).toBe('Could not refresh: Forbidden');
    expect(model.state.clusters.map(c => c.id)).toEqual(['a']);
    delete server.fail['GET clusters?details=1'];
    await model.refresh();
    expect(model.state.error).toBeNull();
  });

  it('keeps a cluster summary when the server lists it without details', async () => {
    server.clusters.push(cluster('b'));
    server.noDetails.add('a');
    await model.refresh();
    expect(model.state.clusters.map(c => c.id)).toEqual(['a', 'b']);
    expect(model.state.clusters[0].worker_details).toBeUndefined();
    expect(model.state.clusters[1].worker_details).toHaveLength(1);
    expect(model.state.error).toBeNull();
    // No request per cluster to make up for the missing details.
    expect(server.calls.filter(c => c.startsWith('GET clusters/'))).toEqual([]);
  });

  it('refresh interval is settable and bounded below', () => {
    model.refreshInterval = 5;
    expect(model.refreshInterval).toBe(5);
    model.refreshInterval = 0.01;
    expect(model.refreshInterval).toBe(0.5);
  });

  it('emits nothing once disposed', async () => {
    model.dispose();
    expect(model.isDisposed).toBe(true);
    await model.refresh();
    expect(emitted).toHaveLength(0);
  });
});

describe('visibility', () => {
  const sleep = (ms: number) =>
    new Promise<void>(resolve => setTimeout(resolve, ms));

  it('polls only while a view shows it, and catches up at once when shown', async () => {
    const server = new FakeServer();
    const model = new ElasticModel({
      request: server.request,
      refreshInterval: 0.5,
      visible: false
    });
    try {
      expect(model.isVisible).toBe(false);
      await sleep(1200); // more than two intervals
      expect(server.calls).toEqual([]);
      expect(model.state.loaded).toBe(false);

      model.setVisible(true);
      expect(model.isVisible).toBe(true);
      await sleep(0);
      const atOnce = server.calls.length;
      expect(atOnce).toBeGreaterThan(0); // at once, not after an interval
      await sleep(1200);
      expect(model.state.loaded).toBe(true);
      expect(server.calls.length).toBeGreaterThan(atOnce); // and then it polls

      model.setVisible(false);
      server.calls = [];
      await sleep(1200);
      expect(server.calls).toEqual([]);
    } finally {
      model.dispose();
    }
  });

  it('setting the same visibility again does not refresh', async () => {
    const server = new FakeServer();
    const model = new ElasticModel({
      request: server.request,
      autoStart: false
    });
    expect(model.isVisible).toBe(true);
    model.setVisible(true);
    await new Promise<void>(resolve => setTimeout(resolve, 0));
    expect(server.calls).toEqual([]);
    model.dispose();
  });
});

describe('format', () => {
  it('formats durations, money and the idle clock', () => {
    expect(formatDuration(1.234)).toBe('1.23s');
    expect(formatDuration(75)).toBe('1m 15s');
    expect(formatDuration(3720)).toBe('1h 2m');
    expect(formatDuration(599.6)).toBe('10m');
    expect(formatDuration(59.7)).toBe('1m');
    expect(formatDuration(7199.9)).toBe('2h');
    expect(formatCost(12.5, 'USD')).toBe('$12.50');
    expect(idleLabel({ workers: 2, idle_seconds: 30, idle_timeout: 90 })).toBe(
      'to zero in 1m'
    );
    expect(idleLabel({ workers: 0, idle_seconds: 300, idle_timeout: 90 })).toBe(
      'scaled to zero'
    );
    expect(
      idleLabel({
        workers: 1,
        idle_seconds: 0,
        idle_timeout: 90,
        running_cells: 1
      })
    ).toBe('busy (1 cell)');
  });
});

describe('stale replies and input checks', () => {
  it('drops a slow poll reply that lands after a newer one (a stopped cluster stays gone)', async () => {
    const server = new FakeServer();
    let releaseSlow: () => void = () => undefined;
    let slowOnce = true;
    const request: RequestFn = async <T>(
      path: string,
      init: RequestInit = {}
    ): Promise<T> => {
      if (
        slowOnce &&
        path === 'clusters?details=1' &&
        (init.method ?? 'GET') === 'GET'
      ) {
        slowOnce = false;
        const snapshot = server.request<T>(path, init); // the list as it was: cluster 'a'
        await new Promise<void>(resolve => (releaseSlow = resolve));
        return snapshot;
      }
      return server.request<T>(path, init);
    };
    const model = new ElasticModel({ request, autoStart: false });
    const slow = model.refresh(); // an old poll, still waiting for its reply
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(slowOnce).toBe(false); // the old poll's list request is the one held back
    server.clusters = []; // the cluster is stopped
    await model.refresh(); // the newer refresh shows no cluster
    expect(model.state.clusters).toEqual([]);
    releaseSlow();
    await slow;
    expect(model.state.clusters).toEqual([]);
    model.dispose();
  });
});

describe('wholeNumber', () => {
  it('accepts whole numbers and refuses empty or other input', () => {
    expect(wholeNumber('2')).toBe(2);
    expect(wholeNumber(' 0 ')).toBe(0);
    expect(wholeNumber('')).toBeNull();
    expect(wholeNumber('1.5')).toBeNull();
    expect(wholeNumber('-1')).toBeNull();
    expect(wholeNumber('two')).toBeNull();
  });
});
