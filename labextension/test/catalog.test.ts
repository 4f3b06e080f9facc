import { afterEach, describe, expect, it } from 'vitest';

import { IDeployment, PrimeHubAPI } from '../src/api';
import { CatalogEntries } from '../src/catalogEntries';
import { DeploymentListModel } from '../src/model';
import { deployment, FakeServer } from './helpers';

const live: { dispose(): void }[] = [];
afterEach(() => {
  live.splice(0).forEach(m => m.dispose());
});

function setUp(
  state: { list: IDeployment[]; down?: boolean },
  selected: string | null = null
) {
  const server = new FakeServer()
    .on('GET', 'me', { name: 'alice', isAdmin: false, groups: [] })
    .on('GET', 'deployments', () =>
      state.down
        ? Response.json({ message: 'the cluster is down' }, { status: 503 })
        : Response.json({ deployments: state.list })
    );
  const list = new DeploymentListModel({
    api: new PrimeHubAPI(server.settings()),
    autoStart: false,
    events: false
  });
  const entries = new CatalogEntries(list, selected);
  live.push(entries, list);
  return { list, entries };
}

describe('CatalogEntries', () => {
  it('lists what the deployment list loads, live: new and deleted ones show', async () => {
    const state = { list: [deployment('iris')] };
    const { list, entries } = setUp(state);
    let changes = 0;
    entries.changed.connect(() => changes++);
    expect(entries.deployments).toBeNull(); // loading
    await list.load();
    expect(entries.deployments?.map(d => d.id)).toEqual(['iris']);
    expect(entries.selected).toBe('iris'); // the newest, until a pick

    // A deployment created elsewhere appears with the next load (poll or change event).
    state.list = [deployment('credit'), deployment('iris')];
    await list.load();
    expect(entries.deployments?.map(d => d.id)).toEqual(['credit', 'iris']);
    entries.select('credit');
    expect(entries.selected).toBe('credit');

    // Deleted: it leaves the list, and its document with it.
    state.list = [deployment('iris')];
    await list.load();
    expect(entries.deployments?.map(d => d.id)).toEqual(['iris']);
    expect(entries.selected).toBe('iris');
    state.list = [];
    await list.load();
    expect(entries.deployments).toEqual([]);
    expect(entries.selected).toBeNull();
    expect(changes).toBeGreaterThanOrEqual(4);
  });

  it('keeps a restored selection while the list loads, and reports list errors', async () => {
    const state = {
      list: [deployment('iris'), deployment('credit')],
      down: false
    };
    const { list, entries } = setUp(state, 'credit');
    expect(entries.selected).toBe('credit');
    await list.load();
    expect(entries.selected).toBe('credit');
    expect(entries.error).toBe('');
    state.down = true;
    await expect(list.load()).rejects.toThrow();
    expect(entries.error).toContain('the cluster is down');
    expect(entries.deployments?.map(d => d.id)).toEqual(['iris', 'credit']); // kept
  });
});
