import { describe, expect, it } from 'vitest';

import {
  NO_SAMPLE,
  exampleCurl,
  examplePayload,
  matchesName,
  metadataText,
  phaseClass,
  runExample,
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
    const closed = exampleCurl(endpoint, 'private', '{}');
    expect(closed).toContain(`-u '<client-name>:<client-token>'`);
    expect(
      exampleCurl(endpoint, 'private', '{}', { name: 'bill', token: 't0k' })
    ).toContain(`-u 'bill:t0k'`);
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
  });
});

describe('runExample', () => {
  // A table bundle's sample: rows of mixed values under their column names.
  const sample = {
    data: {
      names: ['age', 'income', 'city', 'member'],
      ndarray: [
        [42, 5200.5, 'Paris', true],
        [31, null, "Val d'Or", false]
      ]
    }
  };

  it("is the bundle's sample rows with their names, for the tab and for a new client", () => {
    const d = deployment('credit-a1b2c', 'Deployed');
    d.status.endpoint =
      'http://gw/deployment/credit-a1b2c/api/v1.0/predictions';
    d.status.sampleRequest = sample;
    const { payload, curl } = runExample(d);
    expect(JSON.parse(payload ?? 'null')).toEqual(sample);
    expect(curl).toContain(`-d ${shellQuote(JSON.stringify(sample))}`);
    expect(curl).toContain(`'${d.status.endpoint}'`);
    expect(curl).not.toContain(NO_SAMPLE);
    const withClient = runExample(d, { name: 'bill', token: 't0k' }).curl;
    expect(withClient).toContain(`-u 'bill:t0k'`);
    expect(withClient).toContain(`-d ${shellQuote(JSON.stringify(sample))}`);
  });

  it('adds the bearer form for a private endpoint, next to the Basic one', () => {
    const d = deployment('credit-a1b2c', 'Deployed');
    d.status.endpoint =
      'http://gw/deployment/credit-a1b2c/api/v1.0/predictions';
    d.status.sampleRequest = sample;
    expect(runExample(d).bearer).toBeNull();
    d.spec.endpoint = { accessType: 'private', clients: [] };
    const { curl, bearer } = runExample(d);
    expect(curl).toContain(`-u '<client-name>:<client-token>'`);
    expect(curl).not.toContain('Bearer');
    expect(bearer).toBe(
      [
        'curl -X POST',
        '-H "Authorization: Bearer <access-token>"',
        `'${d.status.endpoint}'`,
        `-H 'Content-Type: application/json'`,
        `-d ${shellQuote(JSON.stringify(sample))}`
      ].join(' \\\n     ')
    );
    expect(bearer).not.toContain('-u ');
    // A new client's box shows its own Basic form only.
    expect(runExample(d, { name: 'bill', token: 't0k' }).bearer).toBeNull();
    d.status.sampleRequest = null;
    expect(runExample(d).bearer?.split('\n')[0]).toBe(`# ${NO_SAMPLE}`);
  });

  it('says there is no sample instead of inventing one', () => {
    const d = deployment('image-a1b2c', 'Deployed');
    d.status.sampleRequest = null;
    const { payload, curl } = runExample(d);
    expect(payload).toBeNull();
    expect(examplePayload(undefined)).toBeNull();
    expect(curl.split('\n')[0]).toBe(`# ${NO_SAMPLE}`);
    expect(curl).toContain(`-d '<request body>'`);
    expect(curl).not.toMatch(/ndarray|tensor/);
  });
});
