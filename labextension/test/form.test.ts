import { describe, expect, it } from 'vitest';

import { IGroup } from '../src/api';
import {
  emptyForm,
  enabledGroups,
  fieldErrorsOf,
  fieldOfPath,
  formFromDeployment,
  generateId,
  idProblem,
  localProblems,
  normalizeName,
  randomSuffix,
  toCreateRequest,
  toUpdatePatch
} from '../src/form';
import { APIError } from '../src/request';
import { deployment } from './helpers';

// As `GET groups` answers (core/bodies.py GroupInfo): every field is always there.
function group(
  name: string,
  enabledDeployment: boolean,
  instanceTypes: IGroup['instanceTypes']
): IGroup {
  return {
    name,
    displayName: name,
    enabledDeployment,
    isMember: true,
    quota: { cpu: null, memory: null, gpu: null, maxDeployments: null },
    usage: { cpu: 0, memory: '0', gpu: 0, deployments: 0 },
    instanceTypes
  };
}

function instanceType(name: string, cpu: number, memory: string) {
  return {
    name,
    displayName: name,
    description: '',
    cpu,
    memory,
    gpu: 0,
    nodeSelector: {},
    tolerations: []
  };
}

const GROUPS: IGroup[] = [
  group('research', false, []),
  group('default', true, [
    instanceType('cpu-2', 2, '2Gi'),
    instanceType('cpu-0.5', 0.5, '512Mi')
  ])
];

function apiError(status: number, body: Record<string, unknown>): APIError {
  const response = new Response(JSON.stringify(body), { status });
  return new APIError(
    response,
    String(body.message),
    String(body.reason ?? ''),
    (body.details as never) ?? []
  );
}

describe('ids', () => {
  it('normalizes names like the server', () => {
    expect(normalizeName('Iris Classifier v2!')).toBe('iris-classifier-v2');
    expect(normalizeName('2024 model')).toBe('model');
    expect(normalizeName('***')).toBe('deployment');
  });

  it('generates valid ids of at most 63 characters', () => {
    expect(generateId('Iris', 'ab12c')).toBe('iris-ab12c');
    const long = generateId('x'.repeat(100), 'ab12c');
    expect(long.length).toBe(63);
    expect(idProblem(long)).toBeNull();
    expect(idProblem(generateId('a-'.repeat(40), 'zz9zz'))).toBeNull();
  });

  it('draws suffixes from lowercase letters and digits', () => {
    expect(randomSuffix(() => 0)).toBe('aaaaa');
    expect(randomSuffix(() => 0.9999)).toBe('99999');
    expect(randomSuffix()).toMatch(/^[a-z0-9]{5}$/);
  });

  it('explains invalid ids', () => {
    expect(idProblem('')).toMatch(/empty/);
    expect(idProblem('Iris')).toMatch(/DNS-1035/);
    expect(idProblem('iris-')).toMatch(/DNS-1035/);
    expect(idProblem('a'.repeat(64))).toMatch(/64 characters/);
    expect(idProblem('iris-2')).toBeNull();
  });
});

