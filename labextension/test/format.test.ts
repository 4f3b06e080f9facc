import { describe, expect, it } from 'vitest';

import {
  EXAMPLE_PAYLOAD,
  exampleCurl,
  examplePayload,
  matchesName,
  metadataText,
  phaseClass,
  shellQuote,
  timeAgo
} from '../src/format';
import {
  CHARTS,
  extentOf,
  formatValue,
  hasData,
  isolatedPoints,
  lastValue,
  linePath,
  niceCeil,
  yDomain
} from '../src/metrics';
import { deployment } from './helpers';

describe('format', () => {
  it('says how long ago', () => {
    const now = Date.parse('2026-11-22T13:00:00Z');
    expect(timeAgo('2026-11-22T12:59:50Z', now)).toBe('just now');
    expect(timeAgo('2026-11-22T12:55:00Z', now)).toBe('5 min ago');
    expect(timeAgo('2026-11-22T10:00:00Z', now)).toBe('3 h ago');
    expect(timeAgo('2026-11-21T13:00:00Z', now)).toBe('1 day ago');
    expect(timeAgo('2026-11-19T13:00:00Z', now)).toBe('3 days ago');
    expect(timeAgo(null, now)).toBe('');
  });

  it('colours phases', () => {
    expect(phaseClass('Deployed')).toBe('jp-PrimeHub-phase-deployed');
    expect(phaseClass('Failed')).toBe('jp-PrimeHub-phase-failed');
    expect(phaseClass('Deploying')).toBe('jp-PrimeHub-phase-deploying');
    expect(phaseClass('Stopping')).toBe('jp-PrimeHub-phase-deploying');
    expect(phaseClass('Stopped')).toBe('jp-PrimeHub-phase-stopped');
  });

  it('matches names like the API', () => {
    const d = deployment('iris-a1b2c', 'Deployed', { name: 'Iris Classifier' });
    expect(matchesName(d, ' classifier ')).toBe(true);
    expect(matchesName(d, 'a1b2')).toBe(true);
    expect(matchesName(d, 'wine')).toBe(false);
    expect(metadataText(d)).toBe('owner: alice');
  });

  it('writes curl examples for public and private endpoints', () => {
    const endpoint =
      'http://127.0.0.1:9000/deployment/iris/api/v1.0/predictions';
    const open = exampleCurl(endpoint, 'public', '{"a": 1}');
    expect(open).toContain(`'${endpoint}'`);
    expect(open).not.toContain('-u ');
    expect(open).toContain(`-d '{"a": 1}'`);
    const closed = exampleCurl(endpoint, 'private');
    expect(closed).toContain(`-u '<client-name>:<client-token>'`);
    expect(
      exampleCurl(endpoint, 'private', '{}', { name: 'bill', token: 't0k' })
    ).toContain(`-u 'bill:t0k'`);
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
  });
});

describe('metrics', () => {
  it('draws every chart the issue asks for', () => {
    const keys = CHARTS.flatMap(c => c.series.map(s => s.key));
    for (const key of [
      'requestsPerSecond',
      'successRate',
      'clientErrorsPerSecond',
      'serverErrorsPerSecond',
      'latencyP99',
      'reward'
    ]) {
      expect(keys).toContain(key);
    }
  });

  it('formats values in their unit', () => {
    expect(formatValue(12.44, 'rps')).toBe('12.4/s');
    expect(formatValue(0.98, 'percent')).toBe('98%');
    expect(formatValue(0.0042, 'seconds')).toBe('4.2 ms');
    expect(formatValue(1.5, 'seconds')).toBe('1.5 s');
    expect(formatValue(null, 'rps')).toBe('–');
  });

  it('scales the y axis to a round number, percentages to 100%', () => {
    expect(niceCeil(0.7)).toBe(1);
    expect(niceCeil(12.4)).toBe(20);
    expect(niceCeil(230)).toBe(250);
    expect(yDomain('rps', [0, 12.4])).toEqual([0, 20]);
    expect(yDomain('rps', null)).toEqual([0, 1]);
    expect(yDomain('percent', [0.5, 0.9])).toEqual([0, 1]);
    expect(
      extentOf([
        [null, 2, 5],
        [1, null]
      ])
    ).toEqual([1, 5]);
    expect(extentOf([[null]])).toBeNull();
  });

  it('lifts the pen over missing values', () => {
    const path = linePath(
      [1, 2, null, 4],
      i => i * 10,
      v => v
    );
    expect(path).toBe('M0.0,1.0L10.0,2.0M30.0,4.0');
    expect(lastValue([1, 2, null])).toBe(2);
    expect(lastValue([null])).toBeNull();
  });

  it('knows when there is nothing to draw', () => {
    const empty = {
      deploymentId: 'x',
      window: 60,
      step: 5,
      timestamps: [1, 2],
      series: { a: [null, null] }
    };
    expect(hasData(empty)).toBe(false);
    expect(hasData({ ...empty, series: { a: [null, 0] } })).toBe(true);
    expect(hasData(null)).toBe(false);
  });
});

describe('isolated points', () => {
  it('finds values with no neighbour to draw a line to', () => {
    expect(isolatedPoints([null, 1, null, 2, 3, null, 4])).toEqual([1, 6]);
    expect(isolatedPoints([5])).toEqual([0]);
    expect(isolatedPoints([])).toEqual([]);
  });
});

describe('examplePayload', () => {
  it('uses the bundle sample request when the deployment has one', () => {
    const sample = { data: { ndarray: [[5.1, 3.5, 1.4, 0.2]] } };
    expect(JSON.parse(examplePayload(sample))).toEqual(sample);
    expect(exampleCurl('http://e', 'public', examplePayload(sample))).toContain(
      '"ndarray":[[5.1,3.5,1.4,0.2]]'
    );
  });

  it('falls back to a generic body without one', () => {
    expect(examplePayload(null)).toBe(EXAMPLE_PAYLOAD);
    expect(examplePayload(undefined)).toBe(EXAMPLE_PAYLOAD);
  });
});
