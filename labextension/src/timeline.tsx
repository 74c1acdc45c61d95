/**
 * The timeline at the top of the panel: the last hour of workers and GPUs (areas), each
 * `%%gpu` cell (a tick), idle stretches (shaded: workers held, no cell running) and the
 * money spent (a line). Plain SVG; colours come from JupyterLab's theme variables in
 * `style/base.css`, so it reads in light and dark themes.
 */
import * as React from 'react';

import { fileName, formatCost } from './format';
import { IHistoryRow, ITimeline } from './types';

/** The drawing's own units: the SVG stretches them to the panel's width. */
export const CHART_WIDTH = 240;
export const CHART_HEIGHT = 48;
/** Room above the areas for the cell ticks. */
const TICK_BAND = 8;

/** One cell on the time axis. */
export interface ICellTick {
  x: number;
  row: IHistoryRow;
}

/** One shaded idle stretch. */
export interface ISpan {
  x: number;
  width: number;
  seconds: number;
}

/** What the chart draws, in chart units (x: 0..CHART_WIDTH, y: 0 at the top). */
export interface ITimelineGeometry {
  /** The area of live workers, and of GPUs (empty when there were none). */
  workersPath: string;
  gpusPath: string;
  /** The money spent since the start of the window, as a line. */
  costPath: string;
  idle: ISpan[];
  ticks: ICellTick[];
  /** Most workers (or GPUs) in the window: the top of the y axis. */
  peak: number;
  peakWorkers: number;
  peakGpus: number;
  /** Money spent in the window. */
  cost: number;
  /** Minutes the x axis spans. */
  minutes: number;
}

/** The shortest span the x axis shows (a server that started a minute ago). */
export const MIN_SPAN = 120;

/**
 * Lay the server's samples and the history rows out on the chart. The x axis ends at the
 * server's `now` (so the browser's clock does not matter) and spans the timeline's window,
 * or less while the server has sampled for less (never under two minutes).
 */
export function timelineGeometry(
  timeline: ITimeline,
  rows: IHistoryRow[]
): ITimelineGeometry {
  const end = Date.parse(timeline.now) / 1000;
  const full = timeline.window > 0 ? timeline.window : 3600;
  const interval = timeline.interval > 0 ? timeline.interval : 10;
  const all = timeline.samples
    .map(s => ({ ...s, t: Date.parse(s.time) / 1000 }))
    .filter(s => isFinite(s.t) && s.t + interval > end - full && s.t <= end)
    .sort((a, b) => a.t - b.t);
  const window = all.length
    ? Math.min(full, Math.max(MIN_SPAN, end - all[0].t))
    : full;
  const start = end - window;
  const samples = all.filter(s => s.t + interval > start);
  const x = (t: number): number =>
    round(((Math.min(end, Math.max(start, t)) - start) / window) * CHART_WIDTH);
  const peakWorkers = Math.max(0, ...samples.map(s => s.workers));
  const peakGpus = Math.max(0, ...samples.map(s => s.gpus));
  const peak = Math.max(1, peakWorkers, peakGpus);
  const bottom = CHART_HEIGHT;
  const y = (value: number): number =>
    round(bottom - (value / peak) * (bottom - TICK_BAND));
  const steps = samples.map(s => ({
    x0: x(s.t),
    x1: x(s.t + interval),
    s
  }));

  const area = (value: (s: (typeof samples)[0]) => number): string => {
    let d = '';
    let open = false;
    let lastX = 0;
    for (const { x0, x1, s } of steps) {
      const v = value(s);
      if (v <= 0) {
        if (open) {
          d += `L${lastX} ${bottom}Z`;
          open = false;
        }
        continue;
      }
      if (!open || x0 !== lastX) {
        if (open) {
          d += `L${lastX} ${bottom}Z`;
        }
        d += `M${x0} ${bottom}`;
        open = true;
      }
      d += `L${x0} ${y(v)}L${x1} ${y(v)}`;
      lastX = x1;
    }
    if (open) {
      d += `L${lastX} ${bottom}Z`;
    }
    return d;
  };

  const idle: ISpan[] = [];
  let idleEnd = -1;
  for (const { x0, x1, s } of steps) {
    if (s.workers > 0 && !s.busy) {
      const last = idle[idle.length - 1];
      if (last && idleEnd === x0) {
        last.width = round(x1 - last.x);
        last.seconds += interval;
      } else {
        idle.push({ x: x0, width: round(x1 - x0), seconds: interval });
      }
      idleEnd = x1;
    }
  }

  const base = samples.length ? samples[0].cost : 0;
  const spent = samples.length ? samples[samples.length - 1].cost - base : 0;
  const costY = (cost: number): number =>
    spent > 0
      ? round(bottom - ((cost - base) / spent) * (bottom - TICK_BAND))
      : bottom;
  const costPath = steps
    .map(({ x1, s }, i) => `${i ? 'L' : 'M'}${x1} ${costY(s.cost)}`)
    .join('');

  const ticks: ICellTick[] = [];
  for (const row of rows) {
    const t = Date.parse(row.started) / 1000;
    if (isFinite(t) && t >= start && t <= end) {
      ticks.push({ x: x(t), row });
    }
  }

  return {
    workersPath: area(s => s.workers),
    gpusPath: peakGpus > 0 ? area(s => s.gpus) : '',
    costPath: spent > 0 ? costPath : '',
    idle,
    ticks,
    peak,
    peakWorkers,
    peakGpus,
    cost: Math.max(0, spent),
    minutes: Math.round(window / 60)
  };
}

