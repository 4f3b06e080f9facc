/** The PrimeHub deployment objects as the REST API sends them, and one client for every call. */

import { ServerConnection } from '@jupyterlab/services';

import { apiUrl, requestAPI, requestRaw } from './request';

/** Where a deployment is in its life, as PrimeHub names it. */
export type Phase =
  'Deploying' | 'Deployed' | 'Stopping' | 'Stopped' | 'Failed';

/** Phases that move by themselves: watch them closely. */
export const TRANSITIONAL_PHASES: ReadonlySet<string> = new Set([
  'Deploying',
  'Stopping'
]);

export interface IEnvVar {
  name: string;
  value: string;
}

export interface IPredictor {
  name?: string;
  replicas: number;
  modelImage?: string | null;
  modelURI?: string | null;
  instanceType: string;
  imagePullSecret?: string | null;
  metadata?: Record<string, string>;
}

export interface IEndpointSpec {
  accessType: 'public' | 'private';
  clients?: { name: string }[];
}

/** What the user asked for. `id`, `groupName` and `displayName` are fixed after create. */
export interface IDeploymentSpec {
  displayName: string;
  description?: string;
  updateMessage?: string;
  groupName: string;
  userName?: string;
  stop?: boolean;
  env?: IEnvVar[];
  endpoint?: IEndpointSpec;
  predictors: IPredictor[];
}

export interface IReplicaStatus {
  name: string;
  ready: boolean;
  phase: string;
  restarts: number;
  message: string;
  startTime?: string | null;
}

export interface IHistoryEntry {
  revision: number;
  time: string;
  user: string;
  updateMessage: string;
  spec: IDeploymentSpec;
}

export interface IDeploymentStatus {
  phase: Phase;
  message: string;
  replicas: number;
  availableReplicas: number;
  endpoint?: string | null;
  creationTime?: string | null;
  lastUpdated?: string | null;
  replicaStatuses?: IReplicaStatus[];
  /** The bundle's recorded sample request, when the engine knows it. */
  sampleRequest?: Record<string, unknown> | null;
  history?: IHistoryEntry[];
}

export interface IDeployment {
  id: string;
  spec: IDeploymentSpec;
  status: IDeploymentStatus;
  resourceVersion?: string;
}

export interface IInstanceType {
  name: string;
  displayName?: string;
  description?: string;
  cpu: number;
  memory: string;
  gpu: number;
}

export interface IGroup {
  name: string;
  displayName?: string;
  enabledDeployment: boolean;
  isMember?: boolean;
  quota?: Record<string, unknown>;
  usage?: Record<string, unknown>;
  instanceTypes: IInstanceType[];
}

export interface IMe {
  name: string;
  isAdmin: boolean;
  engine?: string;
  groups: IGroup[];
}

/** The body of `POST deployments`. */
export interface ICreateRequest {
  id?: string;
  spec: IDeploymentSpec;
}

/** A client of a private endpoint; `token` is only there in the answer that created it. */
export interface IClient {
  name: string;
  token?: string;
}

/** `GET deployments/<id>/metrics`: per-step series over a window (see docs/internals.md). */
export interface IMetrics {
  deploymentId: string;
  window: number;
  step: number;
  timestamps: number[];
  series: Record<string, (number | null)[]>;
  replicas?: Record<string, Record<string, (number | null)[]>>;
  totals?: Record<string, number | null>;
}

/** What `invoke` answered: the model's status and body, whatever they are. */
export interface IInvokeResult {
  status: number;
  contentType: string;
  body: string;
}

function json(body: unknown): RequestInit {
  return {
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json' }
  };
}

function query(params: Record<string, string | number | boolean | undefined>) {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === '' || value === false) {
      continue;
    }
    const text = value === true ? '1' : String(value);
    parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(text)}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

function path(id: string, rest = ''): string {
  return `deployments/${encodeURIComponent(id)}${rest}`;
}

/**
 * Every call of the PrimeHub REST API that the lab extension makes.
 *
 * Errors are `APIError`s (see request.ts): `status`, `message` (shown as is), `details`.
 */
