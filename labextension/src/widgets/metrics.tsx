/**
 * The Metrics tab: small SVG line charts over the metrics endpoint.
 *
 * Drawn by hand rather than with a chart library: six line charts with a hover readout
 * need ~150 lines, add nothing to the bundle, and take their colours straight from
 * JupyterLab's CSS variables, so they follow the theme with no extra work.
 */

import * as React from 'react';

import { IDeployment, IMetrics, PrimeHubAPI } from '../api';
import {
  CHARTS,
  clockTime,
  extentOf,
  formatValue,
  hasData,
  IChartSpec,
  isolatedPoints,
  lastValue,
  linePath,
  WINDOWS,
  yDomain
} from '../metrics';
import { APIError } from '../request';
import { ErrorMessage, messageOf } from './common';

const HEIGHT = 120;
const PAD = { left: 44, right: 8, top: 8, bottom: 18 };

/** The width of an element, kept up to date. */
function useWidth(ref: React.RefObject<HTMLElement>, fallback = 320): number {
  const [width, setWidth] = React.useState(fallback);
  React.useLayoutEffect(() => {
    const node = ref.current;
    if (!node) {
      return;
    }
    setWidth(node.clientWidth || fallback);
    if (typeof ResizeObserver === 'undefined') {
      return;
    }
    const observer = new ResizeObserver(entries => {
      const next = Math.round(entries[0].contentRect.width);
      if (next > 0) {
        setWidth(next);
      }
    });
    observer.observe(node);
    return () => observer.disconnect();
  }, [ref, fallback]);
  return width;
}

/** One chart: its series as lines, a y axis, and the values under the pointer. */
export function Chart(props: {
  spec: IChartSpec;
  metrics: IMetrics;
}): JSX.Element {
  const { spec, metrics } = props;
  const box = React.useRef<HTMLDivElement>(null);
  const width = useWidth(box);
  const [hover, setHover] = React.useState<number | null>(null);
  const series = spec.series.map(s => ({
    ...s,
    values: metrics.series[s.key] ?? []
  }));
  const n = metrics.timestamps.length;
  const [y0, y1] = yDomain(spec.unit, extentOf(series.map(s => s.values)));
  const plotW = Math.max(10, width - PAD.left - PAD.right);
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const x = (i: number) => PAD.left + (n <= 1 ? 0 : (i / (n - 1)) * plotW);
  const y = (v: number) =>
    PAD.top + plotH - ((v - y0) / (y1 - y0 || 1)) * plotH;
  const ticks = [y0, (y0 + y1) / 2, y1];
  const at = hover ?? n - 1;
  const summary = series
    .map(s => `${s.label} ${formatValue(lastValue(s.values), spec.unit)}`)
    .join(', ');

  const onMove = (event: React.MouseEvent<SVGSVGElement>) => {
    const rect = event.currentTarget.getBoundingClientRect();
    const px = event.clientX - rect.left - PAD.left;
    const index = Math.round((px / plotW) * (n - 1));
    setHover(Math.min(n - 1, Math.max(0, index)));
  };

  return (
    <figure className="jp-PrimeHub-chart" data-chart={spec.id}>
      <figcaption>
        <span className="jp-PrimeHub-chart-title">{spec.title}</span>
        <span className="jp-PrimeHub-chart-readout">
          {n > 0 ? `${clockTime(metrics.timestamps[at])} ` : ''}
          {series.map((s, i) => (
            <span key={s.key} className={`jp-PrimeHub-series-${i}`}>
              {s.label} {formatValue(s.values[at] ?? null, spec.unit)}{' '}
            </span>
          ))}
        </span>
      </figcaption>
      <div ref={box} className="jp-PrimeHub-chart-box">
        <svg
          width={width}
          height={HEIGHT}
          role="img"
          aria-label={`${spec.title}, latest: ${summary}`}
          onMouseMove={onMove}
          onMouseLeave={() => setHover(null)}
        >
          {ticks.map(t => (
            <g key={t} className="jp-PrimeHub-chart-grid">
              <line x1={PAD.left} x2={PAD.left + plotW} y1={y(t)} y2={y(t)} />
              <text x={PAD.left - 4} y={y(t) + 3} textAnchor="end">
                {formatValue(t, spec.unit)}
              </text>
            </g>
          ))}
          {n > 0 ? (
            <g className="jp-PrimeHub-chart-grid">
              <text x={PAD.left} y={HEIGHT - 4}>
                {clockTime(metrics.timestamps[0])}
              </text>
              <text x={PAD.left + plotW} y={HEIGHT - 4} textAnchor="end">
                {clockTime(metrics.timestamps[n - 1])}
              </text>
            </g>
          ) : null}
          {series.map((s, i) => (
            <g key={s.key} className={`jp-PrimeHub-series-${i}`}>
              <path
                className="jp-PrimeHub-chart-line"
                d={linePath(s.values, x, y)}
              />
              {isolatedPoints(s.values).map(p => (
                <circle key={p} cx={x(p)} cy={y(s.values[p]!)} r={2} />
              ))}
            </g>
          ))}
          {hover !== null ? (
            <line
              className="jp-PrimeHub-chart-cursor"
              x1={x(hover)}
              x2={x(hover)}
              y1={PAD.top}
              y2={PAD.top + plotH}
            />
          ) : null}
        </svg>
      </div>
    </figure>
  );
}

