/**
 * The Metrics tab: the server's Vega-Lite charts (core/charts.py, the one chart definition),
 * rendered with vega-embed and coloured by the JupyterLab theme.
 */

import * as React from 'react';
import embed, { EmbedOptions, Result, VisualizationSpec } from 'vega-embed';

import { IDeployment, PrimeHubAPI } from '../api';
import {
  cssReader,
  fetchCharts,
  hasData,
  IChart,
  IMetricsCharts,
  themeConfig,
  themedSpec,
  WINDOWS
} from '../metrics';
import { APIError } from '../request';
import { ErrorMessage, messageOf } from './common';

/** Changes whenever JupyterLab switches between a light and a dark theme. */
function useThemeKey(): string {
  const read = () =>
    `${document.body.dataset.jpThemeLight ?? ''}:${document.body.dataset.jpThemeName ?? ''}`;
  const [key, setKey] = React.useState(read);
  React.useEffect(() => {
    const observer = new MutationObserver(() => setKey(read()));
    observer.observe(document.body, {
      attributes: true,
      attributeFilter: ['data-jp-theme-light', 'data-jp-theme-name']
    });
    return () => observer.disconnect();
  }, []);
  return key;
}

/** The content width of an element, kept up to date (0 until it is laid out). */
function useWidth(ref: React.RefObject<HTMLElement>): number {
  const [width, setWidth] = React.useState(0);
  React.useLayoutEffect(() => {
    const node = ref.current;
    if (!node) {
      return;
    }
    setWidth(node.clientWidth);
    const observer = new ResizeObserver(entries => {
      // Whole pixels, and only real changes: each change redraws the chart.
      const next = Math.round(entries[0].contentRect.width);
      setWidth(previous => (Math.abs(previous - next) >= 2 ? next : previous));
    });
    observer.observe(node);
    return () => observer.disconnect();
  }, [ref]);
  return width;
}

/** One chart, drawn by vega-embed into its own element. */
export function Chart(props: { chart: IChart; theme: string }): JSX.Element {
  const { chart, theme } = props;
  const box = React.useRef<HTMLDivElement>(null);
  const [error, setError] = React.useState('');
  // Redraw only when the spec changed (a reload usually brings new data, not always).
  const spec = React.useMemo(() => JSON.stringify(chart.spec), [chart.spec]);
  const width = useWidth(box);
  React.useEffect(() => {
    const node = box.current;
    if (!node || width === 0) {
      return;
    }
    let result: Result | null = null;
    let live = true;
    const css = cssReader(node);
    const dark = document.body.dataset.jpThemeLight === 'false';
    // A fresh element per drawing: the previous view is finalized with its own element, so
    // nothing of it (a resize listener) acts on the new one.
    const target = document.createElement('div');
    node.replaceChildren(target);
    embed(
      target,
      themedSpec(JSON.parse(spec), css, width) as unknown as VisualizationSpec,
      {
        actions: false,
        renderer: 'svg',
        mode: 'vega-lite',
        config: themeConfig(css) as EmbedOptions['config'],
        tooltip: { theme: dark ? 'dark' : 'light' }
      }
    )
      .then(r => {
        if (live) {
          result = r;
          setError('');
        } else {
          r.finalize();
        }
      })
      .catch(e => live && setError(messageOf(e)));
    return () => {
      live = false;
      result?.finalize();
      target.remove();
    };
  }, [spec, theme, width]);
  return (
    <figure className="jp-PrimeHub-chart" data-chart={chart.id}>
      <div ref={box} className="jp-PrimeHub-chart-box" />
      <ErrorMessage message={error} />
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
  const theme = useThemeKey();
  const [choice, setChoice] = React.useState(1);
  const [charts, setCharts] = React.useState<IMetricsCharts | null>(null);
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
        const found = await fetchCharts(
          deployment.id,
          span,
          step,
          api.settings
        );
        if (!live) {
          return;
        }
        setCharts(found);
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
      </div>
      {charts ? (
        <p className="jp-PrimeHub-muted jp-PrimeHub-totals">{charts.summary}</p>
      ) : null}
      <ErrorMessage message={error} />
      {state === 'loading' ? (
        <p className="jp-PrimeHub-muted">Loading metrics…</p>
      ) : null}
      {charts && !hasData(charts) ? (
        <p className="jp-PrimeHub-muted">
          No requests in this window yet: call the endpoint (see Information,
          Run an Example).
        </p>
      ) : null}
      {charts ? (
        <div className="jp-PrimeHub-charts">
          {charts.charts.map(chart => (
            <Chart key={chart.id} chart={chart} theme={theme} />
          ))}
        </div>
      ) : null}
    </div>
  );
}
