/**
 * PrimeHub's words for the fields of a deployment spec, and its values as a person reads them.
 *
 * The one TypeScript table of field names (its Python twin is `primehub_jupyter/kernel/words.py`):
 * the History tab, the Update and Roll back previews all show `Replicas`, never
 * `predictors.0.replicas`.
 */

/** Spec paths (as `flattenSpec` writes them, `predictors.N.` cut off) -> PrimeHub's label. */
export const FIELD_LABELS: Readonly<Record<string, string>> = {
  displayName: 'Deployment Name',
  groupName: 'Group',
  description: 'Description',
  updateMessage: 'Update Message',
  userName: 'Deployed By',
  stop: 'Deployment Stopped',
  env: 'Environment Variables',
  endpoint: 'Endpoint',
  'endpoint.accessType': 'Access Type',
  'endpoint.clients': 'Clients',
  'endpoint.policy': 'Access Policy',
  'endpoint.policy.users': 'Policy Users',
  'endpoint.policy.groups': 'Policy Groups',
  predictors: 'Predictors',
  name: 'Predictor Name',
  replicas: 'Replicas',
  minReplicas: 'Min Replicas',
  maxReplicas: 'Max Replicas',
  targetConcurrency: 'Target Concurrency',
  scaleToZeroAfterSeconds: 'Scale to Zero After (s)',
  traffic: 'Traffic (%)',
  shadow: 'Shadow',
  routing: 'Routing',
  'routing.stickyHeader': 'Sticky Header',
  modelImage: 'Model Image',
  modelURI: 'Model URI',
  imagePullSecret: 'Image Pull Secret',
  instanceType: 'Instance Type',
  metadata: 'Metadata'
};

const PREDICTOR = /^predictors\.(\d+)(?:\.(.+))?$/;

/**
 * The label of a flattened spec field.
 *
 * `predictors.0.replicas` -> `Replicas` (`Replicas (predictor 2)` for a second predictor),
 * `predictors.0.metadata.team` -> `Metadata: team`, `env.LOG_LEVEL` ->
 * `Environment Variables: LOG_LEVEL`; an unknown path is shown as it is.
 */
export function fieldLabel(path: string): string {
  let rest = path;
  let suffix = '';
  const predictor = PREDICTOR.exec(path);
  if (predictor) {
    rest = predictor[2] ?? 'predictors';
    if (predictor[1] !== '0') {
      suffix = ` (predictor ${Number(predictor[1]) + 1})`;
    }
  }
  if (rest in FIELD_LABELS) {
    return FIELD_LABELS[rest] + suffix;
  }
  for (const parent of ['metadata', 'env']) {
    if (rest.startsWith(`${parent}.`)) {
      return `${FIELD_LABELS[parent]}: ${rest.slice(parent.length + 1)}${suffix}`;
    }
  }
  return path;
}

/** A field's value as a person reads it: `Yes`/`No`, `Public`/`Private`, `(none)` for blank. */
export function displayValue(path: string, value: string | undefined): string {
  if (value === undefined || value === '') {
    return '(none)';
  }
  if (path === 'stop' || path === 'shadow' || path.endsWith('.shadow')) {
    return value === 'true' ? 'Yes' : value === 'false' ? 'No' : value;
  }
  if (path === 'endpoint.accessType') {
    return value === 'private'
      ? 'Private'
      : value === 'public'
        ? 'Public'
        : value;
  }
  return value;
}

/** One change in words: `Deployment Stopped: No -> Yes`. */
export function describeChange(
  path: string,
  before: string | undefined,
  after: string | undefined
): string {
  return `${fieldLabel(path)}: ${displayValue(path, before)} -> ${displayValue(path, after)}`;
}

/** The label of an API error's field (`spec.predictors.0.replicas`, `id`). */
export function apiFieldLabel(field: string): string {
  if (field === 'id') {
    return 'Deployment ID';
  }
  if (field === 'spec') {
    return 'Deployment';
  }
  const path = field.replace(/^spec\./, '');
  // The API counts list items; environment variables are rows of the form.
  const env = /^env\.(\d+)(?:\.(name|value))?$/.exec(path);
  if (env) {
    const part = env[2] ? ` ${env[2] === 'name' ? 'Name' : 'Value'}` : '';
    return `${FIELD_LABELS.env} (row ${Number(env[1]) + 1})${part}`;
  }
  return fieldLabel(path);
}

/**
 * An API message with each `details[].field` path at the head of a clause
 * (`spec.predictors.0.replicas: ...`) replaced by its PrimeHub label (`Replicas: ...`).
 */
export function inWords(
  message: string,
  details: ReadonlyArray<{ field?: string }>
): string {
  const fields = details
    .map(detail => detail.field)
    .filter((field): field is string => Boolean(field))
    .sort((a, b) => b.length - a.length);
  let out = message;
  for (const field of fields) {
    out = out.split(`${field}:`).join(`${apiFieldLabel(field)}:`);
  }
  return out;
}
