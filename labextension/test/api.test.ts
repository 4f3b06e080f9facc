import { describe, expect, it } from 'vitest';

import { PrimeHubAPI } from '../src/api';
import { APIError } from '../src/request';
import { apiError, deployment, failure, FakeServer, json } from './helpers';

describe('PrimeHubAPI', () => {
  it('lists deployments with the filters as query parameters', async () => {
    const server = new FakeServer().on('GET', 'deployments', {
      deployments: [deployment('iris-a1b2c')]
    });
    const api = new PrimeHubAPI(server.settings());
    const found = await api.list({ name: 'ir is', mine: true });
    expect(found.map(d => d.id)).toEqual(['iris-a1b2c']);
    const url = server.requests[0].url;
    expect(url.searchParams.get('name')).toBe('ir is');
    expect(url.searchParams.get('mine')).toBe('1');
    expect(url.searchParams.has('group')).toBe(false);
  });

  it('creates with POST {id, spec}', async () => {
    const server = new FakeServer().on('POST', 'deployments', () =>
      json(deployment('iris-a1b2c', 'Deploying'), 201)
    );
    const api = new PrimeHubAPI(server.settings());
    const created = await api.create({
      id: 'iris-a1b2c',
      spec: {
        displayName: 'iris',
        groupName: 'default',
        predictors: [{ replicas: 1, instanceType: 'cpu-0.5', modelURI: '/b' }]
      }
    });
    expect(created.status.phase).toBe('Deploying');
    const sent = JSON.parse(server.to('deployments', 'POST')[0].body);
    expect(sent.id).toBe('iris-a1b2c');
    expect(sent.spec.predictors[0].modelURI).toBe('/b');
    expect(server.requests[0].headers.get('Content-Type')).toBe(
      'application/json'
    );
  });

  it('updates with a PATCH of spec and the resourceVersion', async () => {
    const server = new FakeServer().on(
      'PATCH',
      'deployments/iris',
      deployment('iris')
    );
    const api = new PrimeHubAPI(server.settings());
    await api.update('iris', { description: 'x' }, '7');
    expect(JSON.parse(server.requests[0].body)).toEqual({
      spec: { description: 'x' },
      resourceVersion: '7'
    });
  });

  it('stops, starts, deletes and rolls back on their own paths', async () => {
    const server = new FakeServer()
      .on('POST', 'deployments/iris/stop', deployment('iris', 'Stopping'))
      .on('POST', 'deployments/iris/start', deployment('iris', 'Deploying'))
      .on('POST', 'deployments/iris/rollback', deployment('iris', 'Deploying'))
      .on(
        'DELETE',
        'deployments/iris',
        () => new Response(null, { status: 204 })
      );
    const api = new PrimeHubAPI(server.settings());
    expect((await api.stop('iris')).status.phase).toBe('Stopping');
    expect((await api.start('iris', 'back')).status.phase).toBe('Deploying');
    await api.rollback('iris', 3, 'undo');
    await expect(api.delete('iris')).resolves.toBeUndefined();
    expect(server.requests.map(r => `${r.method} ${r.path}`)).toEqual([
      'POST deployments/iris/stop',
      'POST deployments/iris/start',
      'POST deployments/iris/rollback',
      'DELETE deployments/iris'
    ]);
    expect(JSON.parse(server.requests[0].body)).toEqual({});
    expect(JSON.parse(server.requests[1].body)).toEqual({
      updateMessage: 'back'
    });
    expect(JSON.parse(server.requests[2].body)).toEqual({
      revision: 3,
      updateMessage: 'undo'
    });
  });

  it('escapes ids and client names in paths', async () => {
    const server = new FakeServer().on(
      'DELETE',
      /deployments\/.+\/clients\/.+/,
      () => new Response(null, { status: 204 })
    );
    const api = new PrimeHubAPI(server.settings());
    await api.deleteClient('iris', 'a/b');
    expect(server.requests[0].url.pathname).toMatch(
      /deployments\/iris\/clients\/a%2Fb$/
    );
  });

  it('asks for the last 2000 log lines as JSON by default', async () => {
    const server = new FakeServer().on('GET', 'deployments/iris/logs', {
      replicas: ['iris-1-0'],
      lines: ['one', 'two']
    });
    const api = new PrimeHubAPI(server.settings());
    expect(await api.logs('iris', { replica: 'iris-1-0' })).toEqual([
      'one',
      'two'
    ]);
    const params = server.requests[0].url.searchParams;
    expect(params.get('tail')).toBe('2000');
    expect(params.get('format')).toBe('json');
    expect(params.get('replica')).toBe('iris-1-0');
  });

  it('adds a client and returns its one-time token', async () => {
    const server = new FakeServer().on('POST', 'deployments/iris/clients', () =>
      json({ name: 'billing', token: 'tok-123' }, 201)
    );
    const api = new PrimeHubAPI(server.settings());
    expect(await api.addClient('iris', 'billing')).toEqual({
      name: 'billing',
      token: 'tok-123'
    });
    expect(JSON.parse(server.requests[0].body)).toEqual({ name: 'billing' });
  });

  it("gets a deployment's service catalog document", async () => {
    const document = {
      openapi: '3.0.3',
      info: { title: 'Deployment iris', version: '1' },
      servers: [{ url: 'http://127.0.0.1:9/deployment/iris' }],
      paths: {}
    };
    const server = new FakeServer().on(
      'GET',
      'deployments/iris/catalog',
      document
    );
    const api = new PrimeHubAPI(server.settings());
    expect(await api.catalog('iris')).toEqual(document);
    expect(server.requests[0].method).toBe('GET');
  });

  it('asks for metrics over a window and step', async () => {
    const server = new FakeServer().on('GET', 'deployments/iris/metrics', {
      deploymentId: 'iris',
      window: 300,
      step: 2,
      timestamps: [],
      series: {}
    });
    const api = new PrimeHubAPI(server.settings());
    await api.metrics('iris', 300, 2);
    const params = server.requests[0].url.searchParams;
    expect(params.get('window')).toBe('300');
    expect(params.get('step')).toBe('2');
  });

  it('tells a missing metrics route (404 from Jupyter) from a missing deployment', async () => {
    const server = new FakeServer();
    const api = new PrimeHubAPI(server.settings());
    const noRoute = await failure(api.metrics('iris'));
    expect(noRoute).toBeInstanceOf(APIError);
    expect(noRoute.status).toBe(404);
    expect(noRoute.reason).not.toBe('NotFound');
    server.on(
      'GET',
      'deployments/gone/metrics',
      apiError(404, "deployment 'gone' not found", 'NotFound')
    );
    const noDeployment = await failure(api.metrics('gone'));
    expect(noDeployment.reason).toBe('NotFound');
  });

  it("returns the model's answer from invoke, even an error", async () => {
    const server = new FakeServer().on(
      'POST',
      'deployments/iris/invoke/api/v1.0/predictions',
      () => json({ status: { code: 400, info: 'bad shape' } }, 400)
    );
    const api = new PrimeHubAPI(server.settings());
    const result = await api.invoke('iris', '{"data": {"ndarray": [[1]]}}');
    expect(result.status).toBe(400);
    expect(result.body).toContain('bad shape');
    expect(server.requests[0].body).toBe('{"data": {"ndarray": [[1]]}}');
  });
});
