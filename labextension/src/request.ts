/** Typed access to the primehub_jupyter server extension's REST API. */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Where the server extension mounts its REST API, relative to the server's base URL. */
export const API_NAMESPACE = 'primehub/api';

/** One invalid field of a 422 answer: `field` is a dotted path such as `spec.displayName`. */
export interface IFieldProblem {
  field?: string;
  message?: string;
  [key: string]: unknown;
}

/**
 * A non-2xx answer of the PrimeHub API.
 *
 * It is a `ServerConnection.ResponseError` (so generic JupyterLab code handles it) that also
 * keeps the API's `reason` (e.g. `FeatureNotAvailable`) and `details` (the invalid fields).
 */
export class APIError extends ServerConnection.ResponseError {
  constructor(
    response: Response,
    message: string,
    readonly reason: string = '',
    readonly details: IFieldProblem[] = []
  ) {
    super(response, message);
    this.name = 'APIError';
  }

  /** The HTTP status of the answer. */
  get status(): number {
    return this.response.status;
  }
}

/**
 * The absolute URL of an API path, e.g. `apiUrl('openapi.json')`.
 */
export function apiUrl(
  path: string,
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): string {
  return URLExt.join(settings.baseUrl, API_NAMESPACE, path);
}

/**
 * Call the PrimeHub REST API and decode its JSON answer.
 *
 * @param path - the endpoint below `primehub/api/`, e.g. `me` or `deployments/iris-ab12c`.
 * @param init - the fetch options (method, body, headers); the Jupyter auth headers and the
 *   XSRF token are added by `ServerConnection.makeRequest`.
 * @returns the decoded JSON body, or `undefined` for an empty answer (204).
 * @throws {APIError} (a `ServerConnection.ResponseError`) for a non-2xx answer; its `message` is
 *   the server's `message` field (a sentence a person can act on), `status` the HTTP status and
 *   `details` the invalid fields of a 422.
 * @throws {ServerConnection.NetworkError} when the server cannot be reached.
 */
export async function requestAPI<T>(
  path = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = apiUrl(path, settings);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let body: unknown = undefined;
  let isJSON = true;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      // A proxy's or Jupyter's own HTML error page; keep the text for the error message.
      body = text;
      isJSON = false;
    }
  }

  if (!response.ok) {
    throw errorOf(response, body, url);
  }
  if (!isJSON) {
    throw new APIError(
      response,
      `Invalid JSON from ${url}: ${text.slice(0, 200)}`
    );
  }
  return body as T;
}

/**
 * Call the API for a raw `Response` (text, streams, downloads), failing like `requestAPI`.
 */
export async function requestRaw(
  path: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<Response> {
  const url = apiUrl(path, settings);
  const response = await ServerConnection.makeRequest(url, init, settings);
  if (!response.ok) {
    const text = await response.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    throw errorOf(response, body, url);
  }
  return response;
}

/** The `APIError` of an error answer, with the API's `message`, `reason` and `details`. */
export function errorOf(
  response: Response,
  body: unknown,
  url: string = response.url
): APIError {
  if (body !== null && typeof body === 'object') {
    const { message, reason, details } = body as {
      message?: unknown;
      reason?: unknown;
      details?: unknown;
    };
    const problems = Array.isArray(details)
      ? (details.filter(
          item => item !== null && typeof item === 'object'
        ) as IFieldProblem[])
      : [];
    const why = typeof reason === 'string' ? reason : '';
    if (typeof message === 'string' && message.length > 0) {
      return new APIError(response, message, why, problems);
    }
    if (why) {
      return new APIError(response, why, why, problems);
    }
  }
  return new APIError(
    response,
    `${response.status} ${response.statusText || 'error'} from ${url}`
  );
}

/** Shown when the frontend is installed but the server extension does not answer. */
export const SERVER_EXTENSION_MISSING =
  'PrimeHub Model Deployment server extension is not enabled. ' +
  'Install it with: pip install primehub-jupyter';

/** The command that installs the server extension (and the frontend with it). */
export const PIP_INSTALL = 'pip install primehub-jupyter';

/**
 * PrimeHub's words for a group without model deployment: the API's 403 message, repeated
 * here only for the create form, which can tell before any request that no group is enabled.
 */
export const FEATURE_DISABLED_MESSAGE =
  'Feature not available - Model Deployment is not enabled for this group. ' +
  'Please contact your administrator to enable it.';
