/* Generated from api-schema.json by json-schema-to-typescript (`make generate`); do not edit. */

/**
 * Where a deployment is in its life, as PrimeHub names it.
 */
export type Phase =
  'Deploying' | 'Deployed' | 'Stopping' | 'Stopped' | 'Failed';
/**
 * Where one predictor is: serving, on its way, idle at zero, or broken.
 */
export type PredictorPhase =
  'Deploying' | 'Deployed' | 'ScaledToZero' | 'WakingUp' | 'Stopped' | 'Failed';
/**
 * Where a job is in its life.
 */
export type JobPhase =
  'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Cancelled';

/**
 * Generated from primehub_jupyter/core by `make generate`; do not edit.
 */
export interface ApiContracts {
  AccessPolicy?: AccessPolicy;
  CatalogDocument?: CatalogDocument;
  ChangeMessage?: ChangeMessage;
  Chart?: Chart;
  ClientCreated?: ClientCreated;
  ClientList?: ClientList;
  ClientRef?: ClientRef;
  ComparisonReport?: ComparisonReport;
  CreateDeployment?: CreateDeployment;
  CreateJob?: CreateJob;
  DeploymentList?: DeploymentList;
  DeploymentRecord?: DeploymentRecord;
  DeploymentSeries?: DeploymentSeries;
  DeploymentSpec?: DeploymentSpec;
  DeploymentStatus?: DeploymentStatus;
  Endpoint?: Endpoint;
  EnvVar?: EnvVar;
  ErrorBody?: ErrorBody;
  GroupInfo?: GroupInfo;
  GroupList?: GroupList;
  GroupSettings?: GroupSettings;
  HistoryEntry?: HistoryEntry;
  HistoryList?: HistoryList;
  InstanceTypeInfo?: InstanceTypeInfo;
  InstanceTypeList?: InstanceTypeList;
  JobList?: JobList;
  JobPhase?: JobPhase;
  JobRecord?: JobRecord;
  JobSpec?: JobSpec;
  LogLines?: LogLines;
  Me?: Me;
  MetricsCharts?: MetricsCharts;
  MetricsReport?: MetricsReport;
  MetricsTotals?: MetricsTotals;
  NewClient?: NewClient;
  Phase?: Phase;
  Predictor?: Predictor;
  PredictorComparison?: PredictorComparison;
  PredictorPhase?: PredictorPhase;
  PredictorStatus?: PredictorStatus;
  Promote?: Promote;
  QuotaInfo?: QuotaInfo;
  ReplicaList?: ReplicaList;
  ReplicaSeries?: ReplicaSeries;
  ReplicaStatus?: ReplicaStatus;
  ResourceMetadata?: ResourceMetadata;
  Rollback?: Rollback;
  Routing?: Routing;
  SignificanceTest?: SignificanceTest;
  UpdateDeployment?: UpdateDeployment;
  UsageInfo?: UsageInfo;
  AccessPolicyPatch?: AccessPolicyPatch;
  ClientRefPatch?: ClientRefPatch;
  DeploymentSpecPatch?: DeploymentSpecPatch;
  EndpointPatch?: EndpointPatch;
  EnvVarPatch?: EnvVarPatch;
  PredictorPatch?: PredictorPatch;
  RoutingPatch?: RoutingPatch;
}
/**
 * Who may call a private endpoint with a bearer JWT: listed users or members of listed groups.
 *
 * Without a policy, members of the deployment's group (by the token's groups claim) may call.
 * HTTP Basic clients are not subject to it: a client token is its own grant.
 */
export interface AccessPolicy {
  /**
   * @maxItems 256
   */
  users?: string[];
  /**
   * @maxItems 256
   */
  groups?: string[];
}
/**
 * `GET deployments/<id>/catalog`: the deployment's OpenAPI 3 document (its service catalog).
 *
 * Built by the model server from the bundle's signature and sample (`serving/catalog.py`);
 * `servers` is the deployment's endpoint URL, so Swagger UI's "try it out" calls the endpoint.
 */
export interface CatalogDocument {
  openapi: string;
  info: {
    [k: string]: unknown;
  };
  servers: {
    [k: string]: unknown;
  }[];
  paths: {
    [k: string]: unknown;
  };
  [k: string]: unknown;
}
/**
 * The body of `POST .../stop` and `POST .../start`, when one is given.
 */
export interface ChangeMessage {
  updateMessage?: string | null;
}
/**
 * One Vega-Lite v5 spec; `id` names the chart (requests, errors, latency, ...).
 */
export interface Chart {
  id: string;
  spec: {
    [k: string]: unknown;
  };
}
/**
 * `POST deployments/<id>/clients`: the client and its token, returned this once.
 */