/** Reload the metrics every few seconds while the tab shows. */
const RELOAD_MS = 10000;

export function MetricsTab(props: {
  api: PrimeHubAPI;
  deployment: IDeployment;
}): JSX.Element {
  const { api, deployment } = props;
  const [choice, setChoice] = React.useState(1);
  const [metrics, setMetrics] = React.useState<IMetrics | null>(null);
  const [state, setState] = React.useState<
    'loading' | 'ready' | 'missing' | 'error'
  >('loading');
  const [error, setError] = React.useState('');
  const selectId = `jp-PrimeHub-metrics-window-${deployment.id}`;
  const { window: span, step } = WINDOWS[choice];

  React.useEffect(() => {
    let live = true;
    let timer = 0;
    const load = async () => {
      try {
        const found = await api.metrics(deployment.id, span, step);
        if (!live) {
          return;
        }
        setMetrics(found);
        setState('ready');
        setError('');
      } catch (e) {
        if (!live) {
          return;
        }
        // No such route (an older server): say so once, and stop asking.
        if (
          e instanceof APIError &&
          e.status === 404 &&
          e.reason !== 'NotFound'
        ) {
          setState('missing');
          return;
        }
        setError(messageOf(e));
        setState(s => (s === 'loading' ? 'error' : s));
      }
      if (live) {
        timer = window.setTimeout(load, RELOAD_MS);
      }
    };
    void load();
    return () => {
      live = false;
      window.clearTimeout(timer);
    };
  }, [api, deployment.id, span, step]);

  if (state === 'missing') {
    return (
      <div className="jp-PrimeHub-empty" role="status">
        Metrics not available yet: this server does not serve deployment
        metrics.
      </div>
    );
  }
  const totals = metrics?.totals ?? {};
  return (
    <div className="jp-PrimeHub-metrics">
      <div className="jp-PrimeHub-row">
        <label htmlFor={selectId}>Window</label>
        <select
          id={selectId}
          value={choice}
          onChange={e => setChoice(Number(e.target.value))}
        >
          {WINDOWS.map((w, i) => (
            <option key={w.window} value={i}>
              {w.label}
            </option>
          ))}
        </select>
        {metrics ? (
          <span className="jp-PrimeHub-muted jp-PrimeHub-totals">
            Totals: {totals.requests ?? 0} requests, {totals.clientErrors ?? 0}{' '}
            4xx, {totals.serverErrors ?? 0} 5xx, {totals.feedback ?? 0} feedback
            {typeof totals.reward === 'number'
              ? `, reward ${formatValue(totals.reward, 'ratio')}`
              : ''}
          </span>
        ) : null}
      </div>
      <ErrorMessage message={error} />
      {state === 'loading' ? (
        <p className="jp-PrimeHub-muted">Loading metrics…</p>
      ) : null}
      {metrics && !hasData(metrics) ? (
        <p className="jp-PrimeHub-muted">
          No requests in this window yet: call the endpoint (see Information,
          Run an Example).
        </p>
      ) : null}
      {metrics ? (
        <div className="jp-PrimeHub-charts">
          {CHARTS.map(spec => (
            <Chart key={spec.id} spec={spec} metrics={metrics} />
          ))}
        </div>
      ) : null}
    </div>
  );
}
