import { describe, expect, it } from 'vitest';

import {
  predictorReplicas,
  replicaRange,
  scaleWord,
  scaleWords
} from '../src/format';
import { PredictorPhase } from '../src/generated/api-types';
import { deployment } from './helpers';

describe('autoscaled predictors', () => {
  it('writes replica ranges', () => {
    const predictor = deployment('a').spec.predictors[0];
    expect(replicaRange(predictor)).toBe('1');
    expect(
      replicaRange({
        ...predictor,
        replicas: null,
        minReplicas: 0,
        maxReplicas: 4
      })
    ).toBe('0-4');
    expect(replicaRange({ ...predictor, replicas: null, maxReplicas: 3 })).toBe(
      '1-3'
    );
  });

  it('reads a lone predictor from the deployment status', () => {
    expect(predictorReplicas(deployment('a'))).toEqual([
      { label: 'Replicas', text: '1/1 available' }
    ]);
    expect(scaleWords(deployment('a'))).toEqual([]);
  });

  it('says Scaled to zero and Waking up per predictor', () => {
    const d = deployment('a');
    const v1 = d.spec.predictors[0];
    d.spec.predictors = [
      { ...v1, name: 'v1', replicas: 2 },
      { ...v1, name: 'v2', replicas: null, minReplicas: 0, maxReplicas: 4 }
    ];
    const status = (
      name: string,
      replicas: number,
      ready: number,
      phase: PredictorPhase
    ) => ({
      name,
      traffic: 50,
      shadow: false,
      replicas,
      availableReplicas: ready,
      phase,
      message: ''
    });
    d.status.predictors = [
      status('v1', 2, 2, 'Deployed'),
      status('v2', 0, 0, 'ScaledToZero')
    ];
    expect(predictorReplicas(d)).toEqual([
      { label: 'Replicas (v1)', text: '2/2 available' },
      {
        label: 'Replicas (v2)',
        text: 'Scaled to zero: 0/0 available (autoscaled 0-4)'
      }
    ]);
    expect(scaleWords(d)).toEqual(['Scaled to zero']);
    d.status.predictors[1] = status('v2', 1, 0, 'WakingUp');
    expect(predictorReplicas(d)[1].text).toBe(
      'Waking up: 0/1 available (autoscaled 0-4)'
    );
    expect(scaleWord(d.status.predictors[1])).toBe('Waking up');
  });
});
