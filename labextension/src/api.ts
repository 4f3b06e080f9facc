/** The PrimeHub deployment objects as the REST API sends them, and one client for every call. */

import { ServerConnection } from '@jupyterlab/services';

import { apiUrl, requestAPI, requestRaw } from './request';

import type {
  AccessPolicy,
  CatalogDocument,
  ClientCreated,
  ClientList,
  ClientRef,
  ComparisonReport,
  CreateDeployment,
  CreateJob,
  DeploymentRecord,
  DeploymentList,
  DeploymentSpec,
  DeploymentSpecPatch,
  DeploymentStatus,
  Endpoint,
  EnvVar,
  GroupInfo,
  GroupList,
  HistoryEntry,
  HistoryList,
  InstanceTypeInfo,
  JobList,
  JobRecord,
  LogLines,
  Me,
  MetricsReport,
  Phase,
  Predictor,
  ReplicaList,
  ReplicaStatus
} from './generated/api-types';

// The API's bodies are generated from the Python models (`make generate`); these are the
// names the rest of the extension has always used for them.
export type { ClientCreated, DeploymentSpecPatch, Phase };
export type IDeployment = DeploymentRecord;
export type IDeploymentSpec = DeploymentSpec;
export type IDeploymentStatus = DeploymentStatus;
export type IEndpointSpec = Endpoint;
export type IEnvVar = EnvVar;
export type IGroup = GroupInfo;
export type IHistoryEntry = HistoryEntry;
export type IInstanceType = InstanceTypeInfo;
export type IMe = Me;
/** A deployment's service catalog: an OpenAPI 3 document (servers = its endpoint). */
export type ICatalogDocument = CatalogDocument;
export type IPredictor = Predictor;
export type IReplicaStatus = ReplicaStatus;
/** The body of `POST deployments`. */
export type ICreateRequest = CreateDeployment;
/** Who may call a private endpoint with a bearer JWT (`spec.endpoint.policy`). */
export type IAccessPolicy = AccessPolicy;
/** A batch job of a deployment (`GET deployments/<id>/jobs/<job>`). */
export type IJob = JobRecord;
/** The body of `POST deployments/<id>/jobs`. */
export type ICreateJob = CreateJob;

/** Phases that move by themselves: watch them closely. */
export const TRANSITIONAL_PHASES: ReadonlySet<string> = new Set<Phase>([
  'Deploying',
  'Stopping'
]);

/** A client of a private endpoint; `token` is only there in the answer that created it. */
export type IClient = ClientRef & Partial<ClientCreated>;

/** `GET deployments/<id>/compare`: each predictor's counts and each challenger's test. */
export type IComparison = ComparisonReport;
export type IPredictorComparison = ComparisonReport['predictors'][number];

/** `GET deployments/<id>/metrics`: per-step series over a window (see docs/internals.md). */
export type IMetrics = MetricsReport;

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
    const body = await requestAPI<GroupList>('groups', {}, this.settings);
    return body.groups;
  }

  async list(
    options: { name?: string; mine?: boolean; group?: string } = {}
  ): Promise<IDeployment[]> {
    const body = await requestAPI<DeploymentList>(
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
    spec: DeploymentSpecPatch | Record<string, unknown>,
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
    const body = await requestAPI<HistoryList>(
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

  /** The predictors side by side, with each challenger's significance test. */
  compare(id: string): Promise<IComparison> {
    return requestAPI<IComparison>(path(id, '/compare'), {}, this.settings);
  }

  /** Send every request to `predictor` and remove the others (an update: history grows). */
  promote(
    id: string,
    predictor: string,
    updateMessage?: string
  ): Promise<IDeployment> {
    return this._post<IDeployment>(path(id, '/promote'), {
      predictor,
      updateMessage
    });
  }

  async replicas(id: string): Promise<string[]> {
    const body = await requestAPI<ReplicaList>(
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
    const body = await requestAPI<LogLines>(
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
    const body = await requestAPI<ClientList>(
      path(id, '/clients'),
      {},
      this.settings
    );
    return body.clients;
  }

  /** Add (or replace) a client: the answer holds its token, which is never shown again. */
  addClient(id: string, name: string): Promise<ClientCreated> {
    return this._post<ClientCreated>(path(id, '/clients'), { name });
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

  /** The deployment's batch jobs, newest first (the last 50). */
  async jobs(id: string): Promise<IJob[]> {
    const body = await requestAPI<JobList>(
      path(id, '/jobs'),
      {},
      this.settings
    );
    return body.jobs;
  }

  /** Start a job scoring a file; a bad input, format, column or output answers 4xx. */
  createJob(id: string, body: ICreateJob): Promise<IJob> {
    return requestAPI<IJob>(
      path(id, '/jobs'),
      { method: 'POST', ...json(body) },
      this.settings
    );
  }

  job(id: string, jobId: string): Promise<IJob> {
    return requestAPI<IJob>(
      path(id, `/jobs/${encodeURIComponent(jobId)}`),
      {},
      this.settings
    );
  }

  /** Cancel a live job (its record, now Cancelled) or remove a finished one (null). */
  async deleteJob(id: string, jobId: string): Promise<IJob | null> {
    const body = await requestAPI<IJob | undefined>(
      path(id, `/jobs/${encodeURIComponent(jobId)}`),
      { method: 'DELETE' },
      this.settings
    );
    return body ?? null;
  }

  /** The last `tail` lines of a job's log, oldest first. */
  async jobLogs(id: string, jobId: string, tail = 200): Promise<string[]> {
    const body = await requestAPI<LogLines>(
      path(id, `/jobs/${encodeURIComponent(jobId)}/logs${query({ tail })}`),
      {},
      this.settings
    );
    return body.lines;
  }

  /** The deployment's OpenAPI document, asked of its model server as the signed-in user. */
  catalog(id: string): Promise<ICatalogDocument> {
    return requestAPI<ICatalogDocument>(
      path(id, '/catalog'),
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