export class PrimeHubAPI {
  constructor(
    readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  /** The absolute URL of an API path. */
  url(rest: string): string {
    return apiUrl(rest, this.settings);
  }

  me(): Promise<IMe> {
    return requestAPI<IMe>('me', {}, this.settings);
  }

  async groups(): Promise<IGroup[]> {
    const body = await requestAPI<{ groups: IGroup[] }>(
      'groups',
      {},
      this.settings
    );
    return body.groups;
  }

  async list(
    options: { name?: string; mine?: boolean; group?: string } = {}
  ): Promise<IDeployment[]> {
    const body = await requestAPI<{ deployments: IDeployment[] }>(
      `deployments${query(options)}`,
      {},
      this.settings
    );
    return body.deployments;
  }

  get(id: string): Promise<IDeployment> {
    return requestAPI<IDeployment>(path(id), {}, this.settings);
  }

  create(body: ICreateRequest): Promise<IDeployment> {
    return requestAPI<IDeployment>(
      'deployments',
      { method: 'POST', ...json(body) },
      this.settings
    );
  }

  /** Merge-patch the spec; `resourceVersion` makes it fail (409) if someone changed it since. */
  update(
    id: string,
    spec: Partial<IDeploymentSpec> | Record<string, unknown>,
    resourceVersion?: string
  ): Promise<IDeployment> {
    const body: Record<string, unknown> = { spec };
    if (resourceVersion !== undefined) {
      body.resourceVersion = resourceVersion;
    }
    return requestAPI<IDeployment>(
      path(id),
      { method: 'PATCH', ...json(body) },
      this.settings
    );
  }

  stop(id: string, updateMessage?: string): Promise<IDeployment> {
    return this._post<IDeployment>(path(id, '/stop'), { updateMessage });
  }

  start(id: string, updateMessage?: string): Promise<IDeployment> {
    return this._post<IDeployment>(path(id, '/start'), { updateMessage });
  }

  async delete(id: string): Promise<void> {
    await requestAPI<void>(path(id), { method: 'DELETE' }, this.settings);
  }

  async history(id: string): Promise<IHistoryEntry[]> {
    const body = await requestAPI<{ history: IHistoryEntry[] }>(
      path(id, '/history'),
      {},
      this.settings
    );
    return body.history;
  }

  rollback(
    id: string,
    revision: number,
    updateMessage?: string
  ): Promise<IDeployment> {
    return this._post<IDeployment>(path(id, '/rollback'), {
      revision,
      updateMessage
    });
  }

  async replicas(id: string): Promise<string[]> {
    const body = await requestAPI<{ replicas: string[] }>(
      path(id, '/replicas'),
      {},
      this.settings
    );
    return body.replicas;
  }

  /** The last `tail` log lines, oldest first. */
  async logs(
    id: string,
    options: { replica?: string; tail?: number } = {}
  ): Promise<string[]> {
    const body = await requestAPI<{ lines: string[] }>(
      path(
        id,
        `/logs${query({ replica: options.replica, tail: options.tail ?? 2000, format: 'json' })}`
      ),
      {},
      this.settings
    );
    return body.lines;
  }

  /** The streaming answer of `logs?follow=1`: the last `tail` lines, then new ones as written. */
  followLogs(
    id: string,
    options: { replica?: string; tail?: number; signal?: AbortSignal } = {}
  ): Promise<Response> {
    return requestRaw(
      path(
        id,
        `/logs${query({ replica: options.replica, tail: options.tail ?? 2000, follow: true })}`
      ),
      { signal: options.signal, cache: 'no-store' },
      this.settings
    );
  }

  /** The whole log (every line kept on disk) as a file. */
  async downloadLogs(id: string, replica?: string): Promise<Blob> {
    const response = await requestRaw(
      path(id, `/logs${query({ replica, download: true })}`),
      {},
      this.settings
    );
    return response.blob();
  }

  async clients(id: string): Promise<IClient[]> {
    const body = await requestAPI<{ clients: IClient[] }>(
      path(id, '/clients'),
      {},
      this.settings
    );
    return body.clients;
  }

  /** Add (or replace) a client: the answer holds its token, which is never shown again. */
  addClient(id: string, name: string): Promise<Required<IClient>> {
    return this._post<Required<IClient>>(path(id, '/clients'), { name });
  }

  async deleteClient(id: string, name: string): Promise<void> {
    await requestAPI<void>(
      path(id, `/clients/${encodeURIComponent(name)}`),
      { method: 'DELETE' },
      this.settings
    );
  }

  metrics(id: string, window = 900, step = 5): Promise<IMetrics> {
    return requestAPI<IMetrics>(
      path(id, `/metrics${query({ window, step })}`),
      {},
      this.settings
    );
  }

  /** Call the model as the signed-in user; any answer of the model is returned, not thrown. */
  async invoke(
    id: string,
    payload: string,
    endpointPath = 'api/v1.0/predictions'
  ): Promise<IInvokeResult> {
    const response = await ServerConnection.makeRequest(
      this.url(path(id, `/invoke/${endpointPath}`)),
      {
        method: 'POST',
        body: payload,
        headers: { 'Content-Type': 'application/json' }
      },
      this.settings
    );
    return {
      status: response.status,
      contentType: response.headers.get('Content-Type') ?? '',
      body: await response.text()
    };
  }

  private _post<T>(rest: string, body: Record<string, unknown>): Promise<T> {
    const clean = Object.fromEntries(
      Object.entries(body).filter(([, value]) => value !== undefined)
    );
    return requestAPI<T>(
      rest,
      { method: 'POST', ...json(clean) },
      this.settings
    );
  }
}
