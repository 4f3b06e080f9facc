import { describe, expect, it } from 'vitest';

import { diffSpecs, rollbackSpec } from '../src/diff';
import {
  logFileName,
  localTime,
  PHASE_TONES,
  phaseClass,
  splitEndpoint,
  utcTime
} from '../src/format';
import {
  apiFieldLabel,
  describeChange,
  displayValue,
  fieldLabel,
  inWords
} from '../src/labels';
import { deployment } from './helpers';

describe('fieldLabel', () => {
  it("speaks PrimeHub's words for every field of a spec", () => {
    expect(fieldLabel('predictors.0.replicas')).toBe('Replicas');
    expect(fieldLabel('predictors.0.modelImage')).toBe('Model Image');
    expect(fieldLabel('predictors.0.modelURI')).toBe('Model URI');
    expect(fieldLabel('predictors.0.instanceType')).toBe('Instance Type');
    expect(fieldLabel('predictors.0.imagePullSecret')).toBe(
      'Image Pull Secret'
    );
    expect(fieldLabel('predictors.0.metadata')).toBe('Metadata');
    expect(fieldLabel('predictors.0.metadata.team')).toBe('Metadata: team');
    expect(fieldLabel('predictors.1.replicas')).toBe('Replicas (predictor 2)');
    expect(fieldLabel('stop')).toBe('Deployment Stopped');
    expect(fieldLabel('endpoint.accessType')).toBe('Access Type');
    expect(fieldLabel('endpoint.clients')).toBe('Clients');
    expect(fieldLabel('env.LOG_LEVEL')).toBe(
      'Environment Variables: LOG_LEVEL'
    );
    expect(fieldLabel('description')).toBe('Description');
    expect(fieldLabel('updateMessage')).toBe('Update Message');
    expect(fieldLabel('somethingNew.x')).toBe('somethingNew.x');
  });

  it('shows values readably', () => {
    expect(describeChange('stop', 'false', 'true')).toBe(
      'Deployment Stopped: No -> Yes'
    );
    expect(displayValue('endpoint.accessType', 'private')).toBe('Private');
    expect(displayValue('description', '')).toBe('(none)');
    expect(displayValue('predictors.0.replicas', '2')).toBe('2');
  });

  it('puts API error paths in words', () => {
    expect(apiFieldLabel('spec.predictors.0.replicas')).toBe('Replicas');
    expect(apiFieldLabel('id')).toBe('Deployment ID');
    expect(
      inWords(
        'spec.predictors.0.replicas: must be >= 1; spec.env.0.name: required',
        [{ field: 'spec.predictors.0.replicas' }, { field: 'spec.env.0.name' }]
      )
    ).toBe(
      'Replicas: must be >= 1; Environment Variables (row 1) Name: required'
    );
  });
});

describe('rollbackSpec', () => {
  it('keeps stop, the user and the clients of the current spec', () => {
    const current = deployment('iris').spec;
    current.stop = true;
    current.endpoint = { accessType: 'private', clients: [{ name: 'a' }] };
    const target = {
      ...current,
      stop: false,
      userName: 'someone',
      endpoint: { accessType: 'public' as const, clients: [] },
      predictors: [{ ...current.predictors[0], replicas: 5 }]
    };
    const changes = diffSpecs(current, rollbackSpec(current, target));
    expect(changes.map(c => c.field).sort()).toEqual([
      'endpoint.accessType',
      'predictors.0.replicas'
    ]);
  });
});

describe('format', () => {
  it('one colour per phase: Stopping moves by itself like Deploying', () => {
    expect(phaseClass('Stopping')).toBe(phaseClass('Deploying'));
    expect(phaseClass('Stopped')).toBe('jp-PrimeHub-phase-stopped');
    expect(phaseClass('Unknown')).toBe('jp-PrimeHub-phase-stopped');
    expect(Object.keys(PHASE_TONES).sort()).toEqual([
      'Deployed',
      'Deploying',
      'Failed',
      'Stopped',
      'Stopping'
    ]);
  });

  it('local time names its zone; the tooltip is ISO UTC', () => {
    const iso = '2026-11-29T20:25:59.123Z';
    expect(localTime(iso)).toMatch(/[A-Z]{2,5}|GMT|UTC/);
    expect(utcTime(iso)).toBe('2026-11-29T20:25:59Z');
  });

  it('splits an endpoint before the id so the id and the path end stay visible', () => {
    const url =
      'http://127.0.0.1:8888/deployment/iris-classifier-ab12c/api/v1.0/predictions';
    expect(splitEndpoint(url, 'iris-classifier-ab12c')).toEqual({
      head: 'http://127.0.0.1:8888/deployment/',
      id: 'iris-classifier-ab12c',
      rest: '/api/v1.0/predictions'
    });
    expect(splitEndpoint('http://x/y', 'nope').rest).toBe('http://x/y');
  });

  it('names a replica log after the replica, never repeating the id', () => {
    expect(logFileName('iris-ab12c', 'iris-ab12c-0')).toBe('iris-ab12c-0.log');
    expect(logFileName('iris-ab12c', 'r0')).toBe('iris-ab12c-r0.log');
    expect(logFileName('iris-ab12c')).toBe('iris-ab12c.log');
  });
});
