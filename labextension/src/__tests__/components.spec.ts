/**
 * The panel's views and formats, rendered to markup (no browser): what a 250 px panel
 * shows for clusters, history rows, money and the timeline.
 */
import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';

import {
  ClusterCard,
  ElasticPanel,
  HistoryTable,
  IPanelProps,
  QuotaLine
} from '../components';
import {
  clusterLabel,
  clusterNotebooks,
  fileName,
  formatCost,
  formatSeconds,
  quotaLine,
  quotaTitle
} from '../format';
import { IElasticState } from '../model';
import { timelineGeometry, TimelineChart, CHART_WIDTH } from '../timeline';
import { ICluster, IHistoryRow, IQuotaReport, ITimeline } from '../types';

const CLUSTER: ICluster = {
  id: '3f2a9c0d41b2',
  name: 'nb-my-analysis-c5e3a1b2',
  backend: 'local',
  status: 'running',
  workers: 2,
  gpus: 2,
  has_gpu: true,
  idle_seconds: 15,
  idle_timeout: 90,
  dashboard_link: null,
  owner: 'me',
  created: '2026-11-29T05:00:00+00:00',
  usage: { gpu_seconds: 10, cpu_seconds: 0, idle_seconds: 3, cost: 0.0069 },
  adapt: { minimum: 0, maximum: 2 },
  currency: 'USD'
};

function row(id: string, extra: Partial<IHistoryRow> = {}): IHistoryRow {
  return {
    id,
    cell: 3,
    started: '2026-11-29T05:05:00+00:00',
    backend: 'local',
    cluster_id: CLUSTER.id,
    worker: 'w0',
    device: 'gpu',
    seconds: 1.5,
    compute_seconds: 1.2,
    gpus: 1,
    gpu_seconds: 1.2,
    cpu_seconds: 0,
    cost: 0.00083,
    status: 'ok',
    notebook: 'work/my analysis.ipynb',
    ...extra
  };
}

const TIMELINE: ITimeline = {
  now: '2026-11-29T05:10:00+00:00',
  interval: 10,
  window: 3600,
  samples: [
    // 05:04:40 - 05:05:10: two workers, a cell in the middle interval only
    ['05:04:40', 2, 2, 0.001, false],
    ['05:04:50', 2, 2, 0.002, false],
    ['05:05:00', 2, 2, 0.003, true],
    ['05:05:10', 1, 1, 0.004, false],
    // a gap (no workers), then one worker again
    ['05:05:20', 0, 0, 0.004, false],
    ['05:09:50', 1, 1, 0.005, false]
  ].map(([t, workers, gpus, cost, busy]) => ({
    time: `2026-11-29T${t}+00:00`,
    workers: workers as number,
    gpus: gpus as number,
    cost: cost as number,
    busy: busy as boolean
  }))
};

function render(element: React.ReactElement): string {
  return renderToStaticMarkup(element);
}

describe('money, seconds and names', () => {
  it('formats money one way: cents from one unit up, two significant digits below', () => {
    expect(formatCost(0, 'USD')).toBe('$0.00');
    expect(formatCost(0.0001, 'USD')).toBe('$0.0001');
    expect(formatCost(0.000012, 'USD')).toBe('<$0.0001');
    expect(formatCost(0.00083, 'USD')).toBe('$0.00083');
    expect(formatCost(0.0123, 'USD')).toBe('$0.012');
    expect(formatCost(0.5, 'USD')).toBe('$0.50');
    expect(formatCost(12.5, 'USD')).toBe('$12.50');
    expect(formatCost(1234.567, 'USD')).toBe('$1,234.57');
    expect(formatCost(0.0123, 'EUR')).toBe('€0.012');
    expect(formatCost(1500, 'JPY')).toBe('¥1,500');
    expect(formatCost(0.5, 'credits')).toBe('0.50 credits');
    expect(formatCost(null, 'USD')).toBe('$0.00');
  });

  it('formats GPU- and CPU-seconds as numbers', () => {
    expect(formatSeconds(1.234)).toBe('1.23');
    expect(formatSeconds(42.25)).toBe('42.3');
    expect(formatSeconds(1234.5)).toBe('1,235');
    expect(formatSeconds(0.004)).toBe('<0.01');
    expect(formatSeconds(0)).toBe('0');
  });

  it("names a cluster after its notebook's file name", () => {
    expect(fileName('work/my analysis.ipynb')).toBe('my analysis.ipynb');
    expect(fileName('demo.ipynb')).toBe('demo.ipynb');
    const notebooks = clusterNotebooks([
      row('r1', { notebook: 'old.ipynb' }),
      row('r2'),
      row('r3', { cluster_id: null, notebook: 'local.ipynb' }),
      row('r4', { cluster_id: 'other', notebook: null })
    ]);
    expect([...notebooks]).toEqual([[CLUSTER.id, 'work/my analysis.ipynb']]);
    expect(clusterLabel(CLUSTER.name, 'work/my analysis.ipynb')).toBe(
      'my analysis.ipynb'
    );
    // No cell has finished yet: the notebook's slug, from the name %%gpu gave it.
    expect(clusterLabel('nb-my-analysis-c5e3a1b2')).toBe('my-analysis');
    expect(clusterLabel('nb-my-analysis-c5e3a1b2-kube')).toBe('my-analysis');
    expect(clusterLabel('feature-run')).toBe('feature-run');
  });
});

