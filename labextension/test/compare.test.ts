import { describe, expect, it } from 'vitest';

import { IComparison, IPredictorComparison, PrimeHubAPI } from '../src/api';
import {
  canCompare,
  compareRows,
  promotable,
  promoteQuestion,
  verdict
} from '../src/compare';
import { apiError, deployment, FakeServer, json } from './helpers';

function row(
  name: string,
  role: IPredictorComparison['role'],
  overrides: Partial<IPredictorComparison> = {}
): IPredictorComparison {
  return {
    name,
    role,
    traffic: 0,
    requests: 0,
    errors: 0,
    errorRate: null,
    latencyP50: null,
    latencyP99: null,
    feedback: 0,
    meanReward: null,
    successes: 0,
    successRate: null,
    compared: 0,
    differed: 0,
    differedShare: null,
    test: null,
    ...overrides
  };
}

function test(overrides: Partial<NonNullable<IPredictorComparison['test']>>) {
  return {
    baseline: 'v1',
    method: 'two-sided two-proportion z-test (pooled)' as const,
    enoughData: true,
    statistic: 2.88675,
    pValue: 0.0038924,
    alpha: 0.05,
    significant: true,
    difference: 0.2,
    summary: 'v2 succeeds better than v1 (+20.0 points, p = 0.00389 < 0.05)',
    ...overrides
  };
}

const REPORT: IComparison = {
  deploymentId: 'iris',
  primary: 'v1',
  counted: true,
  test: 'two-sided two-proportion z-test',
  alpha: 0.05,
  minFeedback: 20,
  predictors: [
    row('v1', 'primary', {
      traffic: 90,
      requests: 900,
      errors: 9,
      errorRate: 0.01,
      latencyP50: 0.0175,
      latencyP99: 0.0247,
      feedback: 100,
      meanReward: 0.5,
      successes: 50,
      successRate: 0.5
    }),
    row('v2', 'challenger', {
      traffic: 10,
      requests: 100,
      feedback: 100,
      successes: 70,
      successRate: 0.7,
      meanReward: 0.7,
      test: test({})
    }),
    row('v3', 'shadow', { compared: 200, differed: 30, differedShare: 0.15 })
  ]
};

describe('the Compare view', () => {
  it('turns the report into table rows, the primary first', () => {
    const rows = compareRows(REPORT);
    expect(rows.map(r => r.name)).toEqual(['v1', 'v2', 'v3']);
    expect(rows[0]).toMatchObject({
      traffic: '90%',
      requests: '900',
      errorRate: '1.0%',
      p50: '17.5',
      p99: '24.7',
      meanReward: '0.5',
      success: '50.0%',
      verdict: '-',
      significant: false
    });
    expect(rows[1].verdict).toBe('p = 0.00389, significant, +20.0 points');
    expect(rows[1].significant).toBe(true);
    expect(rows[2]).toMatchObject({
      traffic: 'copy',
      p50: '-',
      verdict: 'differs in 15.0% of 200 answers'
    });
  });

  it('says when there is not enough data, or no significant difference', () => {
    const few = row('v2', 'challenger', {
      test: test({
        enoughData: false,
        pValue: null,
        significant: false,
        difference: null
      })
    });
    expect(verdict(few)).toBe('not enough data');
    const same = row('v2', 'challenger', {
      test: test({ pValue: 0.41, significant: false, difference: -0.03 })
    });
    expect(verdict(same)).toBe('p = 0.41, not significant, -3.0 points');
    expect(verdict(row('v3', 'shadow'))).toBe('no answers compared yet');
  });

  it('offers promote for answering predictors only, and says what goes', () => {
    expect(promotable(REPORT)).toEqual(['v1', 'v2']);
    expect(promoteQuestion(REPORT, 'v2')).toContain(
      'Send every request of iris to v2 and remove v1, v3?'
    );
    expect(canCompare(deployment('iris'))).toBe(false);
    const split = deployment('iris');
    split.spec.predictors.push({ ...split.spec.predictors[0], name: 'v2' });
    expect(canCompare(split)).toBe(true);
    expect(canCompare(null)).toBe(false);
  });

  it('calls compare and promote, and shows a 422 as the server said it', async () => {
    const server = new FakeServer()
      .on('GET', 'deployments/iris/compare', json(REPORT))
      .on('POST', 'deployments/iris/promote', deployment('iris', 'Deploying'))
      .on(
        'POST',
        'deployments/other/promote',
        apiError(
          422,
          "predictor: 'v3' is a shadow; promote an answering predictor (v1, v2)",
          'Invalid',
          [{ field: 'predictor', message: 'a shadow cannot be promoted' }]
        )
      );
    const api = new PrimeHubAPI(server.settings());
    expect((await api.compare('iris')).primary).toBe('v1');
    await api.promote('iris', 'v2');
    await api.promote('iris', 'v2', 'v2 wins');
    expect(
      server.to('deployments/iris/promote').map(r => JSON.parse(r.body))
    ).toEqual([
      { predictor: 'v2' },
      { predictor: 'v2', updateMessage: 'v2 wins' }
    ]);
    await expect(api.promote('other', 'v3')).rejects.toMatchObject({
      status: 422,
      message: expect.stringContaining('is a shadow')
    });
  });
});