export interface ClientCreated {
  name: string;
  /**
   * Returned once, when the client is added; keep it.
   */
  token: string;
}
/**
 * `GET deployments/<id>/clients`: names only; tokens are never shown again.
 */
export interface ClientList {
  clients: ClientRef[];
}
/**
 * A client allowed to call a private endpoint (its token lives elsewhere, hashed).
 */
export interface ClientRef {
  name: string;
}
/**
 * `GET deployments/<id>/compare`: every predictor of the spec, the primary first.
 */
export interface ComparisonReport {
  deploymentId: string;
  /**
   * The answering predictor with the most traffic.
   */
  primary: string;
  /**
   * Whether the engine reported counters (false: it does not count per predictor, or has counted nothing yet).
   */
  counted: boolean;
  /**
   * Which test, and when it is run.
   */
  test: string;
  alpha: number;
  minFeedback: number;
  predictors: PredictorComparison[];
}
/**
 * One predictor's counts since it started serving, and what follows from them.
 */
export interface PredictorComparison {
  name: string;
  role: 'primary' | 'challenger' | 'shadow';
  /**
   * Percent of requests it answers (0 for a shadow).
   */
  traffic: number;
  requests: number;
  errors: number;
  /**
   * errors / requests; null without requests.
   */
  errorRate: number | null;
  /**
   * Seconds, from the histogram (see docs).
   */
  latencyP50: number | null;
  /**
   * Seconds, from the histogram (see docs).
   */
  latencyP99: number | null;
  feedback: number;
  meanReward: number | null;
  successes: number;
  /**
   * successes / feedback; null without feedback.
   */
  successRate: number | null;
  /**
   * Shadow only: answers compared with the primary's.
   */
  compared: number;
  differed: number;
  /**
   * Shadow only: differed / compared; null otherwise or before any comparison.
   */
  differedShare: number | null;
  /**
   * Challengers only.
   */
  test: SignificanceTest | null;
}
/**
 * A challenger's success share against the primary's.
 */
export interface SignificanceTest {
  /**
   * The primary predictor it is compared with.
   */
  baseline: string;
  method:
    | 'two-sided two-proportion z-test (pooled)'
    | "two-sided Fisher's exact test";
  /**
   * Both sides have at least 20 feedback.
   */
  enoughData: boolean;
  /**
   * z (the z-test only); null otherwise.
   */
  statistic: number | null;
  /**
   * Null when there is not enough data.
   */
  pValue: number | null;
  alpha: number;
  /**
   * p < alpha (false without enough data).
   */
  significant: boolean;
  /**
   * Challenger's success share minus the primary's; null without feedback.
   */
  difference: number | null;
  /**
   * The result in one sentence, for a person.
   */
  summary: string;
}
/**
 * The body of `POST deployments`: `{"id"?, "spec"}` or the custom resource form.
 */
export interface CreateDeployment {
  id?: string | null;
  apiVersion?: string | null;
  kind?: string | null;
  metadata?: ResourceMetadata | null;
  spec: DeploymentSpec;
  /**
   * Ignored: the engine owns it.
   */
  status?: {
    [k: string]: unknown;
  } | null;
}
/**
 * The custom resource's metadata: its name is the id; other keys are ignored.
 */
export interface ResourceMetadata {
  name?: string | null;
  resourceVersion?: string | null;
}
/**
 * What the user asked for: everything but id, groupName and displayName may change.
 */
export interface DeploymentSpec {
  displayName: string;
  description?: string;
  updateMessage?: string;
  groupName: string;
  userName?: string;
  stop?: boolean;
  /**
   * @maxItems 256
   */
  env?: EnvVar[];
  endpoint?: Endpoint;
  routing?: Routing;
  /**
   * @minItems 1
   * @maxItems 4
   */
  predictors: Predictor[];
}
/**
 * An environment variable passed to the model server.
 */
export interface EnvVar {
  name: string;
  value?: string;
}
/**
 * How the endpoint is reached: by anyone, or by named clients with a token.
 */
export interface Endpoint {
  accessType?: 'public' | 'private';
  clients?: ClientRef[];
  /**
   * Private endpoints: who may call with a bearer JWT (users or groups); without it, members of the deployment's group. Ignored for public endpoints.
   */
  policy?: AccessPolicy | null;
}
/**
 * How requests choose a predictor beyond the weights.
 */
export interface Routing {
  /**
   * Requests with the same value of this header go to the same predictor while the weights are unchanged.
   */
  stickyHeader?: string | null;
}
/**
 * One model serving part of the traffic: a fixed replica count or autoscaling bounds.
 */
