/**
 * The Metrics tab's data: Vega-Lite specs from the server (one chart definition, in Python),
 * themed here with JupyterLab's CSS variables.
 */

import { ServerConnection } from '@jupyterlab/services';

import type { MetricsCharts } from './generated/api-types';
import { requestAPI } from './request';

/** One chart as `GET deployments/<id>/metrics/charts` serves it. */
export interface IChart {
  id: string;
  spec: IVegaLiteSpec;
}

/** The parts of a Vega-Lite spec this module reads or changes. */
export interface IVegaLiteSpec {
  width?: number | string;
  encoding?: {
    color?: { scale?: { domain?: string[]; range?: string[] } };
  };
  usermeta?: { chartId?: string; colorRoles?: Record<string, string> };
  [key: string]: unknown;
}

/** `GET deployments/<id>/metrics/charts` (generated type), with each spec's known parts typed. */
export type IMetricsCharts = Omit<MetricsCharts, 'charts'> & {
  charts: IChart[];
};

/** The time windows offered, in seconds, with the step that keeps ~180 points. */
export const WINDOWS: { label: string; window: number; step: number }[] = [
  { label: 'Last 5 minutes', window: 300, step: 2 },
  { label: 'Last 15 minutes', window: 900, step: 5 },
  { label: 'Last hour', window: 3600, step: 20 },
  { label: 'Last 6 hours', window: 21600, step: 120 }
];

/** Fetch a deployment's charts over a window. */
export function fetchCharts(
  id: string,
  window: number,
  step: number,
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<IMetricsCharts> {
  const query = new URLSearchParams({
    window: String(window),
    step: String(step)
  });
  return requestAPI<IMetricsCharts>(
    `deployments/${encodeURIComponent(id)}/metrics/charts?${query}`,
    {},
    settings
  );
}

/** The CSS variable of each colour role the server names in `usermeta.colorRoles`. */
export const ROLE_VARIABLES: Record<string, string> = {
  success: '--jp-success-color1',
  warn: '--jp-warn-color1',
  error: '--jp-error-color1',
  brand: '--jp-brand-color1',
  accent: '--jp-accent-color1',
  info: '--jp-info-color1'
};

/** Reads a CSS variable; '' when unset. */
export type CSSReader = (name: string) => string;

/** A reader of the computed CSS variables of an element (the theme's, in JupyterLab). */
export function cssReader(node: Element = document.body): CSSReader {
  const style = getComputedStyle(node);
  return name => style.getPropertyValue(name).trim();
}

/** A Vega config that draws text, axes and grid in the theme's colours and font. */
export function themeConfig(css: CSSReader): Record<string, unknown> {
  const text = css('--jp-ui-font-color1') || '#000';
  const muted = css('--jp-ui-font-color2') || text;
  const grid = css('--jp-border-color2') || muted;
  const font = css('--jp-ui-font-family') || 'sans-serif';
  const axis = {
    labelColor: muted,
    titleColor: muted,
    domainColor: grid,
    tickColor: grid,
    gridColor: grid,
    labelFont: font,
    titleFont: font
  };
  return {
    background: 'transparent',
    font,
    view: { stroke: 'transparent' },
    axis,
    legend: {
      labelColor: text,
      titleColor: text,
      labelFont: font,
      titleFont: font
    },
    title: {
      color: text,
      subtitleColor: muted,
      font,
      subtitleFont: font,
      fontSize: 12
    }
  };
}

/**
 * The spec with its series coloured by the theme (`usermeta.colorRoles` -> --jp-* variables)
 * and `width` pixels wide in all (axes and legend included); the server's colours stay where a
 * variable is unset.
 */
export function themedSpec(
  spec: IVegaLiteSpec,
  css: CSSReader,
  width = 320
): IVegaLiteSpec {
  const copy = JSON.parse(JSON.stringify(spec)) as IVegaLiteSpec;
  // A measured width rather than 'container': the chart is drawn once, at its final size.
  copy.width = Math.max(160, Math.floor(width));
  copy.autosize = { type: 'fit-x', contains: 'padding' };
  const roles = copy.usermeta?.colorRoles ?? {};
  const scale = copy.encoding?.color?.scale;
  if (scale?.domain && scale.range) {
    scale.range = scale.domain.map((label, i) => {
      const variable = ROLE_VARIABLES[roles[label] ?? ''];
      return (variable && css(variable)) || scale.range![i];
    });
  }
  return copy;
}

/** Whether any chart has something to draw. */
export function hasData(charts: IMetricsCharts | null): boolean {
  return (
    charts?.charts.some(chart => {
      const values = (chart.spec.data as { values?: { value: unknown }[] })
        ?.values;
      return (values ?? []).some(row => row.value !== null);
    }) ?? false
  );
}
