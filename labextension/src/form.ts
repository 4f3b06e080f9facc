/** The create/update form's values, their rules, and how API errors land on its fields. */

import {
  ICreateRequest,
  IDeployment,
  IDeploymentSpec,
  IGroup,
  IInstanceType
} from './api';
import { apiFieldLabel, inWords } from './labels';
import { joinNames, policyOf } from './policy';
import { APIError } from './request';

/** The fields of the form, by the name the inputs use. */
export type FormField =
  | 'groupName'
  | 'instanceType'
  | 'replicas'
  | 'displayName'
  | 'id'
  | 'model'
  | 'modelURI'
  | 'modelImage'
  | 'imagePullSecret'
  | 'description'
  | 'metadata'
  | 'privateAccess'
  | 'policyUsers'
  | 'policyGroups'
  | 'updateMessage';

export interface IMetadataRow {
  key: string;
  value: string;
}

export interface IFormValues {
  groupName: string;
  instanceType: string;
  replicas: string;
  displayName: string;
  /** Typed by the user when `customId`, else generated from the name. */
  id: string;
  customId: boolean;
  modelSource: 'uri' | 'image';
  modelURI: string;
  modelImage: string;
  imagePullSecret: string;
  description: string;
  metadata: IMetadataRow[];
  privateAccess: boolean;
  /** Private endpoints: who may call with a bearer token, as comma lists (both empty: no policy). */
  policyUsers: string;
  policyGroups: string;
  updateMessage: string;
}

/** Field -> message; `''` holds a message that belongs to no one field. */
export type FieldErrors = Partial<Record<FormField | '', string>>;

export const MAX_ID_LENGTH = 63;
export const SUFFIX_LENGTH = 5;
const DNS1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** Turn a display name into the longest valid id prefix it allows (as the server does). */
export function normalizeName(name: string): string {
  const lowered = name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^[^a-z]+/, '')
    .replace(/^-+|-+$/g, '');
  return lowered || 'deployment';
}

/** A random suffix of 5 lowercase letters and digits. */
export function randomSuffix(random: () => number = Math.random): string {
  let out = '';
  for (let i = 0; i < SUFFIX_LENGTH; i++) {
    out += ALPHABET[Math.floor(random() * ALPHABET.length) % ALPHABET.length];
  }
  return out;
}

/** `normalized name` + '-' + suffix: always a valid id (the server's rule). */
export function generateId(name: string, suffix: string): string {
  const prefix = normalizeName(name)
    .slice(0, MAX_ID_LENGTH - SUFFIX_LENGTH - 1)
    .replace(/-+$/, '');
  return `${prefix}-${suffix}`;
}

/** What is wrong with an id (a DNS-1035 label), or null. */
export function idProblem(value: string): string | null {
  if (!value) {
    return 'the id must not be empty';
  }
  if (value.length > MAX_ID_LENGTH) {
    return `the id is ${value.length} characters long; at most ${MAX_ID_LENGTH} are allowed`;
  }
  if (!DNS1035.test(value)) {
    return (
      'use lowercase letters, digits and -, start with a letter and end with a letter ' +
      'or digit (a DNS-1035 label)'
    );
  }
  return null;
}

/** The groups a user may deploy into. */
export function enabledGroups(groups: IGroup[]): IGroup[] {
  return groups.filter(group => group.enabledDeployment);
}

/** The instance types of a group, by name. */
export function instanceTypesOf(
  groups: IGroup[],
  groupName: string
): IInstanceType[] {
  return groups.find(group => group.name === groupName)?.instanceTypes ?? [];
}

/** A fresh form, on the first enabled group and its first instance type. */
export function emptyForm(groups: IGroup[] = [], suffix = ''): IFormValues {
  const group = enabledGroups(groups)[0];
  return {
    groupName: group?.name ?? '',
    instanceType: group?.instanceTypes[0]?.name ?? '',
    replicas: '1',
    displayName: '',
    id: suffix ? generateId('', suffix) : '',
    customId: false,
    modelSource: 'uri',
    modelURI: '',
    modelImage: '',
    imagePullSecret: '',
    description: '',
    metadata: [],
    privateAccess: false,
    policyUsers: '',
    policyGroups: '',
    updateMessage: ''
  };
}