describe('form values', () => {
  it('starts on the first enabled group and its first instance type', () => {
    expect(enabledGroups(GROUPS).map(g => g.name)).toEqual(['default']);
    const form = emptyForm(GROUPS, 'ab12c');
    expect(form.groupName).toBe('default');
    expect(form.instanceType).toBe('cpu-2');
    expect(form.replicas).toBe('1');
  });

  it('checks required fields, replicas and metadata before a round trip', () => {
    const form = {
      ...emptyForm(GROUPS, 'ab12c'),
      replicas: '0',
      metadata: [{ key: '', value: 'x' }]
    };
    const problems = localProblems(form, 'create');
    expect(Object.keys(problems).sort()).toEqual([
      'displayName',
      'metadata',
      'modelURI',
      'replicas'
    ]);
    const dup = {
      ...form,
      displayName: 'iris',
      replicas: '2',
      modelURI: '/b',
      metadata: [
        { key: 'a', value: '1' },
        { key: 'a', value: '2' }
      ]
    };
    expect(localProblems(dup, 'create')).toEqual({
      metadata: 'metadata keys must be unique'
    });
    const customBadId = { ...dup, metadata: [], customId: true, id: 'Bad_ID' };
    expect(Object.keys(localProblems(customBadId, 'create'))).toEqual(['id']);
  });

  it('builds the create request', () => {
    const form = {
      ...emptyForm(GROUPS, 'ab12c'),
      displayName: ' Iris ',
      id: 'iris-ab12c',
      modelURI: ' /bundles/iris ',
      replicas: '2',
      metadata: [{ key: 'team', value: 'ml' }],
      privateAccess: true
    };
    expect(toCreateRequest(form)).toEqual({
      id: 'iris-ab12c',
      spec: {
        displayName: 'Iris',
        groupName: 'default',
        description: '',
        endpoint: { accessType: 'private' },
        predictors: [
          {
            name: 'predictor1',
            replicas: 2,
            instanceType: 'cpu-2',
            modelURI: '/bundles/iris',
            metadata: { team: 'ml' }
          }
        ]
      }
    });
    const image = {
      ...form,
      modelSource: 'image' as const,
      modelImage: 'repo/iris:1',
      imagePullSecret: 'reg'
    };
    const predictor = toCreateRequest(image).spec.predictors[0];
    expect(predictor.modelImage).toBe('repo/iris:1');
    expect(predictor.modelURI).toBeUndefined();
    expect(predictor.imagePullSecret).toBe('reg');
  });

  it('round-trips a deployment into the update form', () => {
    const d = deployment('iris');
    const form = formFromDeployment(d);
    expect(form.id).toBe('iris');
    expect(form.modelSource).toBe('uri');
    expect(form.metadata).toEqual([{ key: 'owner', value: 'alice' }]);
    expect(localProblems(form, 'update')).toEqual({});
  });

  it('patches only mutable fields, removing cleared metadata keys and the other model source', () => {
    const d = deployment('iris');
    const form = {
      ...formFromDeployment(d),
      displayName: 'renamed',
      groupName: 'other',
      modelSource: 'image' as const,
      modelImage: 'repo/iris:2',
      metadata: [{ key: 'stage', value: 'prod' }],
      replicas: '3',
      updateMessage: ' more traffic '
    };
    const patch = toUpdatePatch(form, d) as { predictors: unknown[] };
    expect(patch).not.toHaveProperty('displayName');
    expect(patch).not.toHaveProperty('groupName');
    expect(patch).toHaveProperty('updateMessage', 'more traffic');
    expect(patch.predictors[0]).toEqual({
      replicas: 3,
      instanceType: 'cpu-0.5',
      modelURI: null,
      modelImage: 'repo/iris:2',
      imagePullSecret: null,
      metadata: { owner: null, stage: 'prod' }
    });
  });
});

describe('API errors on fields', () => {
  it('maps field paths to the form field that shows them', () => {
    expect(fieldOfPath('spec.displayName')).toBe('displayName');
    expect(fieldOfPath('spec.predictors.0.modelURI')).toBe('modelURI');
    expect(fieldOfPath('spec.predictors.0')).toBe('model');
    expect(fieldOfPath('spec.predictors.0.metadata.bad key')).toBe('metadata');
    expect(fieldOfPath('spec.endpoint.clients')).toBe('privateAccess');
    expect(fieldOfPath('id')).toBe('id');
    expect(fieldOfPath('spec.somethingNew')).toBe('');
    expect(fieldOfPath(undefined)).toBe('');
  });

  it('shows the whole sentence for a single problem', () => {
    const error = apiError(422, {
      message:
        "instance type 'gpu' not found in group 'default'; available: cpu-2",
      details: [
        { field: 'spec.predictors.0.instanceType', message: 'not found' }
      ]
    });
    expect(fieldErrorsOf(error, 'create')).toEqual({
      instanceType:
        "instance type 'gpu' not found in group 'default'; available: cpu-2"
    });
  });

  it("shows each detail's message when there are several", () => {
    const error = apiError(422, {
      message:
        'spec.displayName: too long; spec.predictors.0.replicas: too many',
      details: [
        { field: 'spec.displayName', message: 'too long' },
        { field: 'spec.predictors.0.replicas', message: 'too many' }
      ]
    });
    expect(fieldErrorsOf(error, 'create')).toEqual({
      displayName: 'too long',
      replicas: 'too many'
    });
  });

  it('does not repeat the field path of a single pydantic problem', () => {
    const error = apiError(422, {
      message:
        'spec.predictors.0: a predictor needs a modelImage or a modelURI',
      details: [
        {
          field: 'spec.predictors.0',
          message: 'a predictor needs a modelImage or a modelURI'
        }
      ]
    });
    expect(fieldErrorsOf(error, 'create')).toEqual({
      model: 'a predictor needs a modelImage or a modelURI'
    });
  });

  it('puts a taken id on the id field, and a 403 above the form, word for word', () => {
    expect(
      fieldErrorsOf(
        apiError(409, { message: "deployment 'iris' already exists" }),
        'create'
      )
    ).toEqual({
      id: "deployment 'iris' already exists"
    });
    const disabled =
      'Feature not available - Model Deployment is not enabled for this group. Please contact your administrator to enable it.';
    expect(
      fieldErrorsOf(
        apiError(403, { message: disabled, reason: 'FeatureNotAvailable' }),
        'create'
      )
    ).toEqual({
      '': disabled
    });
    expect(fieldErrorsOf(new Error('network down'), 'update')).toEqual({
      '': 'network down'
    });
  });
});