describe('ClusterCard', () => {
  const props = {
    cluster: CLUSTER,
    busy: false,
    currency: 'USD',
    onScale: () => undefined,
    onAdapt: () => undefined,
    onStop: () => undefined
  };

  it("shows the notebook's file name, the full names on hover, and the idle clock", () => {
    const html = render(
      React.createElement(ClusterCard, {
        ...props,
        notebook: 'work/my analysis.ipynb'
      })
    );
    expect(html).toContain(
      'title="nb-my-analysis-c5e3a1b2 (work/my analysis.ipynb)">my analysis.ipynb</span>'
    );
    expect(html).toContain('local · adaptive 0–2');
    expect(html).toContain('$0.0069');
    expect(html).toContain('to zero in 1m 15s');
    // 75 of 90 seconds left
    expect(html).toContain('aria-valuenow="83"');
  });

  it('falls back to the slug of the name before any cell finished', () => {
    const html = render(React.createElement(ClusterCard, props));
    expect(html).toContain(
      'title="nb-my-analysis-c5e3a1b2 (3f2a9c0d41b2)">my-analysis</span>'
    );
  });
});

describe('HistoryTable', () => {
  it('shows the notebook, and seconds (never a device word) for what a cell used', () => {
    const html = render(
      React.createElement(HistoryTable, {
        rows: [
          row('gpu'),
          row('cpu', {
            device: 'cpu',
            gpu_seconds: 0,
            cpu_seconds: 2.4,
            notebook: 'b.ipynb'
          }),
          row('local', {
            device: 'local',
            cost: 0,
            notebook: null,
            status: 'error',
            error: 'boom'
          })
        ],
        currency: 'USD'
      })
    );
    const items = html.split('<li').slice(1);
    expect(items).toHaveLength(3);
    // newest first
    expect(items[0]).toContain('local, not billed');
    expect(items[0]).toContain('⚠ [3]');
    expect(items[0]).toContain('title="error: boom"');
    expect(items[1]).toContain('>b.ipynb<');
    expect(items[1]).toContain('2.4 CPU·s');
    expect(items[2]).toContain(
      'title="work/my analysis.ipynb">my analysis.ipynb<'
    );
    expect(items[2]).toContain('1.2 GPU·s');
    expect(items[2]).toContain('$0.00083');
    expect(html).not.toMatch(/>(cpu|gpu|local)</);
  });
});