/** The form of an existing deployment, for Update. */
export function formFromDeployment(deployment: IDeployment): IFormValues {
  const spec = deployment.spec;
  const predictor = spec.predictors[0];
  return {
    groupName: spec.groupName,
    instanceType: predictor.instanceType,
    replicas: String(predictor.replicas),
    displayName: spec.displayName,
    id: deployment.id,
    customId: true,
    modelSource: predictor.modelImage ? 'image' : 'uri',
    modelURI: predictor.modelURI ?? '',
    modelImage: predictor.modelImage ?? '',
    imagePullSecret: predictor.imagePullSecret ?? '',
    description: spec.description ?? '',
    metadata: Object.entries(predictor.metadata ?? {}).map(([key, value]) => ({
      key,
      value
    })),
    privateAccess: spec.endpoint?.accessType === 'private',
    policyUsers: joinNames(spec.endpoint?.policy?.users),
    policyGroups: joinNames(spec.endpoint?.policy?.groups),
    updateMessage: ''
  };
}

/**
 * The checks a person benefits from before a round trip (required fields, the id's shape,
 * duplicate metadata keys). The server checks everything again and has the last word.
 */
export function localProblems(
  values: IFormValues,
  mode: 'create' | 'update'
): FieldErrors {
  const errors: FieldErrors = {};
  if (mode === 'create') {
    if (!values.groupName) {
      errors.groupName = 'choose a group';
    }
    if (!values.displayName.trim()) {
      errors.displayName = 'a deployment needs a name';
    }
    const problem = idProblem(values.id);
    if (values.customId && problem) {
      errors.id = problem;
    }
  }
  if (!values.instanceType) {
    errors.instanceType = 'choose an instance type';
  }
  const replicas = Number(values.replicas);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 64) {
    errors.replicas = 'a whole number from 1 to 64';
  }
  const source =
    values.modelSource === 'image' ? values.modelImage : values.modelURI;
  if (!source.trim()) {
    errors[values.modelSource === 'image' ? 'modelImage' : 'modelURI'] =
      values.modelSource === 'image'
        ? 'enter the model image'
        : 'enter the model URI (a bundle path or URL)';
  }
  const keys = values.metadata.map(row => row.key.trim());
  if (keys.some(key => !key)) {
    errors.metadata = 'every metadata row needs a key';
  } else if (new Set(keys).size !== keys.length) {
    errors.metadata = 'metadata keys must be unique';
  }
  return errors;
}

function metadataOf(values: IFormValues): Record<string, string> {
  return Object.fromEntries(
    values.metadata.map(row => [row.key.trim(), row.value])
  );
}

/** `spec.endpoint` of a create form: the policy only when private and not empty. */
function endpointOf(values: IFormValues): IDeploymentSpec['endpoint'] {
  if (!values.privateAccess) {
    return { accessType: 'public' };
  }
  const policy = policyOf(values.policyUsers, values.policyGroups);
  return policy ? { accessType: 'private', policy } : { accessType: 'private' };
}

/** The body of `POST deployments` for a filled-in create form. */
export function toCreateRequest(values: IFormValues): ICreateRequest {
  const image = values.modelSource === 'image';
  const spec: IDeploymentSpec = {
    displayName: values.displayName.trim(),
    groupName: values.groupName,
    description: values.description,
    endpoint: endpointOf(values),
    predictors: [
      {
        name: 'predictor1',
        replicas: Number(values.replicas),
        instanceType: values.instanceType,
        ...(image
          ? { modelImage: values.modelImage.trim() }
          : { modelURI: values.modelURI.trim() }),
        ...(image && values.imagePullSecret.trim()
          ? { imagePullSecret: values.imagePullSecret.trim() }
          : {}),
        metadata: metadataOf(values)
      }
    ]
  };
  if (values.updateMessage.trim()) {
    spec.updateMessage = values.updateMessage.trim();
  }
  return { id: values.id, spec };
}

