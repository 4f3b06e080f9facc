import { afterEach, describe, expect, it } from 'vitest';

import { IDeployment, PrimeHubAPI } from '../src/api';
import {
  DEFAULT_INTERVALS,
  DeploymentListModel,
  DeploymentModel,
  IPhaseChange,
  nextInterval
} from '../src/model';
import { apiError, deployment, FakeServer } from './helpers';

const live: { dispose(): void }[] = [];
afterEach(() => {
  live.splice(0).forEach(m => m.dispose());
});

/** A server whose list answers whatever `state.list` holds at the time. */
function serverWith(state: { list: IDeployment[] }) {
  return new FakeServer()
    .on('GET', 'me', { name: 'alice', isAdmin: false, groups: [] })
    .on('GET', 'deployments', () => Response.json({ deployments: state.list }));
}

function listModel(server: FakeServer, visible = true) {
  const model = new DeploymentListModel({
    api: new PrimeHubAPI(server.settings()),
    autoStart: false,
    isVisible: () => visible
  });
  live.push(model);
  return model;
}

describe('nextInterval', () => {
  it('polls fast while something moves, and doubles up to the max while nothing changes', () => {
    const i = DEFAULT_INTERVALS;
    expect(nextInterval(60000, { transitional: true, changed: false })).toBe(
      i.active
    );
    expect(nextInterval(60000, { transitional: false, changed: true })).toBe(
      i.idle
    );
    expect(
      nextInterval(i.active, { transitional: false, changed: false })
    ).toBe(i.idle);
    expect(nextInterval(i.idle, { transitional: false, changed: false })).toBe(
      2 * i.idle
    );
    expect(nextInterval(40000, { transitional: false, changed: false })).toBe(
      i.max
    );
  });
});