export interface Predictor {
  name?: string;
  replicas?: number | null;
  /**
   * Autoscaling lower bound; 0 allows scale to zero.
   */
  minReplicas?: number | null;
  /**
   * Autoscaling upper bound.
   */
  maxReplicas?: number | null;
  /**
   * In-flight requests per replica the autoscaler aims at (default 8).
   */
  targetConcurrency?: number | null;
  /**
   * Idle seconds before scaling to zero (default 300); only with minReplicas: 0.
   */
  scaleToZeroAfterSeconds?: number | null;
  /**
   * Percent of requests; the non-shadow predictors sum to 100. Optional with one predictor.
   */
  traffic?: number | null;
  /**
   * Receives a copy of each request; its answers are compared, never returned.
   */
  shadow?: boolean;
  /**
   * A container image serving the model.
   */
  modelImage?: string | null;
  /**
   * Where the model bundle is: pvc://<claim>/<path>, a path on a configured volume, http(s)://, s3:// or models:/<name>/<version> (MLflow).
   */
  modelURI?: string | null;
  instanceType: string;
  imagePullSecret?: string | null;
  metadata?: {
    /**
     * This interface was referenced by `undefined`'s JSON-Schema definition
     * via the `patternProperty` "^[a-zA-Z0-9]([-_./a-zA-Z0-9]{0,126}[a-zA-Z0-9])?$".
     */
    [k: string]: string;
  };
}
/**
 * The body of `POST deployments/<id>/jobs`: score a file with the deployment's model.
 *
 * Relative paths are resolved like `modelURI` (the caller's working directory; the server's
 * root directory through the REST API). `format` defaults to the input's file ending.
 */
export interface CreateJob {
  input: string;
  output: string;
  format?: ('csv' | 'parquet' | 'jsonl') | null;
  /**
   * Default: the primary predictor.
   */
  predictor?: string | null;
  chunkRows?: number | null;
  outputColumns?: 'all' | 'predictions';
  /**
   * Replace an existing output file.
   */
  overwrite?: boolean;
  maxFailedShare?: number;
}
/**
 * `GET deployments`: newest update first, each without its history.
 */
export interface DeploymentList {
  deployments: DeploymentRecord[];
}
/**
 * A deployment: id, the desired spec and the observed status.
 */
export interface DeploymentRecord {
  /**
   * The deployment id: a DNS-1035 label.
   */
  id: string;
  spec: DeploymentSpec;
  status: DeploymentStatus;
  resourceVersion: string;
}
/**
 * What the engine observed; never written by users.
 */
export interface DeploymentStatus {
  phase: Phase;
  message: string;
  replicas: number;
  availableReplicas: number;
  endpoint: string | null;
  creationTime: string | null;
  lastUpdated: string | null;
  replicaStatuses: ReplicaStatus[];
  /**
   * Per predictor, in spec order.
   */
  predictors: PredictorStatus[];
  /**
   * The bundle's recorded sample request, when the engine knows it.
   */
  sampleRequest: {
    [k: string]: unknown;
  } | null;
  /**
   * Newest first.
   *
   * @maxItems 32
   */
  history?: HistoryEntry[];
}
/**
 * One replica as the engine sees it.
 */
export interface ReplicaStatus {
  name: string;
  predictor: string;
  ready: boolean;
  phase: string;
  restarts: number;
  message: string;
  startTime: string | null;
}
/**
 * One predictor as the engine sees it.
 */
export interface PredictorStatus {
  name: string;
  traffic: number;
  shadow: boolean;
  replicas: number;
  availableReplicas: number;
  phase: PredictorPhase;
  message: string;
}
/**
 * One change of the spec: who, when, why, and the spec as it became.
 */
export interface HistoryEntry {
  revision: number;
  time: string;
  user: string;
  updateMessage: string;
  spec: DeploymentSpec;
}
/**
 * A deployment's series, one value (or None: nothing to measure) per timestamp.
 */
export interface DeploymentSeries {
  requestsPerSecond: (number | null)[];
  predictRequestsPerSecond: (number | null)[];
  successRate: (number | null)[];
  clientErrorsPerSecond: (number | null)[];
  serverErrorsPerSecond: (number | null)[];
  latencyP50: (number | null)[];
  latencyP90: (number | null)[];
  latencyP99: (number | null)[];
  reward: (number | null)[];
}
/**
 * Every 4xx/5xx answer: a message for a person, a reason for code, field details.
 */