/**
 * The JSON merge patch of `spec` that turns `current` into the form's values.
 *
 * Only mutable fields are sent (never groupName, displayName or the id); a cleared optional
 * field and a removed metadata key are sent as `null`, which the merge patch removes.
 */
export function toUpdatePatch(
  values: IFormValues,
  current: IDeployment
): Record<string, unknown> {
  const image = values.modelSource === 'image';
  const old = current.spec.predictors[0];
  const metadata: Record<string, string | null> = {};
  const wanted = metadataOf(values);
  for (const key of Object.keys(old.metadata ?? {})) {
    if (!(key in wanted)) {
      metadata[key] = null;
    }
  }
  Object.assign(metadata, wanted);
  const secret = values.imagePullSecret.trim();
  return {
    description: values.description,
    updateMessage: values.updateMessage.trim(),
    // null removes a policy (emptied, or the endpoint made public: it would only be ignored).
    endpoint: {
      accessType: values.privateAccess ? 'private' : 'public',
      policy: values.privateAccess
        ? policyOf(values.policyUsers, values.policyGroups)
        : null
    },
    predictors: [
      {
        replicas: Number(values.replicas),
        instanceType: values.instanceType,
        modelURI: image ? null : values.modelURI.trim(),
        modelImage: image ? values.modelImage.trim() : null,
        imagePullSecret: image && secret ? secret : null,
        metadata
      }
    ]
  };
}

const FIELD_OF_PATH: Record<string, FormField> = {
  id: 'id',
  'spec.groupName': 'groupName',
  'spec.displayName': 'displayName',
  'spec.description': 'description',
  'spec.updateMessage': 'updateMessage',
  'spec.endpoint': 'privateAccess',
  'spec.endpoint.accessType': 'privateAccess',
  'spec.endpoint.policy': 'policyGroups',
  'spec.endpoint.policy.groups': 'policyGroups',
  'spec.endpoint.policy.users': 'policyUsers',
  'spec.predictors': 'model',
  'spec.predictors.0': 'model',
  'spec.predictors.0.replicas': 'replicas',
  'spec.predictors.0.instanceType': 'instanceType',
  'spec.predictors.0.modelURI': 'modelURI',
  'spec.predictors.0.modelImage': 'modelImage',
  'spec.predictors.0.imagePullSecret': 'imagePullSecret',
  'spec.predictors.0.metadata': 'metadata'
};

/** The form field an API field path (`spec.predictors.0.modelURI`) belongs to, if any. */
export function fieldOfPath(path: string | undefined): FormField | '' {
  if (!path) {
    return '';
  }
  let probe = path;
  while (probe) {
    if (probe in FIELD_OF_PATH) {
      return FIELD_OF_PATH[probe];
    }
    const cut = probe.lastIndexOf('.');
    probe = cut > 0 ? probe.slice(0, cut) : '';
  }
  return '';
}

/**
 * Put an API error on the fields it names.
 *
 * A 422 names its fields in `details[].field`; a 409 on create is the id; a 403 (not a
 * member, or the disabled-group message) is shown as is, above the form.
 */
export function fieldErrorsOf(
  error: unknown,
  mode: 'create' | 'update'
): FieldErrors {
  if (!(error instanceof APIError)) {
    return { '': error instanceof Error ? error.message : String(error) };
  }
  const errors: FieldErrors = {};
  if (error.status === 422 && error.details.length > 0) {
    const single = error.details.length === 1;
    for (const detail of error.details) {
      const field = fieldOfPath(detail.field);
      // One problem: the top-level message is the most complete sentence, unless it is only
      // `field: message` again. Several: each detail's own message.
      // A problem of no one field goes above the form: it names its field in PrimeHub's words.
      let whole =
        single && !error.message.startsWith(`${detail.field}:`)
          ? inWords(error.message, error.details)
          : detail.message || inWords(error.message, error.details);
      if (!field && detail.field && detail.message) {
        whole = `${apiFieldLabel(detail.field)}: ${detail.message}`;
      }
      errors[field] = errors[field] ? `${errors[field]}; ${whole}` : whole;
    }
    return errors;
  }
  if (error.status === 409 && mode === 'create') {
    return { id: error.message };
  }
  return { '': inWords(error.message, error.details) };
}