describe('DeploymentListModel', () => {
  it('loads the user once and the list on every poll', async () => {
    const state = { list: [deployment('iris')] };
    const server = serverWith(state);
    const model = listModel(server);
    let changes = 0;
    model.changed.connect(() => changes++);
    expect(model.state).toBe('loading');
    await model.load();
    await model.load();
    expect(model.state).toBe('ready');
    expect(model.me?.name).toBe('alice');
    expect(model.all.map(d => d.id)).toEqual(['iris']);
    expect(server.to('me').length).toBe(1);
    expect(server.to('deployments').length).toBe(2);
    expect(changes).toBe(1); // the second poll brought nothing new
  });

  it('backs off while nothing changes and speeds up while deploying', async () => {
    const state = { list: [deployment('iris', 'Deploying')] };
    const model = listModel(serverWith(state));
    await model.load();
    expect(model.interval).toBe(DEFAULT_INTERVALS.active);
    state.list = [deployment('iris', 'Deployed')];
    await model.load();
    expect(model.interval).toBe(DEFAULT_INTERVALS.idle);
    await model.load();
    expect(model.interval).toBe(2 * DEFAULT_INTERVALS.idle);
    await model.load();
    expect(model.interval).toBe(4 * DEFAULT_INTERVALS.idle);
  });

  it('announces Deployed and Failed for the user’s own deployments only', async () => {
    const state = {
      list: [
        deployment('mine', 'Deploying'),
        deployment('theirs', 'Deploying', { user: 'bob' }),
        deployment('watched', 'Deploying', { user: 'bob' }),
        deployment('broken', 'Deploying')
      ]
    };
    const model = listModel(serverWith(state));
    const seen: IPhaseChange[] = [];
    model.phaseChanged.connect((_, change) => seen.push(change));
    model.watch('watched');
    await model.load();
    expect(seen).toEqual([]); // the first sight of a phase is no change
    state.list = [
      deployment('mine', 'Deployed'),
      deployment('theirs', 'Deployed', { user: 'bob' }),
      deployment('watched', 'Deployed', { user: 'bob' }),
      deployment('broken', 'Failed')
    ];
    await model.load();
    await model.load();
    expect(
      seen.map(
        c => `${c.deployment.id}:${c.previous}->${c.deployment.status.phase}`
      )
    ).toEqual([
      'mine:Deploying->Deployed',
      'watched:Deploying->Deployed',
      'broken:Deploying->Failed'
    ]);
  });

  it('filters by name and by "Deployed by me" without asking the server', async () => {
    const state = {
      list: [
        deployment('iris-a1b2c', 'Deployed', { name: 'Iris classifier' }),
        deployment('wine-x9y8z', 'Deployed', { name: 'Wine', user: 'bob' })
      ]
    };
    const server = serverWith(state);
    const model = listModel(server);
    await model.load();
    model.search = 'IRIS';
    expect(model.visible.map(d => d.id)).toEqual(['iris-a1b2c']);
    model.search = 'x9y8';
    expect(model.visible.map(d => d.id)).toEqual(['wine-x9y8z']);
    model.search = '';
    model.mineOnly = true;
    expect(model.visible.map(d => d.id)).toEqual(['iris-a1b2c']);
    expect(server.to('deployments').length).toBe(1);
  });

  it('says the server extension is missing when its API is not there', async () => {
    const server = new FakeServer(); // every path answers Jupyter's 404
    const model = listModel(server);
    await expect(model.load()).rejects.toThrow();
    expect(model.state).toBe('server-missing');
  });

  it('keeps the list and shows the error when a later poll fails', async () => {
    const state = { list: [deployment('iris')] };
    const server = serverWith(state);
    const model = listModel(server);
    await model.load();
    server.on('GET', 'deployments', apiError(500, 'the engine is not running'));
    await expect(model.load()).rejects.toThrow('the engine is not running');
    expect(model.state).toBe('error');
    expect(model.error).toBe('the engine is not running');
    expect(model.all.length).toBe(1);
  });

  it('takes fresher copies from detail views and forgets deleted ones', async () => {
    const state = { list: [deployment('iris', 'Deployed')] };
    const model = listModel(serverWith(state));
    await model.load();
    const seen: IPhaseChange[] = [];
    model.phaseChanged.connect((_, change) => seen.push(change));
    const failed = {
      ...deployment('iris', 'Failed'),
      status: { ...deployment('iris', 'Failed').status, history: [] }
    };
    model.observe(failed);
    expect(model.all[0].status.phase).toBe('Failed');
    expect(model.all[0].status.history).toBeUndefined();
    expect(seen.length).toBe(1);
    model.forget('iris');
    expect(model.all).toEqual([]);
  });
});

describe('DeploymentModel', () => {
  it('loads one deployment and tells the list about it', async () => {
    const server = new FakeServer().on(
      'GET',
      'deployments/iris',
      deployment('iris', 'Deploying')
    );
    const api = new PrimeHubAPI(server.settings());
    const list = listModel(serverWith({ list: [] }));
    const model = new DeploymentModel({
      api,
      id: 'iris',
      list,
      autoStart: false
    });
    live.push(model);
    await model.load();
    expect(model.deployment?.status.phase).toBe('Deploying');
    expect(list.all.map(d => d.id)).toEqual(['iris']);
  });

  it('knows when the deployment is gone', async () => {
    const server = new FakeServer().on(
      'GET',
      'deployments/iris',
      apiError(404, "deployment 'iris' not found", 'NotFound')
    );
    const model = new DeploymentModel({
      api: new PrimeHubAPI(server.settings()),
      id: 'iris',
      autoStart: false
    });
    live.push(model);
    await model.load();
    expect(model.gone).toBe(true);
    expect(model.error).toBe("deployment 'iris' not found");
    await model.load();
    expect(server.requests.length).toBe(1); // no more polling of a deleted deployment
  });
});

describe('DeploymentListModel with no deployments', () => {
  it('leaves the loading state even when the list is empty', async () => {
    const model = listModel(serverWith({ list: [] }));
    let changes = 0;
    model.changed.connect(() => changes++);
    await model.load();
    expect(model.state).toBe('ready');
    expect(changes).toBe(1);
  });
});