export interface ErrorBody {
  /**
   * What went wrong, for a person.
   */
  message: string;
  reason: string;
  /**
   * Which fields were wrong, when some were.
   */
  details: {
    [k: string]: unknown;
  }[];
}
/**
 * A group of the user, with its quota, current usage and instance types.
 */
export interface GroupInfo {
  name: string;
  displayName: string;
  enabledDeployment: boolean;
  isMember: boolean;
  quota: QuotaInfo;
  usage: UsageInfo;
  instanceTypes: InstanceTypeInfo[];
}
/**
 * A group's limits; null means unlimited.
 */
export interface QuotaInfo {
  cpu: number | null;
  memory: string | null;
  gpu: number | null;
  maxDeployments: number | null;
}
/**
 * What a group's running deployments hold.
 */
export interface UsageInfo {
  cpu: number;
  memory: string;
  gpu: number;
  deployments: number;
}
/**
 * An instance type a user can pick.
 */
export interface InstanceTypeInfo {
  name: string;
  displayName: string;
  description: string;
  cpu: number;
  memory: string;
  gpu: number;
  nodeSelector: {
    [k: string]: string;
  };
  tolerations: {
    [k: string]: unknown;
  }[];
}
/**
 * `GET groups`.
 */
export interface GroupList {
  groups: GroupInfo[];
}
/**
 * The body of `PATCH groups/<group>` (administrators).
 */
export interface GroupSettings {
  enabledDeployment: boolean;
}
/**
 * `GET deployments/<id>/history`: newest first.
 */
export interface HistoryList {
  history: HistoryEntry[];
}
/**
 * `GET instance-types`.
 */
export interface InstanceTypeList {
  instanceTypes: InstanceTypeInfo[];
}
/**
 * `GET deployments/<id>/jobs`: newest first, at most the last 50.
 */
export interface JobList {
  jobs: JobRecord[];
}
/**
 * One batch job of a deployment: what it was asked, where it is, how far it got.
 */
export interface JobRecord {
  id: string;
  deploymentId: string;
  user: string;
  /**
   * The deployment revision whose bundle scores the rows.
   */
  revision: number;
  spec: JobSpec;
  phase: JobPhase;
  message: string;
  rowsRead: number;
  rowsScored: number;
  rowsFailed: number;
  rowsPerSecond: number;
  /**
   * Rows in the input when known up front (Parquet metadata), else null.
   */
  totalRows: number | null;
  /**
   * Share of the input read, 0..1 (bytes for CSV/JSONL), when known.
   */
  progress: number | null;
  chunksDone: number;
  createTime: string;
  startTime: string | null;
  finishTime: string | null;
  /**
   * The errors file (one JSON line per failed row).
   */
  errors: string;
}
/**
 * What a job was asked to do, with its input and output resolved.
 *
 * The REST body (`core/bodies.CreateJob`) has the same fields; the service resolves relative
 * paths, the format (from `format` or the input's file ending) and the predictor (the
 * deployment's primary when not named) before the engine sees it. Output format: the
 * output's file ending, else the input's format.
 */
export interface JobSpec {
  input: string;
  output: string;
  format: 'csv' | 'parquet' | 'jsonl';
  outputFormat: 'csv' | 'parquet' | 'jsonl';
  predictor: string;
  chunkRows?: number;
  outputColumns?: 'all' | 'predictions';
  overwrite?: boolean;
  /**
   * The job fails when more than this share of the rows read failed.
   */
  maxFailedShare?: number;
}
/**
 * `GET deployments/<id>/logs?format=json`: the replicas and the lines, oldest first.
 */
export interface LogLines {
  replicas: string[];
  lines: string[];
}
/**
 * `GET me`: the signed-in user, whether an admin, the engine and the groups.
 */
export interface Me {
  name: string;
  isAdmin: boolean;
  engine: string;
  endpointBase: string | null;
  groups: GroupInfo[];
}
/**
 * `GET deployments/<id>/metrics/charts`: the report drawn as charts, with a summary line.
 */
export interface MetricsCharts {
  deploymentId: string;
  window: number;
  step: number;
  summary: string;
  totals: MetricsTotals;
  charts: Chart[];
}
/**
 * Counts over the whole window, and the reward share of its feedback.
 */
export interface MetricsTotals {
  requests: number;
  predictRequests: number;
  clientErrors: number;
  serverErrors: number;
  feedback: number;
  reward: number | null;
}
/**
 * `Engine.metrics()`: the same document for every engine (docs/internals.md "Metrics").
 */
export interface MetricsReport {
  deploymentId: string;
  window: number;
  step: number;
  timestamps: number[];
  series: DeploymentSeries;
  replicas: {
    [k: string]: ReplicaSeries;
  };
  totals: MetricsTotals;
}
/**
 * One replica's series: traffic, tail latency, cores in use and resident bytes.
 */