describe('timeline', () => {
  it('lays samples, idle stretches, cells and cost out on the last hour', () => {
    const g = timelineGeometry(TIMELINE, [
      row('in'),
      row('before', { started: '2026-11-29T04:00:00+00:00' })
    ]);
    // The server sampled for 320 s: the axis spans those, not the whole hour.
    const x = (t: string): number =>
      Math.round(
        ((Date.parse(`2026-11-29T${t}+00:00`) -
          Date.parse('2026-11-29T05:04:40+00:00')) /
          320000) *
          CHART_WIDTH *
          100
      ) / 100;
    expect(g.peak).toBe(2);
    expect(g.peakWorkers).toBe(2);
    // One cell in the window, at its start time.
    expect(g.ticks.map(t => [t.row.id, t.x])).toEqual([['in', x('05:05:00')]]);
    // Idle: 05:04:40-05:05:00 and 05:05:10-05:05:20, and the last interval (clamped at now).
    expect(g.idle.map(s => [s.x, s.seconds])).toEqual([
      [x('05:04:40'), 20],
      [x('05:05:10'), 10],
      [x('05:09:50'), 10]
    ]);
    expect(g.idle[2].x + g.idle[2].width).toBeCloseTo(CHART_WIDTH, 1);
    // Two separate worker areas (the gap has no workers), each closed to the baseline.
    expect(g.workersPath.match(/M/g)).toHaveLength(2);
    expect(g.workersPath.match(/Z/g)).toHaveLength(2);
    expect(g.gpusPath).not.toBe('');
    // Money spent in the window: the last sample's total less the first's.
    expect(g.cost).toBeCloseTo(0.004, 6);
    expect(g.costPath.startsWith('M')).toBe(true);
    expect(g.minutes).toBe(5);
  });

  it('spans the whole window once the server has sampled that long, two minutes at least', () => {
    const old = {
      time: '2026-11-29T04:10:00+00:00', // an hour before now: the oldest kept
      workers: 0,
      gpus: 0,
      cost: 0,
      busy: false
    };
    const long = timelineGeometry(
      { ...TIMELINE, samples: [old, ...TIMELINE.samples] },
      [row('before', { started: '2026-11-29T04:00:00+00:00' })]
    );
    expect(long.minutes).toBe(60);
    expect(long.ticks).toEqual([]); // 04:00 is before the last hour
    expect(long.idle[0].x).toBeCloseTo((3280 / 3600) * CHART_WIDTH, 1);
    const recent = timelineGeometry(
      { ...TIMELINE, samples: TIMELINE.samples.slice(-1) },
      []
    );
    expect(recent.minutes).toBe(2);
    expect(recent.idle).toEqual([
      {
        x: (110 / 120) * CHART_WIDTH,
        width: (10 / 120) * CHART_WIDTH,
        seconds: 10
      }
    ]);
  });

  it('draws nothing but the axis for a server that has not sampled yet', () => {
    const g = timelineGeometry({ ...TIMELINE, samples: [] }, []);
    expect([g.workersPath, g.gpusPath, g.costPath]).toEqual(['', '', '']);
    expect(g.idle).toEqual([]);
    expect(g.cost).toBe(0);
  });

  it('renders as themed SVG with a tick per cell and a cost in the currency', () => {
    const html = render(
      React.createElement(TimelineChart, {
        timeline: TIMELINE,
        rows: [row('in')],
        currency: 'EUR'
      })
    );
    expect(html).toContain('<svg class="elastic-Timeline-chart"');
    expect(html.match(/class="elastic-Timeline-idle"/g)).toHaveLength(3);
    expect(html.match(/class="elastic-Timeline-cell jp-mod-ok"/g)).toHaveLength(
      1
    );
    expect(html).toContain('[3] my analysis.ipynb · ok');
    expect(html).toContain('+€0.004');
    // Colours come from the stylesheet (theme variables), never inline.
    expect(html).not.toMatch(/fill="|stroke="|style="[^"]*color/);
  });
});

describe('ElasticPanel', () => {
  it('puts the timeline first and names clusters after their notebooks', () => {
    const state: IElasticState = {
      clusters: [CLUSTER],
      history: [row('r1')],
      usage: null,
      timeline: TIMELINE,
      quota: null,
      error: null,
      busy: [],
      loaded: true
    };
    const props: IPanelProps = {
      state,
      defaultBackend: 'local',
      onCreate: () => undefined,
      onScale: () => undefined,
      onAdapt: () => undefined,
      onStop: () => undefined,
      onDismissError: () => undefined
    };
    const html = render(React.createElement(ElasticPanel, props));
    expect(html.indexOf('elastic-Timeline')).toBeLessThan(
      html.indexOf('elastic-ClusterCard')
    );
    expect(html).toContain('>my analysis.ipynb</span>');
    expect(html).not.toContain('elastic-Panel-quota'); // no quota where none is enforced
  });

  it("shows the user's quota at a shared hub in one line, details on hover", () => {
    const quota: IQuotaReport = {
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
    expect(quotaLine(quota)).toBe('GPUs 1 of 2 held (group students)');
    expect(quotaTitle(quota)).toBe(
      "Quota at the hub's gateway for alice: 1 of 3 workers, GPU types t4; " +
        'for more ask hub-admins@example.org'
    );
    const unlimited: IQuotaReport = {
      ...quota,
      quota: {
        ...quota.quota!,
        limits: {
          gpus: null,
          workers: null,
          gpu_types: null,
          source: 'the default for every user'
        }
      }
    };
    expect(quotaLine(unlimited)).toBe('GPUs 1 held, no limit (default)');
    expect(
      quotaLine({ backend: 'local', available: false, quota: null })
    ).toBeNull();
    expect(quotaLine(null)).toBeNull();
    const html = render(React.createElement(QuotaLine, { report: quota }));
    expect(html).toContain('aria-label="Quota"');
    expect(html).toContain('>GPUs 1 of 2 held (group students)</div>');
  });
});
