// A fake Jupyter server for unit tests: routes by method and path, records every request.
import { ServerConnection } from '@jupyterlab/services';

import { IDeployment } from '../src/api';
import { APIError } from '../src/request';

export const BASE = 'http://127.0.0.1:8888/lab-base/';

export interface IRecorded {
  method: string;
  url: URL;
  /** Path below primehub/api/. */
  path: string;
  headers: Headers;
  body: string;
  signal: AbortSignal;
}

type Handler = (request: IRecorded) => Response | Promise<Response>;

/** JSON answer. */
export function json(
  body: unknown,
  status = 200,
  headers: Record<string, string> = {}
) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers }
  });
}

/** An answer in the API's error shape. */
export function apiError(
  status: number,
  message: string,
  reason = '',
  details?: unknown[]
) {
  return json({ message, reason, ...(details ? { details } : {}) }, status);
}

export class FakeServer {
  readonly requests: IRecorded[] = [];
  private routes: {
    method: string;
    path: string | RegExp;
    handler: Handler;
  }[] = [];

  on(method: string, path: string | RegExp, handler: Handler): this;
  on(method: string, path: string | RegExp, answer: Response | object): this;
  on(method: string, path: string | RegExp, handler: unknown): this {
    const h: Handler =
      typeof handler === 'function'
        ? (handler as Handler)
        : handler instanceof Response
          ? () => (handler as Response).clone()
          : () => json(handler);
    this.routes.unshift({ method, path, handler: h });
    return this;
  }

  /** Requests to one path (below primehub/api/), oldest first. */
  to(path: string, method?: string): IRecorded[] {
    return this.requests.filter(
      r => r.path === path && (!method || r.method === method)
    );
  }

  fetch = async (
    input: RequestInfo | URL,
    init?: RequestInit
  ): Promise<Response> => {
    const request =
      input instanceof Request ? input : new Request(String(input), init);
    const url = new URL(request.url);
    const prefix = new URL(BASE).pathname + 'primehub/api/';
    const path = url.pathname.startsWith(prefix)
      ? url.pathname.slice(prefix.length)
      : url.pathname;
    const recorded: IRecorded = {
      method: request.method,
      url,
      path,
      headers: request.headers,
      body: request.method === 'GET' ? '' : await request.text(),
      signal: request.signal
    };
    this.requests.push(recorded);
    if (request.signal.aborted) {
      throw new DOMException('The operation was aborted.', 'AbortError');
    }
    for (const route of this.routes) {
      const match =
        typeof route.path === 'string'
          ? route.path === path
          : route.path.test(path);
      if (route.method === request.method && match) {
        return route.handler(recorded);
      }
    }
    return json({ message: 'Not Found', reason: 'Not Found' }, 404);
  };

  settings(): ServerConnection.ISettings {
    return ServerConnection.makeSettings({
      baseUrl: BASE,
      wsUrl: 'ws://127.0.0.1:8888/lab-base/',
      token: 'secret-token',
      appendToken: false,
      fetch: this.fetch,
      Request,
      Headers,
      init: { cache: 'default', credentials: 'same-origin' }
    });
  }
}

/** A deployment as the API sends it. */
export function deployment(
  id: string,
  phase: IDeployment['status']['phase'] = 'Deployed',
  overrides: {
    user?: string;
    name?: string;
    lastUpdated?: string;
    version?: string;
  } = {}
): IDeployment {
  return {
    id,
    resourceVersion: overrides.version ?? '1',
    spec: {
      displayName: overrides.name ?? id,
      description: '',
      updateMessage: '',
      groupName: 'default',
      userName: overrides.user ?? 'alice',
      stop: phase === 'Stopped',
      env: [],
      endpoint: { accessType: 'public', clients: [] },
      predictors: [
        {
          name: 'predictor1',
          replicas: 1,
          modelURI: '/bundles/iris',
          modelImage: null,
          instanceType: 'cpu-0.5',
          imagePullSecret: null,
          metadata: { owner: 'alice' }
        }
      ]
    },
    status: {
      phase,
      message: phase === 'Failed' ? 'model failed to load: boom' : '',
      replicas: 1,
      availableReplicas: phase === 'Deployed' ? 1 : 0,
      endpoint: `http://127.0.0.1:9000/deployment/${id}/api/v1.0/predictions`,
      creationTime: '2026-11-22T13:00:00.000Z',
      lastUpdated: overrides.lastUpdated ?? '2026-11-22T13:00:00.000Z',
      replicaStatuses: [],
      predictors: [],
      sampleRequest: null
    }
  };
}

/** A stream that sends `chunks` (strings or bytes) and then stays open until aborted. */
export function openStream(
  chunks: (string | Uint8Array)[],
  signal: AbortSignal,
  end = false
): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) {
        controller.enqueue(
          typeof chunk === 'string' ? encoder.encode(chunk) : chunk
        );
      }
      if (end) {
        controller.close();
        return;
      }
      signal.addEventListener('abort', () => {
        try {
          controller.error(
            new DOMException('The operation was aborted.', 'AbortError')
          );
        } catch {
          // already closed
        }
      });
    }
  });
}

/** The APIError a call fails with (fails the test if it succeeds or fails otherwise). */
export async function failure(call: Promise<unknown>): Promise<APIError> {
  try {
    await call;
  } catch (error) {
    if (error instanceof APIError) {
      return error;
    }
    throw error;
  }
  throw new Error('expected the call to fail');
}
