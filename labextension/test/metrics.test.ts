import { describe, expect, it } from 'vitest';

import {
  hasData,
  IMetricsCharts,
  ROLE_VARIABLES,
  themeConfig,
  themedSpec
} from '../src/metrics';

const THEME: Record<string, string> = {
  '--jp-ui-font-color1': 'rgb(1, 1, 1)',
  '--jp-ui-font-color2': 'rgb(2, 2, 2)',
  '--jp-border-color2': 'rgb(3, 3, 3)',
  '--jp-success-color1': 'rgb(0, 200, 0)',
  '--jp-error-color1': 'rgb(200, 0, 0)'
};
const css = (name: string) => THEME[name] ?? '';

const spec = () => ({
  data: { values: [{ time: 1, series: '2xx', value: null }] },
  encoding: {
    color: {
      scale: { domain: ['2xx', '4xx', '5xx'], range: ['#0a0', '#aa0', '#a00'] }
    }
  },
  usermeta: {
    chartId: 'requests',
    colorRoles: { '2xx': 'success', '4xx': 'warn', '5xx': 'error' }
  }
});

describe('chart theming', () => {
  it('colours series with the theme variable of their role, keeping the rest', () => {
    const original = spec();
    const themed = themedSpec(original, css);
    expect(themed.encoding!.color!.scale!.range).toEqual([
      'rgb(0, 200, 0)',
      '#aa0', // --jp-warn-color1 unset here: the server's colour stays
      'rgb(200, 0, 0)'
    ]);
    expect(themedSpec(original, css, 300.7).width).toBe(300);
    expect(themed.autosize).toEqual({ type: 'fit-x', contains: 'padding' });
    // The server's spec is not changed in place (it is re-themed on a theme switch).
    expect(original.encoding.color.scale.range[0]).toBe('#0a0');
    expect(Object.keys(ROLE_VARIABLES)).toEqual(
      expect.arrayContaining(['success', 'warn', 'error', 'brand', 'accent'])
    );
  });

  it('draws text, axes and grid in the theme colours on a transparent background', () => {
    const config = themeConfig(css) as Record<string, Record<string, string>>;
    expect(config.background).toBe('transparent');
    expect(config.axis.labelColor).toBe('rgb(2, 2, 2)');
    expect(config.axis.gridColor).toBe('rgb(3, 3, 3)');
    expect(config.legend.labelColor).toBe('rgb(1, 1, 1)');
    expect(config.title.color).toBe('rgb(1, 1, 1)');
  });

  it('knows when there is nothing to draw', () => {
    const charts: IMetricsCharts = {
      deploymentId: 'x',
      window: 60,
      step: 5,
      summary: '',
      totals: {
        requests: 0,
        predictRequests: 0,
        clientErrors: 0,
        serverErrors: 0,
        feedback: 0,
        reward: null
      },
      charts: [{ id: 'requests', spec: spec() }]
    };
    expect(hasData(charts)).toBe(false);
    const busy = spec();
    (busy.data.values[0] as { value: number | null }).value = 3;
    expect(hasData({ ...charts, charts: [{ id: 'r', spec: busy }] })).toBe(
      true
    );
    expect(hasData(null)).toBe(false);
  });
});
