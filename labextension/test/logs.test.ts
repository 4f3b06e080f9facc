import { describe, expect, it } from 'vitest';

import { PrimeHubAPI } from '../src/api';
import { LineSplitter, LogBuffer, LogFollower, readLines } from '../src/logs';
import { FakeServer, openStream } from './helpers';

describe('LineSplitter', () => {
  it('holds a partial line until its end arrives', () => {
    const lines = new LineSplitter();
    expect(lines.push('one\ntw')).toEqual(['one']);
    expect(lines.push('o\r\nthree')).toEqual(['two']);
    expect(lines.push('')).toEqual([]);
    expect(lines.flush()).toEqual(['three']);
    expect(lines.flush()).toEqual([]);
  });
});

describe('LogBuffer', () => {
  it('keeps only the newest lines', () => {
    const buffer = new LogBuffer(3);
    buffer.append(['1', '2']);
    buffer.append(['3', '4', '5']);
    expect(buffer.lines).toEqual(['3', '4', '5']);
    expect(buffer.dropped).toBe(2);
    buffer.replace(['a']);
    expect(buffer.lines).toEqual(['a']);
    expect(buffer.dropped).toBe(0);
  });

  it('keeps 2000 lines by default', () => {
    const buffer = new LogBuffer();
    buffer.append(Array.from({ length: 2500 }, (_, i) => `line ${i}`));
    expect(buffer.lines.length).toBe(2000);
    expect(buffer.lines[0]).toBe('line 500');
  });
});

describe('readLines', () => {
  it('splits a stream into lines, even a character cut between chunks', async () => {
    const bytes = new TextEncoder().encode('héllo\nwörld\nlast');
    // Cut inside the two-byte 'é'.
    const chunks = [bytes.slice(0, 2), bytes.slice(2, 9), bytes.slice(9)];
    const controller = new AbortController();
    const response = new Response(openStream(chunks, controller.signal, true));
    const seen: string[] = [];
    await readLines(response, lines => seen.push(...lines));
    expect(seen).toEqual(['héllo', 'wörld', 'last']);
  });

  it('resolves quietly when aborted', async () => {
    const controller = new AbortController();
    const response = new Response(openStream(['a\n'], controller.signal));
    const seen: string[] = [];
    const done = readLines(
      response,
      lines => seen.push(...lines),
      controller.signal
    );
    await new Promise(resolve => setTimeout(resolve, 5));
    controller.abort();
    await expect(done).resolves.toBeUndefined();
    expect(seen).toEqual(['a']);
  });
});

describe('LogFollower', () => {
  it('streams logs?follow=1 with the tail, and aborts the request on stop()', async () => {
    const server = new FakeServer().on(
      'GET',
      'deployments/iris/logs',
      request =>
        new Response(
          openStream(['old 1\nold 2\n', 'new 1\n'], request.signal),
          {
            headers: { 'Content-Type': 'text/plain' }
          }
        )
    );
    const seen: string[] = [];
    const follower = new LogFollower(
      new PrimeHubAPI(server.settings()),
      'iris',
      'iris-1-0',
      lines => seen.push(...lines)
    );
    const done = follower.start();
    await expect.poll(() => seen.length).toBe(3);
    expect(follower.active).toBe(true);
    const request = server.requests[0];
    expect(request.url.searchParams.get('follow')).toBe('1');
    expect(request.url.searchParams.get('tail')).toBe('2000');
    expect(request.url.searchParams.get('replica')).toBe('iris-1-0');
    expect(request.signal.aborted).toBe(false);

    follower.stop();
    await expect(done).resolves.toBeUndefined();
    expect(request.signal.aborted).toBe(true);
    expect(follower.active).toBe(false);
    expect(seen).toEqual(['old 1', 'old 2', 'new 1']);
    follower.stop(); // twice is fine
  });

  it('rejects with the API message when the replica does not exist', async () => {
    const server = new FakeServer().on('GET', 'deployments/iris/logs', () =>
      Response.json(
        { message: "deployment 'iris' has no replica 'x'", reason: 'NotFound' },
        { status: 404 }
      )
    );
    const follower = new LogFollower(
      new PrimeHubAPI(server.settings()),
      'iris',
      'x',
      () => undefined
    );
    await expect(follower.start()).rejects.toThrow(
      "deployment 'iris' has no replica 'x'"
    );
    expect(follower.active).toBe(false);
  });

  it('ends when the server ends the stream', async () => {
    const server = new FakeServer().on(
      'GET',
      'deployments/iris/logs',
      request => new Response(openStream(['only\n'], request.signal, true))
    );
    const seen: string[] = [];
    const follower = new LogFollower(
      new PrimeHubAPI(server.settings()),
      'iris',
      undefined,
      lines => seen.push(...lines)
    );
    await follower.start();
    expect(seen).toEqual(['only']);
    expect(server.requests[0].url.searchParams.has('replica')).toBe(false);
  });
});
