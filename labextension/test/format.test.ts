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
