/** Small formatting helpers shared by the sidebar and the detail view. */

import { IDeployment } from './api';
import { Predictor, PredictorStatus } from './generated/api-types';

/** "just now", "5 min ago", "3 h ago", "2 days ago" for an RFC 3339 time. */
export function timeAgo(
  iso: string | null | undefined,
  now: number = Date.now()
): string {
  if (!iso) {
    return '';
  }
  const then = Date.parse(iso);
  if (Number.isNaN(then)) {
    return iso;
  }
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 45) {
    return 'just now';
  }
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ago`;
  }
  const hours = Math.round(minutes / 60);
  if (hours < 24) {
    return `${hours} h ago`;
  }
  const days = Math.round(hours / 24);
  return days === 1 ? '1 day ago' : `${days} days ago`;
}

/**
 * A time as the user's locale writes it, with the zone's abbreviation
 * (`11/29/2026, 8:25:59 PM UTC`); the same format in the sidebar, the detail view and the
 * notebook's card. `utcTime` is its tooltip.
 */
export function localTime(iso: string | null | undefined): string {
  if (!iso) {
    return '';
  }
  const then = new Date(iso);
  return Number.isNaN(then.getTime())
    ? iso
    : then.toLocaleString(undefined, { timeZoneName: 'short' });
}

/** The ISO 8601 UTC form of a time (`2026-11-29T20:25:59Z`), for tooltips. */
export function utcTime(iso: string | null | undefined): string {
  if (!iso) {
    return '';
  }
  const then = new Date(iso);
  return Number.isNaN(then.getTime())
    ? iso
    : then.toISOString().replace(/\.\d+Z$/, 'Z');
}

/**
 * The one colour table of phases: Deployed green, Failed red, Deploying and Stopping (moving by
 * themselves) yellow, Stopped grey. Its Python twin is `PHASES` in `kernel/words.py`.
 */
export const PHASE_TONES: Readonly<Record<string, string>> = {
  Deployed: 'deployed',
  Failed: 'failed',
  Deploying: 'deploying',
  Stopping: 'deploying',
  Stopped: 'stopped'
};

/** The CSS modifier of a phase, from `PHASE_TONES`. */
export function phaseClass(phase: string | undefined): string {
  return `jp-PrimeHub-phase-${PHASE_TONES[phase ?? ''] ?? 'stopped'}`;
}

/**
 * An endpoint cut in three for a narrow cell: the head (scheme, host, `/deployment/`) gives way
 * first, the deployment id always shows, the rest of the path gives way from its start so its
 * end (`predictions`) stays. Without the id in it, the last 24 characters are the rest.
 */
export function splitEndpoint(
  endpoint: string,
  id: string
): { head: string; id: string; rest: string } {
  const at = id ? endpoint.lastIndexOf(`/${id}`) : -1;
  if (at < 0) {
    const cut = Math.max(0, endpoint.length - 24);
    return { head: endpoint.slice(0, cut), id: '', rest: endpoint.slice(cut) };
  }
  return {
    head: endpoint.slice(0, at + 1),
    id,
    rest: endpoint.slice(at + 1 + id.length)
  };
}

/** The file name of a downloaded log: `<replica>.log` (a replica's name starts with the id). */
export function logFileName(id: string, replica?: string): string {
  if (!replica) {
    return `${id}.log`;
  }
  return replica.startsWith(id) ? `${replica}.log` : `${id}-${replica}.log`;
}

/** Where the model comes from, as one line. */
export function modelSource(deployment: IDeployment): string {
  const predictor = deployment.spec.predictors[0];
  return predictor?.modelImage || predictor?.modelURI || '';
}

/** Predictor phases a person reads as words beside the replica count. */
const SCALE_WORDS: Record<string, string> = {
  ScaledToZero: 'Scaled to zero',
  WakingUp: 'Waking up'
};

/** A predictor's replica setting as written: `3`, or `1-4` when autoscaled. */
export function replicaRange(predictor: Predictor): string {
  if (predictor.maxReplicas !== null && predictor.maxReplicas !== undefined) {
    return `${predictor.minReplicas ?? 1}-${predictor.maxReplicas}`;
  }
  return String(predictor.replicas ?? 1);
}

/** `Scaled to zero` / `Waking up` for a predictor status in those phases, else ''. */
export function scaleWord(status: { phase?: string } | undefined): string {
  return SCALE_WORDS[status?.phase ?? ''] ?? '';
}

/**
 * Per predictor: a label (`Replicas`, or `Replicas (<name>)` with several) and its text,
 * e.g. `Scaled to zero: 0/0 available (autoscaled 0-4)`. Without per-predictor statuses
 * (an older engine) a lone predictor reads the deployment's counts.
 */
export function predictorReplicas(
  deployment: IDeployment
): { label: string; text: string }[] {
  const { spec, status } = deployment;
  const statuses = new Map<string, PredictorStatus>(
    (status.predictors ?? []).map(p => [p.name, p])
  );
  const several = spec.predictors.length > 1;
  return spec.predictors.map(predictor => {
    const name = predictor.name ?? 'predictor1';
    const own =
      statuses.get(name) ??
      (several
        ? undefined
        : {
            replicas: status.replicas,
            availableReplicas: status.availableReplicas,
            phase: ''
          });
    const available = own?.availableReplicas ?? 0;
    const autoscaled =
      predictor.maxReplicas !== null && predictor.maxReplicas !== undefined;
    const text = autoscaled
      ? `${available}/${own?.replicas ?? 0} available (autoscaled ${replicaRange(predictor)})`
      : `${available}/${predictor.replicas ?? 1} available`;
    const word = scaleWord(own);
    return {
      label: several ? `Replicas (${name})` : 'Replicas',
      text: word ? `${word}: ${text}` : text
    };
  });
}

/** The scale words of a deployment's predictors, for the sidebar's list cell. */
export function scaleWords(deployment: IDeployment): string[] {
  const words = (deployment.status.predictors ?? []).map(p => scaleWord(p));
  return [...new Set(words.filter(Boolean))];
}

/** The predictor's metadata as `key: value` lines (the list cell's tooltip). */
export function metadataText(deployment: IDeployment): string {
  const metadata = deployment.spec.predictors[0]?.metadata ?? {};
  const entries = Object.entries(metadata);
  if (entries.length === 0) {
    return 'No metadata';
  }
  return entries.map(([key, value]) => `${key}: ${value}`).join('\n');
}

/** Whether a display name or id matches a search, the way the API's `name=` filter does. */
export function matchesName(deployment: IDeployment, search: string): boolean {
  const needle = search.trim().toLowerCase();
  if (!needle) {
    return true;
  }
  return (
    deployment.spec.displayName.toLowerCase().includes(needle) ||
    deployment.id.includes(needle)
  );
}

/**
 * Said instead of an example when the deployment's bundle records no sample request: an
 * invented body would only fail against the model.
 */
export const NO_SAMPLE =
  'This model records no sample request (packaged without one, or served from an image): ' +
  'replace <request body> with rows the model takes.';

/** The example body: the bundle's sample request (`status.sampleRequest`), or null. */
export function examplePayload(
  sample?: Record<string, unknown> | null
): string | null {
  return sample ? JSON.stringify(sample) : null;
}

/** A shell-safe single-quoted string. */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** The bearer header of a private endpoint's example; `$TOKEN` may stand in for the token. */
export const BEARER_HEADER = '-H "Authorization: Bearer <access-token>"';

/**
 * The curl command that calls an endpoint: with `-u <client-name>:<client-token>` when the
 * endpoint is private (the client and its token come from the Clients tab), or with
 * `BEARER_HEADER` for `'bearer'` (a JWT of a user the access policy allows). Without a
 * payload the body is a `<request body>` placeholder, and a comment line says why.
 */
export function exampleCurl(
  endpoint: string,
  accessType: 'public' | 'private' | 'bearer' | undefined,
  payload: string | null,
  client?: { name: string; token?: string }
): string {
  const lines = ['curl -X POST'];
  if (accessType === 'private') {
    const name = client?.name ?? '<client-name>';
    const token = client?.token ?? '<client-token>';
    lines.push(`-u ${shellQuote(`${name}:${token}`)}`);
  } else if (accessType === 'bearer') {
    lines.push(BEARER_HEADER);
  }
  lines.push(shellQuote(endpoint || '<endpoint>'));
  lines.push(`-H 'Content-Type: application/json'`);
  lines.push(`-d ${shellQuote(payload ?? '<request body>')}`);
  const command = lines.join(' \\\n     ');
  return payload === null ? `# ${NO_SAMPLE}\n${command}` : command;
}

/**
 * "Run an Example" of a deployment, as every view shows it (the Information tab, a new
 * client's token box): its bundle's sample rows with their column names, never invented.
 * A private endpoint without a given client also gets `bearer`, the same call with a bearer
 * token (its Basic form stays `curl`); otherwise `bearer` is null.
 */
export function runExample(
  deployment: IDeployment,
  client?: { name: string; token?: string }
): { payload: string | null; curl: string; bearer: string | null } {
  const payload = examplePayload(deployment.status.sampleRequest);
  const access = client
    ? 'private'
    : (deployment.spec.endpoint?.accessType ?? 'public');
  const endpoint = deployment.status.endpoint ?? '';
  return {
    payload,
    curl: exampleCurl(endpoint, access, payload, client),
    bearer:
      access === 'private' && !client
        ? exampleCurl(endpoint, 'bearer', payload)
        : null
  };
}
