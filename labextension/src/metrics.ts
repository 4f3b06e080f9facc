/** Turning the metrics endpoint's series into chart lines, scales and readable values. */

import { IMetrics } from './api';

export type Unit = 'rps' | 'percent' | 'seconds' | 'ratio';

export interface ISeriesSpec {
  key: string;
  label: string;
}

/** One chart of the Metrics tab. */
export interface IChartSpec {
  id: string;
  title: string;
  unit: Unit;
  series: ISeriesSpec[];
}

/** The charts of the Metrics tab, in order. */
export const CHARTS: IChartSpec[] = [
  {
    id: 'requests',
    title: 'Requests per second',
    unit: 'rps',
    series: [
      { key: 'requestsPerSecond', label: 'all' },
      { key: 'predictRequestsPerSecond', label: 'predict' }
    ]
  },
  {
    id: 'success',
    title: 'Success rate',
    unit: 'percent',
    series: [{ key: 'successRate', label: '2xx' }]
  },
  {
    id: 'client-errors',
    title: '4xx per second',
    unit: 'rps',
    series: [{ key: 'clientErrorsPerSecond', label: '4xx' }]
  },
  {
    id: 'server-errors',
    title: '5xx per second',
    unit: 'rps',
    series: [{ key: 'serverErrorsPerSecond', label: '5xx' }]
  },
  {
    id: 'latency',
    title: 'Latency',
    unit: 'seconds',
    series: [
      { key: 'latencyP50', label: 'p50' },
      { key: 'latencyP90', label: 'p90' },
      { key: 'latencyP99', label: 'p99' }
    ]
  },
  {
    id: 'reward',
    title: 'Reward',
    unit: 'ratio',
    series: [{ key: 'reward', label: 'reward' }]
  }
];

/** The time windows offered, in seconds, with the step that keeps ~180 points. */
export const WINDOWS: { label: string; window: number; step: number }[] = [
  { label: 'Last 5 minutes', window: 300, step: 2 },
  { label: 'Last 15 minutes', window: 900, step: 5 },
  { label: 'Last hour', window: 3600, step: 20 },
  { label: 'Last 6 hours', window: 21600, step: 120 }
];

/** A value as a person reads it, in the chart's unit. */
export function formatValue(
  value: number | null | undefined,
  unit: Unit
): string {
  if (value === null || value === undefined || Number.isNaN(value)) {
    return '–';
  }
  switch (unit) {
    case 'percent':
      return `${round(value * 100)}%`;
    case 'seconds':
      return value < 1 ? `${round(value * 1000)} ms` : `${round(value)} s`;
    case 'rps':
      return `${round(value)}/s`;
    default:
      return `${round(value)}`;
  }
}

function round(value: number): string {
  const abs = Math.abs(value);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return Number(value.toFixed(digits)).toString();
}

/** Smallest and largest non-null value over some series; null when there is none. */
export function extentOf(
  series: ((number | null)[] | undefined)[]
): [number, number] | null {
  let min = Infinity;
  let max = -Infinity;
  for (const values of series) {
    for (const value of values ?? []) {
      if (value !== null && Number.isFinite(value)) {
        min = Math.min(min, value);
        max = Math.max(max, value);
      }
    }
  }
  return min === Infinity ? null : [min, max];
}

/** The y range of a chart: from 0, to a round number above the data (percent: to 100%). */
export function yDomain(
  unit: Unit,
  extent: [number, number] | null
): [number, number] {
  if (unit === 'percent' || unit === 'ratio') {
    return [0, 1];
  }
  const top = extent ? extent[1] : 0;
  return [0, top > 0 ? niceCeil(top) : 1];
}

/** 1, 2, 2.5 or 5 times a power of ten, at or above `value`. */
export function niceCeil(value: number): number {
  if (value <= 0) {
    return 1;
  }
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const factor of [1, 2, 2.5, 5, 10]) {
    if (factor * power >= value * (1 - 1e-9)) {
      return factor * power;
    }
  }
  return 10 * power;
}

/**
 * An SVG path through the points, lifting the pen over nulls (no data is no line, not zero).
 *
 * @param values - one value per timestamp.
 * @param x - maps an index to a pixel.
 * @param y - maps a value to a pixel.
 */
export function linePath(
  values: (number | null)[],
  x: (index: number) => number,
  y: (value: number) => number
): string {
  let path = '';
  let pen = false;
  values.forEach((value, index) => {
    if (value === null || !Number.isFinite(value)) {
      pen = false;
      return;
    }
    path += `${pen ? 'L' : 'M'}${x(index).toFixed(1)},${y(value).toFixed(1)}`;
    pen = true;
  });
  return path;
}

/** Indexes of values with no neighbour to draw a line to: they are drawn as dots. */
export function isolatedPoints(values: (number | null)[]): number[] {
  const ok = (i: number) =>
    i >= 0 &&
    i < values.length &&
    values[i] !== null &&
    Number.isFinite(values[i]);
  return values.map((_, i) => i).filter(i => ok(i) && !ok(i - 1) && !ok(i + 1));
}

/** Whether the answer has anything to draw. */
export function hasData(metrics: IMetrics | null): boolean {
  if (!metrics || metrics.timestamps.length === 0) {
    return false;
  }
  return Object.values(metrics.series).some(values =>
    values.some(value => value !== null)
  );
}

/** The latest non-null value of a series. */
export function lastValue(
  values: (number | null)[] | undefined
): number | null {
  for (let i = (values?.length ?? 0) - 1; i >= 0; i--) {
    const value = values![i];
    if (value !== null && Number.isFinite(value)) {
      return value;
    }
  }
  return null;
}

/** `HH:MM:SS` of a Unix time in seconds, in the user's time zone. */
export function clockTime(seconds: number): string {
  const date = new Date(seconds * 1000);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}
