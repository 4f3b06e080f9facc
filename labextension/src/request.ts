/** Typed access to the primehub_jupyter server extension's REST API. */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Where the server extension mounts its REST API, relative to the server's base URL. */
export const API_NAMESPACE = 'primehub/api';

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
 * @throws {ServerConnection.ResponseError} for a non-2xx answer; its `message` is the server's
 *   `message` field (a sentence a person can act on) and `response.status` the HTTP status.
 * @throws {ServerConnection.NetworkError} when the server cannot be reached.
 */
export async function requestAPI<T>(
  path = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const response = await ServerConnection.makeRequest(
    apiUrl(path, settings),
    init,
    settings
  );
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
    throw new ServerConnection.ResponseError(
      response,
      errorMessage(response, body)
    );
  }
  if (!isJSON) {
    throw new ServerConnection.ResponseError(
      response,
      `Invalid JSON from ${response.url}: ${text.slice(0, 200)}`
    );
  }
  return body as T;
}

/** The most useful message of an error answer: the API's `message`, else the HTTP status. */
function errorMessage(response: Response, body: unknown): string {
  if (body !== null && typeof body === 'object') {
    const { message, reason } = body as { message?: unknown; reason?: unknown };
    if (typeof message === 'string' && message.length > 0) {
      return message;
    }
    if (typeof reason === 'string' && reason.length > 0) {
      return reason;
    }
  }
  return `${response.status} ${response.statusText || 'error'} from ${response.url}`;
}
