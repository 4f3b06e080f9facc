import { ServerConnection } from '@jupyterlab/services';
import { describe, expect, it } from 'vitest';

import { APIError, apiUrl, requestAPI, requestRaw } from '../src/request';
import { apiError, BASE, failure, FakeServer, json } from './helpers';

describe('requestAPI', () => {
  it('joins the base URL and the API namespace', () => {
    const server = new FakeServer();
    expect(apiUrl('deployments/iris', server.settings())).toBe(
      `${BASE}primehub/api/deployments/iris`
    );
  });

  it('decodes JSON and sends the Jupyter token', async () => {
    const server = new FakeServer().on('GET', 'me', { name: 'alice' });
    const me = await requestAPI<{ name: string }>('me', {}, server.settings());
    expect(me.name).toBe('alice');
    expect(server.requests[0].headers.get('Authorization')).toBe(
      'token secret-token'
    );
  });

  it('answers undefined for an empty 204', async () => {
    const server = new FakeServer().on(
      'DELETE',
      'deployments/iris',
      () => new Response(null, { status: 204 })
    );
    const result = await requestAPI(
      'deployments/iris',
      { method: 'DELETE' },
      server.settings()
    );
    expect(result).toBeUndefined();
  });

  it('throws the API message, reason and details as an APIError', async () => {
    const details = [{ field: 'spec.displayName', message: 'required' }];
    const server = new FakeServer().on(
      'POST',
      'deployments',
      apiError(422, 'spec.displayName: required', 'Invalid', details)
    );
    const error = await failure(
      requestAPI(
        'deployments',
        { method: 'POST', body: '{}' },
        server.settings()
      )
    );
    expect(error).toBeInstanceOf(APIError);
    expect(error).toBeInstanceOf(ServerConnection.ResponseError);
    expect(error.status).toBe(422);
    expect(error.message).toBe('spec.displayName: required');
    expect(error.reason).toBe('Invalid');
    expect(error.details).toEqual(details);
  });

  it('keeps the 403 message of a disabled group word for word', async () => {
    const message =
      'Feature not available - Model Deployment is not enabled for this group. ' +
      'Please contact your administrator to enable it.';
    const server = new FakeServer().on(
      'POST',
      'deployments',
      apiError(403, message, 'FeatureNotAvailable')
    );
    const error = await failure(
      requestAPI('deployments', { method: 'POST' }, server.settings())
    );
    expect(error.message).toBe(message);
    expect(error.reason).toBe('FeatureNotAvailable');
  });

  it('names the status and URL when the error page is not JSON', async () => {
    const server = new FakeServer().on(
      'GET',
      'me',
      () =>
        new Response('<html>Bad gateway</html>', {
          status: 502,
          statusText: 'Bad Gateway'
        })
    );
    const error = await failure(requestAPI('me', {}, server.settings()));
    expect(error).toBeInstanceOf(APIError);
    expect(error.message).toContain('502');
    expect(error.message).toContain('primehub/api/me');
  });

  it('refuses a 200 that is not JSON', async () => {
    const server = new FakeServer().on(
      'GET',
      'me',
      () => new Response('<html>login</html>')
    );
    await expect(requestAPI('me', {}, server.settings())).rejects.toThrow(
      /Invalid JSON/
    );
  });

  it('wraps an unreachable server in a NetworkError', async () => {
    const server = new FakeServer();
    const settings = ServerConnection.makeSettings({
      ...server.settings(),
      fetch: () => Promise.reject(new TypeError('Failed to fetch'))
    });
    await expect(requestAPI('me', {}, settings)).rejects.toBeInstanceOf(
      ServerConnection.NetworkError
    );
  });
});

describe('requestRaw', () => {
  it('returns the response as is when it is OK', async () => {
    const server = new FakeServer().on(
      'GET',
      'deployments/iris/logs',
      () => new Response('a\nb\n')
    );
    const response = await requestRaw(
      'deployments/iris/logs',
      {},
      server.settings()
    );
    expect(await response.text()).toBe('a\nb\n');
  });

  it('throws an APIError with the JSON message otherwise', async () => {
    const server = new FakeServer().on(
      'GET',
      'deployments/iris/logs',
      json(
        { message: "deployment 'iris' has no replica 'x'", reason: 'NotFound' },
        404
      )
    );
    const error = await failure(
      requestRaw('deployments/iris/logs', {}, server.settings())
    );
    expect(error).toBeInstanceOf(APIError);
    expect(error.message).toBe("deployment 'iris' has no replica 'x'");
    expect(error.reason).toBe('NotFound');
  });
});