export interface ReplicaSeries {
  requestsPerSecond: (number | null)[];
  latencyP99: (number | null)[];
  cpu: (number | null)[];
  memory: (number | null)[];
}
/**
 * The body of `POST .../clients`.
 */
export interface NewClient {
  name: string;
}
/**
 * The body of `POST .../promote`: the predictor to send every request to.
 */
export interface Promote {
  /**
   * An answering (not shadow) predictor's name.
   */
  predictor: string;
  updateMessage?: string | null;
}
/**
 * `GET deployments/<id>/replicas`: the replicas that have logs.
 */
export interface ReplicaList {
  replicas: string[];
}
/**
 * The body of `POST .../rollback`.
 */
export interface Rollback {
  /**
   * A revision of the history.
   */
  revision: number;
  updateMessage?: string | null;
}
/**
 * The body of `PATCH deployments/<id>`: a merge patch of the spec.
 */
export interface UpdateDeployment {
  id?: string | null;
  apiVersion?: string | null;
  kind?: string | null;
  metadata?: ResourceMetadata | null;
  spec: DeploymentSpecPatch;
  resourceVersion?: string | null;
}
/**
 * What the user asked for: everything but id, groupName and displayName may change.
 */
export interface DeploymentSpecPatch {
  displayName?: string;
  description?: string;
  updateMessage?: string;
  groupName?: string;
  userName?: string;
  stop?: boolean;
  /**
   * @maxItems 256
   */
  env?: EnvVarPatch[];
  endpoint?: EndpointPatch;
  routing?: RoutingPatch;
  /**
   * @minItems 1
   * @maxItems 4
   */
  predictors?: PredictorPatch[];
}
/**
 * An environment variable passed to the model server.
 */
export interface EnvVarPatch {
  name?: string;
  value?: string;
}
/**
 * How the endpoint is reached: by anyone, or by named clients with a token.
 */
export interface EndpointPatch {
  accessType?: 'public' | 'private';
  clients?: ClientRefPatch[];
  /**
   * Private endpoints: who may call with a bearer JWT (users or groups); without it, members of the deployment's group. Ignored for public endpoints.
   */
  policy?: AccessPolicyPatch | null;
}
/**
 * A client allowed to call a private endpoint (its token lives elsewhere, hashed).
 */
export interface ClientRefPatch {
  name?: string;
}
/**
 * Who may call a private endpoint with a bearer JWT: listed users or members of listed groups.
 *
 * Without a policy, members of the deployment's group (by the token's groups claim) may call.
 * HTTP Basic clients are not subject to it: a client token is its own grant.
 */
export interface AccessPolicyPatch {
  /**
   * @maxItems 256
   */
  users?: string[];
  /**
   * @maxItems 256
   */
  groups?: string[];
}
/**
 * How requests choose a predictor beyond the weights.
 */
export interface RoutingPatch {
  /**
   * Requests with the same value of this header go to the same predictor while the weights are unchanged.
   */
  stickyHeader?: string | null;
}
/**
 * One model serving part of the traffic: a fixed replica count or autoscaling bounds.
 */
export interface PredictorPatch {
  name?: string;
  replicas?: number | null;
  /**
   * Autoscaling lower bound; 0 allows scale to zero.
   */
  minReplicas?: number | null;
  /**
   * Autoscaling upper bound.
   */
  maxReplicas?: number | null;
  /**
   * In-flight requests per replica the autoscaler aims at (default 8).
   */
  targetConcurrency?: number | null;
  /**
   * Idle seconds before scaling to zero (default 300); only with minReplicas: 0.
   */
  scaleToZeroAfterSeconds?: number | null;
  /**
   * Percent of requests; the non-shadow predictors sum to 100. Optional with one predictor.
   */
  traffic?: number | null;
  /**
   * Receives a copy of each request; its answers are compared, never returned.
   */
  shadow?: boolean;
  /**
   * A container image serving the model.
   */
  modelImage?: string | null;
  /**
   * Where the model bundle is: pvc://<claim>/<path>, a path on a configured volume, http(s)://, s3:// or models:/<name>/<version> (MLflow).
   */
  modelURI?: string | null;
  instanceType?: string;
  imagePullSecret?: string | null;
  metadata?: {
    /**
     * This interface was referenced by `undefined`'s JSON-Schema definition
     * via the `patternProperty` "^[a-zA-Z0-9]([-_./a-zA-Z0-9]{0,126}[a-zA-Z0-9])?$".
     */
    [k: string]: string;
  };
}
