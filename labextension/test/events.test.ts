import { describe, expect, it } from 'vitest';

import { parseEvents } from '../src/events';

describe('change stream parsing', () => {
  it('splits complete events, skips heartbeats and keeps the unfinished rest', () => {
    const text =
      'retry: 3000\nevent: ready\ndata: {"type": "ready"}\n\n' +
      ': heartbeat\n\n' +
      'id: 1\r\nevent: deployment\r\ndata: {"type": "deployment", "action": "created", "id": "a"}\r\n\r\n' +
      'id: 2\nevent: groups\ndata: {"type": "gro';
    const { events, rest } = parseEvents(text);
    expect(events).toEqual([
      { type: 'ready' },
      { type: 'deployment', action: 'created', id: 'a' }
    ]);
    expect(rest).toBe('id: 2\nevent: groups\ndata: {"type": "gro');
    const more = parseEvents(rest + 'ups", "groups": ["g"]}\n\n');
    expect(more.events).toEqual([{ type: 'groups', groups: ['g'] }]);
    expect(more.rest).toBe('');
  });

  it('ignores data that is not an event of ours', () => {
    expect(parseEvents('data: not json\n\ndata: [1]\n\n').events).toEqual([]);
  });
});
