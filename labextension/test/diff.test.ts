import { describe, expect, it } from 'vitest';

import { diffSpecs, flattenSpec, mergePatch } from '../src/diff';
import { deployment } from './helpers';

describe('flattenSpec', () => {
  it('walks objects and lists of objects into dotted fields', () => {
    const flat = flattenSpec({
      displayName: 'iris',
      updateMessage: 'ignored',
      userName: 'ignored too',
      env: [{ name: 'A', value: '1' }],
      endpoint: {
        accessType: 'private',
        clients: [{ name: 'a' }, { name: 'b' }]
      },
      predictors: [{ replicas: 2, metadata: {} }]
    });
    expect(Object.fromEntries(flat)).toEqual({
      displayName: 'iris',
      'env.A': '1',
      'endpoint.accessType': 'private',
      'endpoint.clients': 'a, b',
      'predictors.0.replicas': '2',
      'predictors.0.metadata': ''
    });
  });
});

describe('diffSpecs', () => {
  it('lists changed, added and removed fields only', () => {
    const before = deployment('iris').spec;
    const after = {
      ...before,
      updateMessage: 'more traffic',
      description: 'now with a description',
      predictors: [
        {
          ...before.predictors[0],
          replicas: 3,
          metadata: { stage: 'prod' }
        }
      ]
    };
    const changes = diffSpecs(before, after);
    expect(changes).toEqual([
      {
        field: 'description',
        before: '',
        after: 'now with a description',
        kind: 'added'
      },
      {
        field: 'predictors.0.replicas',
        before: '1',
        after: '3',
        kind: 'changed'
      },
      {
        field: 'predictors.0.metadata.stage',
        before: undefined,
        after: 'prod',
        kind: 'added'
      },
      {
        field: 'predictors.0.metadata.owner',
        before: 'alice',
        after: undefined,
        kind: 'removed'
      }
    ]);
  });

  it('finds nothing between equal specs, and lists every field on request', () => {
    const spec = deployment('iris').spec;
    expect(diffSpecs(spec, structuredClone(spec))).toEqual([]);
    const all = diffSpecs(spec, spec, true);
    expect(all.length).toBeGreaterThan(5);
    expect(all.every(c => c.kind === 'same')).toBe(true);
  });

  it('treats a missing and an empty value alike', () => {
    expect(
      diffSpecs({ imagePullSecret: null }, { imagePullSecret: '' })
    ).toEqual([]);
  });
});

describe('mergePatch', () => {
  it('merges predictors item by item and removes nulls', () => {
    const spec = deployment('iris').spec;
    const merged = mergePatch(spec, {
      description: 'x',
      predictors: [
        {
          replicas: 4,
          modelURI: null,
          modelImage: 'repo/iris:2',
          metadata: { owner: null, a: 'b' }
        }
      ]
    }) as typeof spec;
    expect(merged.description).toBe('x');
    expect(merged.predictors[0].replicas).toBe(4);
    expect(merged.predictors[0].instanceType).toBe('cpu-0.5');
    expect(merged.predictors[0]).not.toHaveProperty('modelURI');
    expect(merged.predictors[0].modelImage).toBe('repo/iris:2');
    expect(merged.predictors[0].metadata).toEqual({ a: 'b' });
    expect(spec.predictors[0].replicas).toBe(1);
  });

  it('replaces every other list whole', () => {
    expect(
      mergePatch(
        { env: [{ name: 'A' }, { name: 'B' }] },
        { env: [{ name: 'C' }] }
      )
    ).toEqual({
      env: [{ name: 'C' }]
    });
  });
});