/** Props of `TimelineChart`. */
export interface ITimelineProps {
  /** The server's samples, or null before the first refresh. */
  timeline: ITimeline | null;
  rows: IHistoryRow[];
  currency: string;
}

/** The last hour of compute, drawn small. */
export function TimelineChart(props: ITimelineProps): JSX.Element {
  if (!props.timeline) {
    return (
      <div className="elastic-Timeline" aria-label="Timeline">
        <div className="elastic-Timeline-empty">Loading…</div>
      </div>
    );
  }
  const g = timelineGeometry(props.timeline, props.rows);
  const idleMinutes = g.idle.reduce((sum, s) => sum + s.seconds, 0) / 60;
  const describe =
    `Last ${g.minutes} minutes: at most ${g.peakWorkers} worker` +
    `${g.peakWorkers === 1 ? '' : 's'} and ${g.peakGpus} GPU` +
    `${g.peakGpus === 1 ? '' : 's'}, ${g.ticks.length} %%gpu cell` +
    `${g.ticks.length === 1 ? '' : 's'}, ${formatCost(g.cost, props.currency)} spent`;
  return (
    <figure className="elastic-Timeline" aria-label="Timeline">
      <figcaption className="elastic-Timeline-caption">
        <span className="elastic-Timeline-legend">
          <span className="elastic-Timeline-key jp-mod-workers">workers</span>
          {g.peakGpus > 0 && (
            <span className="elastic-Timeline-key jp-mod-gpus">GPUs</span>
          )}
          <span className="elastic-Timeline-key jp-mod-cells">cells</span>
          <span
            className="elastic-Timeline-key jp-mod-idle"
            title="Workers held while no cell ran"
          >
            idle
          </span>
        </span>
        <span
          className="elastic-Timeline-key jp-mod-cost elastic-Timeline-cost"
          title={`Spent in the last ${g.minutes} minutes, all clusters (dashed line)`}
        >
          +{formatCost(g.cost, props.currency)}
        </span>
      </figcaption>
      <svg
        className="elastic-Timeline-chart"
        viewBox={`0 0 ${CHART_WIDTH} ${CHART_HEIGHT}`}
        preserveAspectRatio="none"
        role="img"
        aria-label={describe}
      >
        <title>{describe}</title>
        {g.workersPath && (
          <path className="elastic-Timeline-workers" d={g.workersPath} />
        )}
        {g.gpusPath && (
          <path className="elastic-Timeline-gpus" d={g.gpusPath} />
        )}
        {g.idle.map(span => (
          <rect
            key={`idle-${span.x}`}
            className="elastic-Timeline-idle"
            x={span.x}
            y={0}
            width={span.width}
            height={CHART_HEIGHT}
          >
            <title>
              {`idle ${Math.round(span.seconds / 60) || '<1'} min: workers held, no cell running`}
            </title>
          </rect>
        ))}
        {g.costPath && (
          <path className="elastic-Timeline-costLine" d={g.costPath} />
        )}
        {g.ticks.map(({ x, row }) => (
          <line
            key={row.id}
            className={`elastic-Timeline-cell jp-mod-${row.status}`}
            x1={x}
            x2={x}
            y1={0}
            y2={CHART_HEIGHT}
          >
            <title>
              {`${row.cell === null ? '' : `[${row.cell}] `}` +
                `${row.notebook ? fileName(row.notebook) : 'cell'} · ${row.status}`}
            </title>
          </line>
        ))}
        <line
          className="elastic-Timeline-axis"
          x1={0}
          x2={CHART_WIDTH}
          y1={CHART_HEIGHT}
          y2={CHART_HEIGHT}
        />
      </svg>
      <div className="elastic-Timeline-axisLabels">
        <span>−{g.minutes} min</span>
        <span>
          {g.peak > 1 || g.peakWorkers > 0 ? `peak ${g.peak}` : ''}
          {idleMinutes >= 1 ? ` · idle ${Math.round(idleMinutes)} min` : ''}
        </span>
        <span>now</span>
      </div>
    </figure>
  );
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
